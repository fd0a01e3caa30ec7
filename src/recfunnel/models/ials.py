"""iALS: implicit alternating least squares (Hu, Koren & Volinsky, ICDM 2008), with the choices of
Rendle, Krichene, Zhang & Koren, "Revisiting the Performance of iALS on Item Recommendation
Benchmarks" (RecSys 2022): small normal initialisation and frequency-scaled regularisation.

Each observed (u, i) with value r_ui > 0 has preference p_ui = 1 and confidence

    c_ui = 1 + alpha * r_ui                       (confidence = "linear", HKV eq. 2)
    c_ui = 1 + alpha * log(1 + r_ui / eps)        (confidence = "log", HKV eq. 6)

every other pair p = 0, c = 1. The loss (HKV eq. 3) is
sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + sum_u lambda_u ||x_u||^2 + sum_i lambda_i ||y_i||^2, minimised
by alternating exact solves (HKV eq. 4):

    x_u = (Y^T Y + Y^T (C^u - I) Y + lambda_u I)^{-1} Y^T C^u p(u)

with lambda_u = reg * (n_items + sum_i (c_ui - 1)) ** reg_exponent: reg_exponent 0 is HKV's (and the
`implicit` library's) constant lambda; 1 is Rendle et al.'s frequency scaling (their nu), the weight of
the row's loss terms in this confidence form.

All rows of one side are solved at once: "cholesky" builds every row's d x d system by batched
matrix products over the rows' items (rows bucketed by length) and solves them by batched Cholesky;
"cg" runs `cg_steps` conjugate-gradient steps from the current factors (as `implicit` does), whose
matrix-vector products are one sampled dense-dense product and one sparse product for all rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recfunnel.models.base import Model, ModelConfig

__all__ = ["IALS", "IALSConfig", "SideMatrix", "confidence", "solve_side"]

#: entries of one batch of gathered item vectors (rows x longest row x factors) in the Cholesky build
_GATHER_BUDGET = 1 << 22


class IALSConfig(ModelConfig):
    factors: int = Field(64, ge=1, description="latent dimension")
    reg: float = Field(0.01, gt=0, description="L2 weight lambda (scaled per row by reg_exponent)")
    reg_exponent: float = Field(
        0.0,
        ge=0,
        description="lambda_u = reg * (n_items + sum_i (c_ui - 1)) ** reg_exponent: 0 constant (HKV, "
        "implicit), 1 frequency-scaled (Rendle et al. 2022)",
    )
    alpha: float = Field(1.0, ge=0, description="confidence scale: c = 1 + alpha * f(value)")
    confidence: Literal["linear", "log"] = Field(
        "linear", description="f(value): linear (value) or log (log(1 + value / eps)), HKV eqs. 2 and 6"
    )
    eps: float = Field(1.0, gt=0, description="eps of the log confidence")
    iterations: int = Field(15, ge=1, description="alternating sweeps (users then items)")
    solver: Literal["cholesky", "cg"] = Field(
        "cholesky", description="exact batched Cholesky solves, or cg_steps conjugate-gradient steps"
    )
    cg_steps: int = Field(3, ge=1, description="conjugate-gradient steps per sweep (solver='cg')")
    init_std: float = Field(
        0.1, gt=0, description="sigma: factors start as N(0, sigma^2 / factors) (Rendle et al. 2022)"
    )


def confidence(values: torch.Tensor, cfg: IALSConfig) -> torch.Tensor:
    """c = 1 + alpha * f(value) of observed entries (values > 0)."""
    f = torch.log1p(values / cfg.eps) if cfg.confidence == "log" else values
    return 1.0 + cfg.alpha * f


@dataclass(frozen=True)
class SideMatrix:
    """One side's observed confidences as CSR: rows (the side solved) x cols (the fixed side)."""

    indptr: torch.Tensor  # int64 [n_rows + 1]
    indices: torch.Tensor  # int64 [nnz]
    conf: torch.Tensor  # [nnz] confidences c (> 0)
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_scipy(cls, m: sp.csr_matrix, cfg: IALSConfig, dtype: torch.dtype = torch.float32) -> SideMatrix:
        m = m.tocsr()
        m.sort_indices()
        values = torch.from_numpy(np.asarray(m.data, np.float64)).to(dtype)
        if len(values) and float(values.min()) <= 0:
            raise ValueError("iALS reads observed values > 0 (a zero or negative value is no interaction)")
        return cls(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            confidence(values, cfg),
            m.shape[1],
        )

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """A torch CSR tensor of this pattern holding `values`."""
        with warnings.catch_warnings():  # torch calls its CSR support beta; the products used here are not
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                self.indptr, self.indices, values, size=(self.n_rows, self.n_cols), check_invariants=False
            )

    def row_regularisation(self, cfg: IALSConfig) -> torch.Tensor:
        """lambda per row [n_rows]."""
        if cfg.reg_exponent == 0:
            return torch.full((self.n_rows,), cfg.reg, dtype=self.conf.dtype)
        extra = torch.zeros(self.n_rows, dtype=torch.float64)
        rows = torch.repeat_interleave(torch.arange(self.n_rows), self.indptr.diff())
        extra.index_add_(0, rows, (self.conf - 1).double())
        return (cfg.reg * (self.n_cols + extra) ** cfg.reg_exponent).to(self.conf.dtype)


