"""Rows in and out of an index: checked vectors and ids, per-query exclusions, recall.

Everything here is vectorised (no Python loop per query or per id on the search path)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["recall_at_k"]

_PAD = np.iinfo(np.int64).max  # fills exclusion rows; never a valid id

if TYPE_CHECKING:
    ArrayLike = np.ndarray | torch.Tensor | Sequence[Sequence[float]]
    Exclude = sp.spmatrix | Sequence[Any] | None


def _as_matrix(x: ArrayLike, what: str) -> np.ndarray:
    """float32 C-contiguous [n, d], finite; errors name `what` and the first bad row."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} row {int(np.argmax(bad))} holds NaN or inf")
    return a


def _as_ids(ids: ArrayLike | None, n: int, start: int, what: str) -> np.ndarray:
    if ids is None:
        return np.arange(start, start + n, dtype=np.int64)
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    a = np.asarray(ids)
    if a.ndim != 1 or len(a) != n:
        raise ValueError(f"{what} must be a 1-d array of {n} ids (one per vector), got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must be integers (item indices), got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{what} must be >= 0 (-1 marks 'no result'), found {int(a.min())}")
    uniq, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{what} holds duplicates, e.g. {uniq[counts > 1][:5].tolist()}")
    return a


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _exclusion_rows(exclude: Exclude, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr [n+1], ids [nnz]) of the per-query exclusions, CSR-style."""
    if sp.issparse(exclude):
        m = sp.csr_matrix(exclude)
        if m.shape[0] != n:
            raise ValueError(f"exclude has {m.shape[0]} rows for {n} queries")
        return m.indptr.astype(np.int64), m.indices.astype(np.int64)
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(
            "exclude must be a scipy sparse matrix (row i: ids to skip for query i) or a sequence of "
            f"one id collection per query, got {type(exclude).__name__}"
        )
    if len(exclude) != n:
        raise ValueError(f"exclude has {len(exclude)} entries for {n} queries (one collection per query)")
    parts = []
    for row in exclude:
        if isinstance(row, torch.Tensor):
            row = row.cpu().numpy()
        elif isinstance(row, (set, frozenset)):
            row = list(row)
        parts.append(np.asarray(row, dtype=np.int64).reshape(-1))
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=n)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return indptr, (np.concatenate(parts) if parts else np.zeros(0, np.int64))


def _padded_sorted(indptr: np.ndarray, ids: np.ndarray) -> torch.Tensor:
    """[n, L] int64, each row its sorted exclusions then _PAD (for batched searchsorted)."""
    n = len(indptr) - 1
    lengths = np.diff(indptr)
    width = max(int(lengths.max()) if n else 0, 1)
    out = np.full((n, width), _PAD, dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    out[rows, np.arange(len(ids)) - indptr[rows]] = ids
    out.sort(axis=1)
    return torch.from_numpy(out)


def _is_excluded(sorted_ex: torch.Tensor, found: np.ndarray) -> np.ndarray:
    """Whether found[i, j] is among row i's exclusions: one batched binary search, no Python loop."""
    f = torch.from_numpy(found)
    pos = torch.searchsorted(sorted_ex, f).clamp_(max=sorted_ex.shape[1] - 1)
    return (sorted_ex.gather(1, pos) == f).numpy()


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:, :k] ∩ truth[:, :k]| / k (ids; -1 never counts)."""
    f = np.ascontiguousarray(np.asarray(found, dtype=np.int64)[:, :k])
    t = np.asarray(truth, dtype=np.int64)[:, :k]
    if len(f) == 0:
        return float("nan")
    hit = _is_excluded(torch.from_numpy(np.sort(t, axis=1)), f) & (f >= 0)
    return float(hit.sum(axis=1).mean() / k)
