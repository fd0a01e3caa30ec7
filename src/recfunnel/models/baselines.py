"""Non-neural baselines: Popularity and EASE (closed form).

EASE's memory: the one dense thing it holds is the item-item matrix, ``n_items^2`` float32 (1.5 GiB at
20,000 items). The fit builds the Gram matrix ``X^T X`` straight into that buffer (sparse products one
block of rows at a time), factors and inverts it there (LAPACK ``spotrf`` + ``spotri``, in place) and
turns the inverse into the weights there too, so no second dense copy is made. The float64
``np.linalg.inv`` fit it replaces peaked at about nine float32-matrix equivalents (init buffer, float64
Gram, inv's two work copies and result, ``-P / diag(P)``, its float32 cast): measured by
:mod:`recfunnel.bench.ease_memory` (peak RSS of the whole process, ~350 MB of it imports and data),
14,140 MB before against 1,928 MB now at 20,000 items (3,798 MB against 745 MB at 10,000), and the
fit is faster (547 s against 2,091 s at 20,000 on the shared 2 cores). Before anything dense is
allocated, the bytes needed are checked against the memory available (``MemAvailable`` in
/proc/meminfo, or the ``RECFUNNEL_EASE_MEMORY`` environment variable: a size such as ``48G`` or a
number of bytes), and a catalogue that would not fit raises :class:`EASEMemoryError` saying how much
it needs and how much there is.
"""

from __future__ import annotations

import os
import re

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recfunnel.errors import RecfunnelError
from recfunnel.models.base import Model, ModelConfig

#: environment variable: the bytes EASE may use, in place of /proc/meminfo's MemAvailable
MEMORY_ENV = "RECFUNNEL_EASE_MEMORY"
#: sparse rows of X^T X computed (then densified in place) at once, in bytes
_GRAM_BLOCK_BYTES = 64 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class PopularityConfig(ModelConfig):
    pass


