"""Autoencoders over a user's (or an item's) row of the interaction matrix: AutoRec (Sedhain et al.,
WWW 2015), CDAE (Wu et al., WSDM 2016), Mult-DAE and Mult-VAE (Liang et al., WWW 2018).

They read the training matrix at scoring time, so the run layer hands it to them before training
(:class:`MatrixInput`: ``set_matrix``; the matrix's ``values`` are the run's ``data.values``: binary,
weights or ratings) and they keep it as buffers saved with the weights. Their losses are objectives
of their own (:mod:`recfunnel.train.ae_objectives`), apart from the architectures here.

Every one is Factorised: its output layer is linear, so a score is <user vector, item vector> +
item bias, with the last hidden layer as the user vector (AutoRec, item-based: the user's decoder
row against the item's code). The user-row models (CDAE, Mult-DAE, Mult-VAE) also encode an ad-hoc
list of items (:meth:`RowAutoencoder.user_vectors_from_recent`), so they serve as retrievers for
visitors unseen in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recfunnel.models.base import Model, ModelConfig

__all__ = [
    "CDAE",
    "AutoRec",
    "AutoRecConfig",
    "CDAEConfig",
    "MatrixInput",
    "MultDAE",
    "MultDAEConfig",
    "MultVAE",
    "MultVAEConfig",
    "RowAutoencoder",
    "SparseRows",
]


@runtime_checkable
class MatrixInput(Protocol):
    """A trainable model that reads the user x item training matrix (the autoencoders); the run
    layer sets it before training, with the values the run config asks for."""

    def set_matrix(self, matrix: sp.csr_matrix) -> None:
        """The user x item matrix [n_users, n_items] of the train part."""
        ...


def ragged(indptr: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in the CSR arrays of the entries of `rows`, concatenated, and each row's count."""
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    offsets = torch.cumsum(counts, 0) - counts
    at = torch.arange(int(counts.sum()), device=indptr.device) - torch.repeat_interleave(offsets, counts)
    return torch.repeat_interleave(starts, counts) + at, counts


