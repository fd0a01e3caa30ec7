"""Matrix factorisation trained with BPR (Rendle et al., UAI 2009)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recfunnel.models.base import SPARSE_HELP, Model, ModelConfig, Sparse, sparse_table


class MFConfig(ModelConfig):
    factors: int = Field(32, ge=1, description="embedding dimension")
    init_std: float = Field(0.01, gt=0, description="std of the normal initialisation")
    sparse: Sparse = Field("auto", description=SPARSE_HELP)


class MF(Model):
    """x_ui = <p_u, q_i> + b_i. Factorised: user vectors p_u, item vectors q_i (+ item bias)."""

    family = "mf"
    Config = MFConfig
    objective = "bpr"
    #: dense tables step with torch's fused Adam (recfunnel.train.trainer.build_optimizers)
    fused_optimizer: ClassVar[bool] = True
    #: torch threads while training: a second thread does not pay on these small tables, and on a
    #: shared machine it costs many times its gain (measured: `recfunnel.bench.ncf` module notes)
    train_threads: ClassVar[int] = 1
    #: the train settings and BPR parameters `ncf-ml100k` chose on the valid part (what
    #: `recfunnel train --model mf` uses unless told otherwise): large batches with a larger rate
    train_defaults: ClassVar[dict[str, Any]] = {
        "epochs": 60,
        "batch_size": 8192,
        "lr": 0.01,
        "optimizer": "adam",
        "patience": 0,
    }
    objective_defaults: ClassVar[dict[str, Any]] = {"reg": 3e-3}

    def __init__(self, config: MFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        item_sparse = sparse_table(config.sparse, n_items, config.factors)
        self.user_emb = nn.Embedding(
            n_users, config.factors, sparse=sparse_table(config.sparse, n_users, config.factors)
        )
        self.item_emb = nn.Embedding(n_items, config.factors, sparse=item_sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=item_sparse)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        nn.init.zeros_(self.item_bias.weight)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = self.user_emb(users).unsqueeze(1)
        return (u * self.item_emb(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def regulariser(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean squared L2 norm of the rows a batch touches (BPR's lambda * ||theta||^2)."""
        return self.user_emb(users).pow(2).sum(-1).mean() + self.item_emb(items).pow(2).sum(-1).mean()

    @torch.no_grad()
    def bpr_backward(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        negatives: torch.Tensor,
        reg: float = 0.0,
        pairs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The BPR loss of a batch and its gradients in closed form, without autograd: the same
        values as ``loss = -logsigmoid(x_ui - x_uj).mean() + reg * regulariser(users, [i, j])``
        followed by ``loss.backward()`` (gradients added to ``.grad``: dense tables get dense
        gradients, sparse ones uncoalesced row gradients). Returns the (detached) loss. `pairs`:
        ``stack([items, negatives], 1)`` when the caller has it.

        A third of the tensor passes of the autograd graph: q_i - q_j comes from one embedding-bag
        pass, and on dense tables the regulariser's gradient is one pass over the table (each row
        scaled by how often the batch looked it up)."""
        b = users.shape[0]
        user_t, item_t, bias_t = self.user_emb, self.item_emb, self.item_bias
        wu, wi, bias = user_t.weight, item_t.weight, self.item_bias.weight.view(-1)
        pair = torch.stack([items, negatives], 1) if pairs is None else pairs
        u = wu.index_select(0, users)
        diff = F.embedding_bag(pair, wi, mode="sum", per_sample_weights=_SIGNS.to(wi).expand(b, 2))
        z = torch.bmm(u.unsqueeze(1), diff.unsqueeze(2)).view(b)  # x_ui - x_uj, without the biases
        z.add_(bias.index_select(0, items)).sub_(bias.index_select(0, negatives))
        loss = -F.logsigmoid(z).mean()
        dz = torch.sigmoid(z.neg_()).mul_(-1.0 / b)  # d loss / d z (z is not needed any more)
        flat = pair.view(-1)
        if reg:  # BPR's lambda: 2 reg / B per lookup of a user row, 2 reg / (2B) per lookup of an item row
            sq_user = _add_decay(user_t, users, 2 * reg / b, u)
            sq_item = _add_decay(item_t, flat, reg / b)
            loss = loss + reg * (sq_user / b + sq_item / (2 * b))
        col = dz.unsqueeze(1)
        g_user = diff.mul_(col)  # d loss / d p_u
        g_item = u.mul_(col)  # d loss / d q_i;  d loss / d q_j = -g_item
        _add_rows(user_t, (users, g_user, 1.0))
        _add_rows(item_t, (items, g_item, 1.0), (negatives, g_item, -1.0))
        _add_rows(bias_t, (items, dz, 1.0), (negatives, dz, -1.0))
        return loss

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users)

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight

    def item_bias_all(self) -> torch.Tensor:
        return self.item_bias.weight.squeeze(-1)


_SIGNS = torch.tensor([1.0, -1.0])


def _sq(x: torch.Tensor) -> torch.Tensor:
    """Sum of squares, one BLAS pass (``x.pow(2).sum()`` allocates and is several times slower)."""
    flat = x.reshape(-1)
    return torch.dot(flat, flat)


def _accumulate(w: torch.Tensor, grad: torch.Tensor) -> None:
    w.grad = grad if w.grad is None else w.grad + grad


def _add_decay(
    table: nn.Embedding, idx: torch.Tensor, decay: float, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """grad += decay * weight[r] once per lookup r in `idx`; returns the sum over the lookups of
    ||weight[r]||^2 (the regulariser's value). `rows`: weight[idx] if already gathered. A dense
    table takes one pass over the table (each row scaled by its lookup count), a sparse one the
    rows looked up."""
    w = table.weight
    if table.sparse:
        rows = w.index_select(0, idx) if rows is None else rows
        if w.requires_grad:
            _accumulate(w, _row_grad(w, idx, rows * decay))
        return _sq(rows)
    scaled = w * torch.bincount(idx, minlength=w.shape[0]).to(w.dtype).mul_(decay).unsqueeze(1)
    if w.requires_grad:
        _accumulate(w, scaled)
    return torch.dot(scaled.view(-1), w.view(-1)) / decay


def _row_grad(w: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """An uncoalesced sparse row gradient for `w`: `values[k]` at row `idx[k]`."""
    return torch.sparse_coo_tensor(idx.unsqueeze(0), values, w.shape, check_invariants=False)


def _add_rows(table: nn.Embedding, *parts: tuple[torch.Tensor, torch.Tensor, float]) -> None:
    """grad[idx[k]] += alpha * values[k] for each (idx, values, alpha) in `parts` (duplicates summed):
    a dense or a sparse row gradient as the table's ``sparse`` says (what ``loss.backward()``
    through ``table(idx)`` gives). `values` may drop the table's trailing dimension of 1."""
    w = table.weight
    if not w.requires_grad:
        return
    if table.sparse:
        idx = torch.cat([i for i, _, _ in parts])
        values = torch.cat([v if a == 1.0 else v * a for _, v, a in parts]).view(idx.shape[0], *w.shape[1:])
        _accumulate(w, _row_grad(w, idx, values))
        return
    if w.grad is None or w.grad.is_sparse:
        _accumulate(w, torch.zeros_like(w))
    grad = w.grad.view(w.shape[0], -1) if parts[0][1].dim() > 1 else w.grad.view(-1)
    minus = None
    for idx, values, alpha in parts:
        # index_add_ with alpha != 1 takes a path 3x slower: subtracted parts are summed into a
        # table-sized buffer (smaller than the batch's rows) and subtracted once
        if alpha == 1.0:
            grad.index_add_(0, idx, values)
        elif alpha == -1.0:
            minus = torch.zeros_like(grad) if minus is None else minus
            minus.index_add_(0, idx, values)
        else:
            grad.index_add_(0, idx, values * alpha)
    if minus is not None:
        grad.sub_(minus)