class Popularity(Model):
    """Scores every item by its number of training interactions (same list for every user)."""

    family = "popularity"
    Config = PopularityConfig
    trainable = False

    def __init__(self, config: PopularityConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def fit_matrix(self, train: sp.csr_matrix) -> None:
        self.counts.copy_(torch.from_numpy(np.asarray(train.sum(axis=0)).ravel().astype(np.float32)))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.counts[items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1).clone()


class EASEConfig(ModelConfig):
    l2: float = Field(
        250.0, gt=0, description="L2 penalty lambda on the item-item weights (Steck 2019, eq. 8)"
    )


class EASEMemoryError(RecfunnelError, MemoryError):
    """EASE's dense item-item matrix would not fit in the memory available."""


def _size_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if m is None:
        raise EASEMemoryError(f"{MEMORY_ENV}={text!r} is not a size: use bytes or e.g. 512M, 48G, 1.5T")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def available_memory() -> tuple[int | None, str]:
    """(bytes EASE may use, where that figure comes from): ``RECFUNNEL_EASE_MEMORY`` if set, else
    MemAvailable from /proc/meminfo; (None, ...) where neither is known (then nothing is checked)."""
    override = os.environ.get(MEMORY_ENV)
    if override:
        return _size_bytes(override), f"{MEMORY_ENV}={override}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None, "no /proc/meminfo"


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def ease_memory_bytes(n_items: int, nnz: int = 0) -> tuple[int, int]:
    """(dense bytes, working bytes) an EASE fit on `n_items` items and `nnz` training entries needs:
    the n_items^2 float32 item-item matrix, and the temporaries beside it (one block of the sparse
    Gram product, the CSR/CSC copies of the training matrix, per-item vectors)."""
    dense = 4 * n_items * n_items
    working = min(_GRAM_BLOCK_BYTES, 12 * n_items * n_items) + 3 * 12 * nnz + 64 * n_items
    return dense, working


def check_ease_memory(n_items: int, nnz: int = 0, resident: int = 0) -> None:
    """Raise :class:`EASEMemoryError` (allocating nothing) when an EASE fit on `n_items` items would
    not fit in the memory available; `resident`: bytes of the dense buffer already allocated and
    reused (already counted as used by MemAvailable)."""
    have, source = available_memory()
    if have is None:
        return
    dense, working = ease_memory_bytes(n_items, nnz)
    if not source.startswith(MEMORY_ENV):
        have += resident
    if dense + working > have:
        raise EASEMemoryError(
            f"EASE on {n_items:,} items needs {_fmt(dense + working)}: a dense {n_items:,} x {n_items:,} "
            f"float32 item-item matrix ({_fmt(dense)}) plus {_fmt(working)} of working space; "
            f"{_fmt(have)} available ({source}). Reduce the catalogue (e.g. drop rare items), use a "
            f"factorised model, or set {MEMORY_ENV} (e.g. {MEMORY_ENV}=64G) to override the check."
        )


def _gram_into(out: np.ndarray, x: sp.csr_matrix) -> None:
    """out[:] = X^T X (float32, dense, C order) computed one block of rows at a time: a block of the
    sparse product, densified straight into its rows of `out` (no dense temporary)."""
    n = out.shape[0]
    xt = x.T.tocsr()  # [items, users]
    rows = max(1, _GRAM_BLOCK_BYTES // (12 * n))
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        part = (xt[i0:i1] @ x).tocsr()
        part.sum_duplicates()
        block = out[i0:i1]
        block.fill(0.0)
        part.toarray(out=block)  # adds the entries into the zeroed rows


def _symmetrise_from_upper(a: np.ndarray) -> None:
    """Copy the upper triangle of the square C-order `a` onto its lower one, in place, by blocks."""
    n = a.shape[0]
    step = max(1, _GRAM_BLOCK_BYTES // (8 * n))
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        a[i0:i1, :i0] = a[:i0, i0:i1].T
        d = a[i0:i1, i0:i1]
        d[...] = np.triu(d) + np.triu(d, 1).T


class EASE(Model):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019).

    B = I - P diagMat(1 / diag(P)) with P = (X^T X + lambda I)^{-1} (eq. 8); scores = X_u B.
    The model keeps each user's training row (binary, or the run's ``data.values``), since scores
    are a function of it. Memory: one dense float32 ``n_items^2`` buffer, fitted in place (see the
    module docstring); a catalogue that would not fit raises :class:`EASEMemoryError` before it is
    allocated."""

    family = "ease"
    Config = EASEConfig
    trainable = False

    def __init__(self, config: EASEConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        check_ease_memory(n_items)
        self.register_buffer("weights", torch.zeros(n_items, n_items))
        self.register_buffer("hist_indptr", torch.zeros(n_users + 1, dtype=torch.long))
        self.register_buffer("hist_indices", torch.zeros(0, dtype=torch.long))
        self.register_buffer("hist_values", torch.zeros(0))

    def fit_matrix(self, train: sp.csr_matrix) -> None:
        from scipy.linalg import lapack

        n = self.n_items
        x = sp.csr_matrix(train, dtype=np.float32)
        if x.shape[1] != n:
            raise ValueError(f"the train matrix has {x.shape[1]} item columns; this EASE holds {n} items")
        w = self.weights
        reuse = (
            w.shape == (n, n) and w.dtype == torch.float32 and w.is_contiguous() and w.device.type == "cpu"
        )
        check_ease_memory(n, x.nnz, resident=4 * n * n if reuse else 0)
        if not reuse:
            w = torch.empty(n, n)
        g = w.numpy()  # the buffer itself: every step below writes into it
        _gram_into(g, x)
        g[np.diag_indices_from(g)] += np.float32(self.config.l2)
        # g is symmetric, so its transpose (a Fortran-order view of the same memory) is g itself:
        # LAPACK factors and inverts it in place. Its lower triangle is g's upper one.
        a = g.T
        c, info = lapack.spotrf(a, lower=True, overwrite_a=True, clean=False)
        if info == 0:
            c, info = lapack.spotri(c, lower=True, overwrite_c=True)
        if info != 0:
            raise RuntimeError(
                f"EASE: X^T X + l2 I was not positive definite in float32 (LAPACK info {info}); "
                f"raise l2 (now {self.config.l2})"
            )
        if not np.shares_memory(c, g):  # an old SciPy that copied: keep the result all the same
            g[...] = c.T
        _symmetrise_from_upper(g)  # P = (X^T X + l2 I)^-1, whole
        d = np.diag(g).copy()
        np.divide(g, -d[None, :], out=g)  # B = -P diagMat(1 / diag(P)) off the diagonal
        np.fill_diagonal(g, 0.0)
        self.weights = w
        self.hist_indptr = torch.from_numpy(train.indptr.astype(np.int64))
        self.hist_indices = torch.from_numpy(train.indices.astype(np.int64))
        self.hist_values = torch.from_numpy(train.data.astype(np.float32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "hist_values"
        if key not in state_dict and prefix + "hist_indices" in state_dict:  # saved before values: binary
            state_dict[key] = torch.ones(len(state_dict[prefix + "hist_indices"]))
            self.hist_values = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _rows(self, users: torch.Tensor) -> torch.Tensor:
        starts, ends = self.hist_indptr[users], self.hist_indptr[users + 1]
        counts = ends - starts
        device = counts.device
        row = torch.repeat_interleave(torch.arange(len(users), device=device), counts)
        offs = torch.arange(int(counts.sum()), device=device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        at = torch.repeat_interleave(starts, counts) + offs
        x = torch.zeros(len(users), self.n_items, device=device)
        x[row, self.hist_indices[at]] = self.hist_values[at]
        return x

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self._rows(users) @ self.weights

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.score_all(users), 1, items)