class SparseRows(nn.Module):
    """A sparse matrix kept as CSR buffers (saved and loaded with the model's weights)."""

    def __init__(self, n_rows: int, n_cols: int) -> None:
        super().__init__()
        self.n_cols = n_cols
        self.register_buffer("indptr", torch.zeros(n_rows + 1, dtype=torch.long))
        self.register_buffer("indices", torch.zeros(0, dtype=torch.long))
        self.register_buffer("values", torch.zeros(0))

    def set(self, m: sp.csr_matrix) -> None:
        m = sp.csr_matrix(m, dtype=np.float32)
        m.sort_indices()
        if m.shape != (len(self.indptr) - 1, self.n_cols):
            raise ValueError(f"matrix of shape {m.shape}, expected {(len(self.indptr) - 1, self.n_cols)}")
        device = self.indptr.device  # the buffers stay where the model is
        self.indptr = torch.from_numpy(m.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(m.indices.astype(np.int64)).to(device)
        self.values = torch.from_numpy(m.data.copy()).to(device)

    def bag(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """EmbeddingBag input of `rows` [B]: (columns, offsets [B], values)."""
        at, counts = ragged(self.indptr, rows.to(self.indptr.device))
        return self.indices[at], torch.cumsum(counts, 0) - counts, self.values[at]

    def dense(self, rows: torch.Tensor) -> torch.Tensor:
        """[B, n_cols]: the rows written out."""
        device = self.indptr.device
        at, counts = ragged(self.indptr, rows.to(device))
        out = torch.zeros(len(rows), self.n_cols, device=device)
        row = torch.repeat_interleave(torch.arange(len(rows), device=device), counts)
        out[row, self.indices[at]] = self.values[at]
        return out


def recent_bag(
    indptr: torch.Tensor, items: torch.Tensor, values: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EmbeddingBag input of ad-hoc item lists (indptr [B + 1], items): each distinct item of a
    row once, with its value (default 1) summed over repeats."""
    indptr = torch.as_tensor(indptr, dtype=torch.int64).cpu()  # assembled with scipy on the CPU
    items = torch.as_tensor(items, dtype=torch.int64).cpu()
    n = len(indptr) - 1
    rows = torch.repeat_interleave(torch.arange(n), indptr.diff()).numpy()
    vals = np.ones(len(items), np.float32) if values is None else np.asarray(values, np.float32)
    m = sp.csr_matrix((vals, (rows, items.numpy())), shape=(n, int(items.max()) + 1 if len(items) else 1))
    m.sum_duplicates()
    m.sort_indices()
    counts = torch.from_numpy(np.diff(m.indptr).astype(np.int64))
    return (
        torch.from_numpy(m.indices.astype(np.int64)),
        torch.cumsum(counts, 0) - counts,
        torch.from_numpy(m.data),
    )


def _bag(n: int, dim: int) -> nn.EmbeddingBag:
    """The first layer over a sparse row: W^T x as a weighted sum of W's rows (no dense input)."""
    return nn.EmbeddingBag(n, dim, mode="sum")


def _weights(module: nn.Module) -> list[torch.Tensor]:
    """The weight matrices of a module (what an L2 penalty covers; biases are not)."""
    return [p for name, p in module.named_parameters() if p.dim() == 2]


class _Factorised(Model):
    """Scores = user_vectors @ item_vectors^T + item_bias_all (the shared `score`)."""

    trainable = True

    def l2_weights(self) -> torch.Tensor:
        """Sum of squared entries of the weight matrices (biases excluded)."""
        return sum(w.pow(2).sum() for w in _weights(self))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(users)
        s = (u.unsqueeze(1) * self.item_vectors()[items]).sum(-1)
        bias = self.item_bias_all()
        return s + bias[items] if isinstance(bias, torch.Tensor) else s


# --------------------------------------------------------------------------------------------------
# AutoRec


class AutoRecConfig(ModelConfig):
    hidden: int = Field(500, ge=1, description="hidden units k (Sedhain et al.: 500)")


class AutoRec(_Factorised):
    """I-AutoRec (Sedhain et al. 2015): item columns reconstructed through one sigmoid hidden layer.

    Each item's column of the matrix r^(i) (one entry per user) goes through (eq. 1)

        h(r; theta) = f(W g(V r + mu) + b),   g = sigmoid, f = identity,

    and R_ui = h(r^(i))_u. As a factorisation: item vector g(V r^(i) + mu) (plus a constant 1),
    user vector (W_u, b_u). The objective ``autorec`` (:mod:`recfunnel.train.ae_objectives`) counts
    every entry of a column (the implicit-feedback variant, binary values: unobserved = 0) or only the
    observed ones (``entries = "observed"`` with ``data.values = "rating"``: the paper's explicit
    AutoRec)."""

    family = "autorec"
    Config = AutoRecConfig
    objective = "autorec"

    def __init__(self, config: AutoRecConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.columns = SparseRows(n_items, n_users)  # item x user
        self.encoder = _bag(n_users, config.hidden)  # V
        self.encoder_bias = nn.Parameter(torch.zeros(config.hidden))  # mu
        self.decoder = nn.Linear(config.hidden, n_users)  # W, b
        for w in (self.encoder.weight, self.decoder.weight):
            nn.init.xavier_uniform_(w)
        nn.init.zeros_(self.decoder.bias)

    def set_matrix(self, matrix: sp.csr_matrix) -> None:
        self.columns.set(sp.csr_matrix(matrix).T.tocsr())

    def codes(self, items: torch.Tensor) -> torch.Tensor:
        """g(V r^(i) + mu) of items [B] -> [B, hidden]."""
        cols, offsets, values = self.columns.bag(items)
        return torch.sigmoid(self.encoder(cols, offsets, per_sample_weights=values) + self.encoder_bias)

    def reconstruct(self, items: torch.Tensor) -> tuple[torch.Tensor, None]:
        """h(r^(i)) of items [B] -> [B, n_users] (no KL term)."""
        return self.decoder(self.codes(items)), None

    def targets(self, items: torch.Tensor) -> torch.Tensor:
        return self.columns.dense(items)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.decoder.weight[users], self.decoder.bias[users].unsqueeze(1)], dim=1)

    def item_vectors(self) -> torch.Tensor:
        device = self.decoder.weight.device
        codes = self.codes(torch.arange(self.n_items, device=device))
        return torch.cat([codes, torch.ones(self.n_items, 1, device=device)], dim=1)


# --------------------------------------------------------------------------------------------------
# user-row autoencoders


class RowAutoencoder(_Factorised):
    """An autoencoder of the user's row x_u: an encoder to the last hidden layer h_u (the user
    vector) and a linear output layer (item vectors and biases) giving the logits."""

    def __init__(self, config: ModelConfig, n_users: int, n_items: int, hidden: int) -> None:
        super().__init__(config, n_users, n_items)
        self.rows = SparseRows(n_users, n_items)
        self.output = nn.Linear(hidden, n_items)
        self.register_buffer("binary_values", torch.tensor(True))
        self.folded: SparseRows | None = None  # rows read when scoring, when set (``fold_in``)

    def set_matrix(self, matrix: sp.csr_matrix) -> None:
        self.rows.set(matrix)
        binary = bool(np.all(sp.csr_matrix(matrix).data == 1))
        self.binary_values = torch.tensor(binary, device=self.binary_values.device)

    def fold_in(self, matrix: sp.csr_matrix | None) -> None:
        """Score from `matrix` [n_users, n_items] as the users' rows (the input of the encoder)
        instead of the training matrix; None: back to the training matrix. The test part of a
        leave-one-out split reads the train + valid items this way (Liang et al.'s fold-in: the
        user vector is a function of the user's row, so it takes every item known before the one
        predicted, as a sequence model's history does). Training (``reconstruct``, ``targets``)
        always reads the training matrix; the folded rows are not saved with the weights."""
        rows = None
        if matrix is not None:
            rows = SparseRows(self.n_users, self.n_items).to(self.output.weight.device)
            rows.set(matrix)
        object.__setattr__(self, "folded", rows)  # a plain attribute: not a submodule, not saved

    def encode(
        self, cols: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor, users: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(h [B, hidden], KL term or None) of sparse rows; `users` -1: no stored user."""
        raise NotImplementedError

    def reconstruct(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits [B, n_items], KL term or None) of the users' stored rows, with the model's noise
        when training."""
        h, kl = self.encode(*self.rows.bag(users), users)
        return self.output(h), kl

    def targets(self, users: torch.Tensor) -> torch.Tensor:
        return self.rows.dense(users)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.rows if self.folded is None or self.training else self.folded
        return self.encode(*rows.bag(users), users)[0]

    def item_vectors(self) -> torch.Tensor:
        return self.output.weight

    def item_bias_all(self) -> torch.Tensor:
        return self.output.bias

    @torch.no_grad()
    def user_vectors_from_recent(
        self,
        users: torch.Tensor,
        indptr: torch.Tensor,
        items: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The given items as the user's row (:class:`~recfunnel.models.base.RecentEncoder`): value
        1 each unless `values` gives them; repeats are summed, or count once for a model fitted on
        binary values. `users` (-1: anonymous) matter only to CDAE's user node."""
        device = self.output.weight.device
        cols, offsets, vals = (t.to(device) for t in recent_bag(indptr, items, values))
        if bool(self.binary_values):
            vals = torch.ones_like(vals)
        return self.encode(cols, offsets, vals, torch.as_tensor(users, dtype=torch.int64, device=device))[0]


class CDAEConfig(ModelConfig):
    hidden: int = Field(50, ge=1, description="hidden units K (Wu et al.: 50)")
    corruption: float = Field(
        0.2, ge=0, lt=1, description="q: each input entry dropped with probability q, the rest scaled 1/(1-q)"
    )


class CDAE(RowAutoencoder):
    """Collaborative Denoising Auto-Encoder (Wu et al. 2016): a corrupted user row plus a user node.

    The corrupted row y~_u and a user node V_u feed one sigmoid hidden layer, an identity output gives
    the logits (eqs. 3-4):

        z_u = sigmoid(W^T y~_u + V_u + b),   y^_ui = W'_i^T z_u + b'_i

    trained with the logistic loss (objective ``cdae``). Corruption: dropout on the input entries
    with the unbiased 1/(1-q) scaling; none at scoring time."""

    family = "cdae"
    Config = CDAEConfig
    objective = "cdae"

    def __init__(self, config: CDAEConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items, config.hidden)
        self.encoder = _bag(n_items, config.hidden)  # W
        self.user_node = nn.Embedding(n_users, config.hidden)  # V
        self.encoder_bias = nn.Parameter(torch.zeros(config.hidden))
        for w in (self.encoder.weight, self.output.weight):
            nn.init.xavier_uniform_(w)
        nn.init.zeros_(self.user_node.weight)
        nn.init.zeros_(self.output.bias)

    def encode(self, cols, offsets, values, users):
        values = F.dropout(values, self.config.corruption, self.training)
        node = self.user_node(users.clamp(min=0)) * (users >= 0).unsqueeze(1)
        z = self.encoder(cols, offsets, per_sample_weights=values) + node + self.encoder_bias
        return torch.sigmoid(z), None


class MultDAEConfig(ModelConfig):
    dims: tuple[int, ...] = Field(
        (600, 200),
        min_length=1,
        description="encoder sizes; the decoder mirrors them (Liang et al.: 600, 200)",
    )
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on the L2-normalised input row")


class _Tower(nn.Module):
    """Linear layers with tanh between them (and after the last, unless `last_linear`)."""

    def __init__(self, sizes: Sequence[int], last_linear: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.last_linear = last_linear
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for n, layer in enumerate(self.layers):
            h = layer(h)
            if not (self.last_linear and n == len(self.layers) - 1):
                h = torch.tanh(h)
        return h


class _MultBase(RowAutoencoder):
    """The input side of Liang et al.'s models: the row L2-normalised, then dropout, then the first
    (sparse) layer with tanh."""

    def __init__(self, config: MultDAEConfig, n_users: int, n_items: int, first_out: int) -> None:
        super().__init__(config, n_users, n_items, config.dims[0])
        self.input_layer = _bag(n_items, first_out)
        self.input_bias = nn.Parameter(torch.empty(first_out))
        nn.init.xavier_uniform_(self.input_layer.weight)
        nn.init.normal_(self.input_bias, std=0.001)
        nn.init.xavier_uniform_(self.output.weight)
        nn.init.normal_(self.output.bias, std=0.001)

    def first_layer(self, cols, offsets, values) -> torch.Tensor:
        device = cols.device
        ends = torch.tensor([len(cols)], device=device)
        counts = torch.diff(offsets, append=ends)
        row = torch.repeat_interleave(torch.arange(len(offsets), device=device), counts)
        norm = torch.zeros(len(offsets), device=device).index_add_(0, row, values * values)
        norm = norm.sqrt().clamp(min=1e-12)
        values = F.dropout(values / norm[row], self.config.dropout, self.training)
        return self.input_layer(cols, offsets, per_sample_weights=values) + self.input_bias


class MultDAE(_MultBase):
    """Mult-DAE (Liang et al. 2018, sec. 2.3): a denoising autoencoder of the user's row, softmax output.

    [I -> 600 -> 200 -> 600 -> I] with tanh, a softmax over items and the multinomial log-likelihood
    (objective ``multinomial``, no KL term)."""

    family = "mult-dae"
    Config = MultDAEConfig
    objective = "multinomial"

    def __init__(self, config: MultDAEConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items, config.dims[0])
        dims = list(config.dims)
        self.encoder = _Tower(dims)
        self.decoder = _Tower(dims[::-1])

    def encode(self, cols, offsets, values, users):
        h = torch.tanh(self.first_layer(cols, offsets, values))
        return self.decoder(self.encoder(h)), None


class MultVAEConfig(MultDAEConfig):
    pass


class MultVAE(_MultBase):
    """Mult-VAE (Liang et al. 2018, sec. 2.2): a variational autoencoder of the user's row, softmax output.

    The encoder [I -> 600 -> 2 x 200] gives mu and log sigma^2 of q(z | x_u); z = mu + sigma * eps
    when training (mu when scoring) goes through the decoder [200 -> 600 -> I] to a softmax over
    items. The objective ``multinomial`` adds beta times the KL term returned here, beta annealed
    (eq. 5 and sec. 2.2.2)."""

    family = "mult-vae"
    Config = MultVAEConfig
    objective = "multinomial"

    def __init__(self, config: MultVAEConfig, n_users: int, n_items: int) -> None:
        dims = list(config.dims)
        first = dims[0] if len(dims) > 1 else 2 * dims[0]
        super().__init__(config, n_users, n_items, first)
        self.encoder = _Tower(dims[:-1] + [2 * dims[-1]], last_linear=True) if len(dims) > 1 else None
        self.decoder = _Tower(dims[::-1])
        self.latent = dims[-1]

    def encode(self, cols, offsets, values, users):
        h = self.first_layer(cols, offsets, values)
        h = self.encoder(torch.tanh(h)) if self.encoder is not None else h
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = (0.5 * (-logvar + logvar.exp() + mu * mu - 1).sum(1)).mean()
        return self.decoder(z), kl