def _weighted_grams(side: SideMatrix, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[n_rows, d, d]: sum over each row's entries of weight * y_i y_i^T, by batched matmuls over
    rows of similar length (sorted by length, so the zero padding stays small)."""
    n, d = side.n_rows, y.shape[1]
    lengths = side.indptr.diff()
    order = torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order]
    y_pad = torch.cat([y, y.new_zeros(1, d)])  # index n_cols: the padding row
    out = y.new_zeros(n, d, d)
    most_rows = max(1, _GATHER_BUDGET // d)
    start = 0
    while start < n:
        # the next rows (ascending length) whose padded gather fits the budget; at least one
        window = sorted_lengths[start : start + most_rows].clamp(min=1)
        cost = window * torch.arange(1, len(window) + 1) * d
        stop = start + max(1, int((cost <= _GATHER_BUDGET).sum()))
        longest = int(sorted_lengths[stop - 1])
        rows = order[start:stop]
        start = stop
        if longest == 0:
            continue
        pos = torch.arange(longest)
        inside = pos[None, :] < lengths[rows, None]
        at = torch.where(inside, side.indptr[rows, None] + pos[None, :], 0)
        cols = torch.where(inside, side.indices[at], side.n_cols)
        w = torch.where(inside, weights[at], 0.0)
        g = y_pad[cols]  # [B, L, d]
        out[rows] = torch.bmm((g * w.unsqueeze(-1)).transpose(1, 2), g)
    return out


def solve_side(
    side: SideMatrix, y: torch.Tensor, x: torch.Tensor, cfg: IALSConfig, reg: torch.Tensor | None = None
) -> torch.Tensor:
    """New factors of every row of `side` given the fixed side's factors `y` [n_cols, d]; `x`
    [n_rows, d] the current ones (the starting point of "cg"; ignored by "cholesky"). `reg`: lambda
    per row (default :meth:`SideMatrix.row_regularisation`)."""
    lam = side.row_regularisation(cfg) if reg is None else reg
    gram = y.T @ y
    b = side.csr(side.conf) @ y  # Y^T C^u p(u): p = 1 on observed entries
    if cfg.solver == "cholesky":
        a = _weighted_grams(side, y, side.conf - 1)
        a += gram
        a.diagonal(dim1=1, dim2=2).add_(lam.unsqueeze(1))
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info.max()) > 0:
            raise FloatingPointError("iALS: a row's system is not positive definite; raise reg")
        return torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)
    extra = side.conf - 1

    def times_a(v: torch.Tensor) -> torch.Tensor:
        """A_u v_u for every row at once: v G + lambda v + sum_i (c - 1) (y_i . v) y_i."""
        dots = torch.sparse.sampled_addmm(side.csr(torch.zeros_like(extra)), v, y.T, beta=0.0)
        return v @ gram + lam.unsqueeze(1) * v + side.csr(dots.values() * extra) @ y

    x = x.clone()
    r = b - times_a(x)
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(cfg.cg_steps):
        ap = times_a(p)
        denom = (p * ap).sum(1)
        step = torch.where(denom > 0, rs / denom.clamp(min=torch.finfo(x.dtype).tiny), 0.0)
        x += step.unsqueeze(1) * p
        r -= step.unsqueeze(1) * ap
        rs_new = (r * r).sum(1)
        p = r + torch.where(rs > 0, rs_new / rs.clamp(min=torch.finfo(x.dtype).tiny), 0.0).unsqueeze(1) * p
        rs = rs_new
    return x


class IALS(Model):
    """iALS: weighted matrix factorisation for implicit feedback by alternating least squares.

    Fitted in closed form (module docstring). Factorised (user / item factors); a user unseen in training,
    or a known one with fresh events, is folded in at request time from a list of items
    (:meth:`user_vectors_from_recent`: one more user solve against the item factors)."""

    family = "ials"
    Config = IALSConfig
    trainable = False

    def __init__(self, config: IALSConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("user_factors", torch.zeros(n_users, config.factors))
        self.register_buffer("item_factors", torch.zeros(n_items, config.factors))

    def fit_matrix(self, train: sp.csr_matrix) -> None:
        """Alternating solves on the user x item matrix of values (binary, weights or ratings)."""
        cfg = self.config
        users = SideMatrix.from_scipy(train, cfg)
        items = SideMatrix.from_scipy(train.T.tocsr(), cfg)
        std = cfg.init_std / math.sqrt(cfg.factors)
        x = torch.randn(self.n_users, cfg.factors) * std
        y = torch.randn(self.n_items, cfg.factors) * std
        reg_u, reg_i = users.row_regularisation(cfg), items.row_regularisation(cfg)
        for _ in range(cfg.iterations):
            x = solve_side(users, y, x, cfg, reg_u)
            y = solve_side(items, x, y, cfg, reg_i)
        self.user_factors.copy_(x)
        self.item_factors.copy_(y)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors[users]

    def item_vectors(self) -> torch.Tensor:
        return self.item_factors

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[users].unsqueeze(1) * self.item_factors[items]).sum(-1)

    @torch.no_grad()
    def user_vectors_from_recent(
        self,
        users: torch.Tensor,
        indptr: torch.Tensor,
        items: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fold-in (:class:`~recfunnel.models.base.RecentEncoder`): each user's vector solved
        exactly (HKV eq. 4) against the trained item factors from the given items alone; `users`
        (-1: anonymous) only sets the batch size. Each listed item has value 1 unless `values`
        [len(items)] gives them (e.g. play counts); an item listed twice has its values summed.
        A user without items gets the zero vector."""
        indptr = torch.as_tensor(indptr, dtype=torch.int64)
        items = torch.as_tensor(items, dtype=torch.int64)
        n = len(indptr) - 1
        rows = torch.repeat_interleave(torch.arange(n), indptr.diff())
        vals = torch.ones(len(items)) if values is None else torch.as_tensor(values, dtype=torch.float32)
        m = sp.csr_matrix(
            (vals.numpy().astype(np.float64), (rows.numpy(), items.numpy())), shape=(n, self.n_items)
        )
        m.sum_duplicates()
        side = SideMatrix.from_scipy(m, self.config)
        exact = self.config.model_copy(update={"solver": "cholesky"})
        return solve_side(side, self.item_factors, torch.zeros(n, self.config.factors), exact)
