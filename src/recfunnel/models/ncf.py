"""Neural Collaborative Filtering (He et al., WWW 2017): GMF, MLP and NeuMF.

The paper's architecture: MLP tower 64-32-16-8 (the embedding size is half the first layer, since
user and item embeddings are concatenated), BCE on 4 negatives per positive; NeuMF may start from
trained GMF and MLP with alpha = 0.5 (eq. 13). Defaults are the configuration `ncf-ml100k` chose
on the valid part: 32 predictive factors (among 8 / 16 / 32), ``sparse="auto"`` tables (dense and
stepped by fused Adam at MovieLens sizes), and the train settings in ``train_defaults`` (larger
batches with a larger learning rate than the paper's 256 / 1e-3: the same valid NDCG@10 at several
times the samples per second).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recfunnel.models.base import SPARSE_HELP, Model, ModelConfig, Sparse, sparse_table

#: the train settings `ncf-ml100k` chose on the valid part for GMF, MLP and NeuMF (what `recfunnel
#: train --model neumf` uses unless told otherwise): BCE with the paper's 4 negatives, large batches
#: with a larger learning rate and a little weight decay
NCF_TRAIN: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 4096,
    "lr": 4e-3,
    "optimizer": "adam",
    "weight_decay": 1e-6,
    "patience": 5,
}
#: MLP alone: the same without weight decay (its valid NDCG@10 was higher without)
MLP_TRAIN: dict[str, Any] = dict(NCF_TRAIN, weight_decay=0.0)


def _embedding(n: int, d: int, sparse: Sparse, std: float = 0.01) -> nn.Embedding:
    e = nn.Embedding(n, d, sparse=sparse_table(sparse, n, d))
    nn.init.normal_(e.weight, std=std)
    return e


def _lookup(table: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """table(idx); a dense table through ``index_select`` (its backward is one ``index_add_``,
    cheaper than the embedding's dense backward), a sparse one through the embedding (row
    gradients)."""
    if table.sparse:
        return table(idx)
    return table.weight.index_select(0, idx.reshape(-1)).view(*idx.shape, table.embedding_dim)


def _tower(layers: tuple[int, ...], dropout: float) -> nn.Sequential:
    """ReLU tower. Glorot weights and zero biases, as the paper's Keras code: PyTorch's default
    bias init (+-1/sqrt(fan_in)) swamps the 0.01-std embeddings and leaves most ReLUs dead."""
    mods: list[nn.Module] = []
    for a, b in zip(layers[:-1], layers[1:], strict=True):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.ReLU()]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
    return nn.Sequential(*mods)


class GMFConfig(ModelConfig):
    factors: int = Field(32, ge=1, description="predictive factors (embedding dimension)")
    sparse: Sparse = Field("auto", description=SPARSE_HELP)


class GMF(Model):
    """Generalised MF (eq. 9): y = sigma(h^T (p_u * q_i)). Factorised with user vector h * p_u."""

    family = "gmf"
    Config = GMFConfig
    fused_optimizer: ClassVar[bool] = True
    train_threads: ClassVar[int] = 1
    train_defaults: ClassVar[dict[str, Any]] = NCF_TRAIN

    def __init__(self, config: GMFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.user_emb = _embedding(n_users, config.factors, config.sparse)
        self.item_emb = _embedding(n_items, config.factors, config.sparse)
        self.out = nn.Linear(config.factors, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = _lookup(self.user_emb, users).unsqueeze(1) * _lookup(self.item_emb, items)
        return self.out(x).squeeze(-1)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users) * self.out.weight[0]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight

    def item_bias_all(self) -> torch.Tensor:
        return self.out.bias


class MLPConfig(ModelConfig):
    layers: tuple[int, ...] = Field(
        (64, 32, 16, 8), description="tower sizes; embeddings are layers[0]/2 each"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")
    sparse: Sparse = Field("auto", description=SPARSE_HELP)


class MLP(Model):
    """NCF's MLP path (eq. 10): a ReLU tower over the concatenated user and item embeddings."""

    family = "mlp"
    Config = MLPConfig
    fused_optimizer: ClassVar[bool] = True
    train_threads: ClassVar[int] = 1
    train_defaults: ClassVar[dict[str, Any]] = MLP_TRAIN

    def __init__(self, config: MLPConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        if config.layers[0] % 2:
            raise ValueError(f"layers[0] must be even (two embeddings concatenated), got {config.layers}")
        d = config.layers[0] // 2
        self.user_emb = _embedding(n_users, d, config.sparse)
        self.item_emb = _embedding(n_items, d, config.sparse)
        self.tower = _tower(config.layers, config.dropout)
        self.out = nn.Linear(config.layers[-1], 1)

    def hidden(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The tower over [p_u, q_i]: its first layer as W_u p_u + W_i q_i + b (the same layer, no
        concatenated copy; the user term once per user, not once per candidate)."""
        d = self.user_emb.embedding_dim
        if not len(self.tower):  # layers of one size: the concatenated embeddings themselves
            i = _lookup(self.item_emb, items)
            return torch.cat([_lookup(self.user_emb, users).unsqueeze(1).expand(-1, i.shape[1], -1), i], -1)
        first = self.tower[0]
        h = F.linear(_lookup(self.item_emb, items), first.weight[:, d:], first.bias)
        h = h + F.linear(_lookup(self.user_emb, users), first.weight[:, :d]).unsqueeze(1)
        for layer in self.tower[1:]:
            h = layer(h)
        return h

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(users, items)).squeeze(-1)


class NeuMFConfig(ModelConfig):
    factors: int = Field(32, ge=1, description="GMF predictive factors")
    layers: tuple[int, ...] = Field((64, 32, 16, 8), description="MLP tower sizes")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the MLP tower")
    sparse: Sparse = Field("auto", description=SPARSE_HELP)


class NeuMF(Model):
    """NeuMF (eq. 12): GMF and MLP paths with separate embeddings, concatenated into one output."""

    family = "neumf"
    Config = NeuMFConfig
    fused_optimizer: ClassVar[bool] = True
    train_threads: ClassVar[int] = 1
    train_defaults: ClassVar[dict[str, Any]] = NCF_TRAIN

    def __init__(self, config: NeuMFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.gmf = GMF(GMFConfig(factors=config.factors, sparse=config.sparse), n_users, n_items)
        self.mlp = MLP(
            MLPConfig(layers=config.layers, dropout=config.dropout, sparse=config.sparse), n_users, n_items
        )
        del self.gmf.out, self.mlp.out
        self.out = nn.Linear(config.factors + config.layers[-1], 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """out([g, m]) as h_g . g + h_m . m + b, without the concatenated copy."""
        f = self.config.factors
        g = _lookup(self.gmf.user_emb, users).unsqueeze(1) * _lookup(self.gmf.item_emb, items)
        m = self.mlp.hidden(users, items)
        w = self.out.weight
        return (F.linear(g, w[:, :f], self.out.bias) + F.linear(m, w[:, f:])).squeeze(-1)

    @torch.no_grad()
    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> None:
        """Initialise from trained GMF and MLP (eq. 13): embeddings and tower copied, output
        weights [alpha * h_gmf, (1 - alpha) * h_mlp]."""
        own = self.state_dict()
        for k, v in gmf.state_dict().items():
            if not k.startswith("out."):
                own[f"gmf.{k}"].copy_(v)
        for k, v in mlp.state_dict().items():
            if not k.startswith("out."):
                own[f"mlp.{k}"].copy_(v)
        self.out.weight.copy_(torch.cat([alpha * gmf.out.weight, (1 - alpha) * mlp.out.weight], dim=1))
        self.out.bias.copy_(alpha * gmf.out.bias + (1 - alpha) * mlp.out.bias)
