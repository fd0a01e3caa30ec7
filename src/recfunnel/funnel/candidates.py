"""What a retriever proposes and what the merge keeps: :class:`Candidates`, padded arrays per
request, with the source(s) that proposed each item and the score each gave it.

Layout (B requests, C candidate slots, S sources)::

    items          int64   [B, C]     dataset item index, -1 in empty slots
    scores         float32 [B, C]     retrieval score of the source that claimed the item (-inf: empty)
    source_scores  float32 [B, C, S]  each source's score (NaN: that source did not propose the item)
    source_ranks   int64   [B, C, S]  place in each source's answer, 0 = its best (-1: not proposed)
    sources        tuple of S names

A single retriever's answer has S = 1. Rows are best first only within one source's answer; the
merge keeps the sources' order (source 0's claims, then source 1's, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["Candidates", "is_member", "top_k_excluding"]


@dataclass(frozen=True)
class Candidates:
    items: np.ndarray
    scores: np.ndarray
    sources: tuple[str, ...]
    source_scores: np.ndarray
    source_ranks: np.ndarray
    #: the source's own sub-stage milliseconds (e.g. an ANN retriever's "user_vector", "search")
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        b, c = self.items.shape
        per = (b, c, len(self.sources))
        if self.scores.shape != (b, c) or self.source_scores.shape != per or self.source_ranks.shape != per:
            raise ValueError(
                f"candidate arrays disagree: items {self.items.shape}, scores {self.scores.shape}, "
                f"source_scores {self.source_scores.shape}, source_ranks {self.source_ranks.shape} "
                f"for {len(self.sources)} source(s)"
            )

    @classmethod
    def single(cls, name: str, items: np.ndarray, scores: np.ndarray) -> Candidates:
        """One source's answer: items [B, C] (-1 empty) and their scores [B, C], best first."""
        items = np.asarray(items, np.int64)
        valid = items >= 0
        scores = np.where(valid, np.asarray(scores, np.float32), -np.inf).astype(np.float32)
        per_source = np.where(valid, scores, np.nan).astype(np.float32)[:, :, None]
        ranks = np.where(valid, np.arange(items.shape[1]), -1)[:, :, None]
        return cls(items, scores, (name,), per_source, ranks)

    @classmethod
    def empty(cls, name: str, b: int, c: int = 0) -> Candidates:
        return cls.single(name, np.full((b, c), -1, np.int64), np.full((b, c), -np.inf, np.float32))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def valid(self) -> np.ndarray:
        """bool [B, C]: the slot holds an item."""
        return self.items >= 0

    @property
    def proposed(self) -> np.ndarray:
        """bool [B, C, S]: source s proposed the item in slot c."""
        return ~np.isnan(self.source_scores)

    def source_names(self) -> list[list[list[str]]]:
        """Per request, per filled slot, the names of the sources that proposed the item."""
        prop = self.proposed
        return [
            [[self.sources[s] for s in np.flatnonzero(prop[b, c])] for c in np.flatnonzero(self.valid[b])]
            for b in range(len(self))
        ]

    def take_slots(self, order: np.ndarray) -> Candidates:
        """The slots `order` [B, C'] of each row (-1 in `order`: an empty slot)."""
        order = np.asarray(order, np.int64)
        if self.items.shape[1] == 0:
            return Candidates.empty_like(self, order.shape)
        empty = order < 0
        pos = np.where(empty, 0, order)
        items = np.where(empty, -1, np.take_along_axis(self.items, pos, 1))
        scores = np.where(empty, -np.inf, np.take_along_axis(self.scores, pos, 1)).astype(np.float32)
        per = np.take_along_axis(self.source_scores, pos[:, :, None], 1)
        per = np.where(empty[:, :, None], np.nan, per).astype(np.float32)
        ranks = np.where(empty[:, :, None], -1, np.take_along_axis(self.source_ranks, pos[:, :, None], 1))
        return Candidates(items, scores, self.sources, per, ranks)

    @staticmethod
    def empty_like(other: Candidates, shape: tuple[int, int]) -> Candidates:
        b, c = shape
        s = len(other.sources)
        return Candidates(
            np.full((b, c), -1, np.int64),
            np.full((b, c), -np.inf, np.float32),
            other.sources,
            np.full((b, c, s), np.nan, np.float32),
            np.full((b, c, s), -1, np.int64),
        )


def is_member(matrix: sp.csr_matrix, items: np.ndarray) -> np.ndarray:
    """bool [B, C]: items[b, c] is a stored column of row b of the CSR `matrix` (-1: False).

    One batched binary search over each row's sorted columns (keys row * n_cols + col), no loop."""
    m = sp.csr_matrix(matrix)
    items = np.asarray(items, np.int64)
    if m.nnz == 0 or items.size == 0:
        return np.zeros(items.shape, bool)
    m.sort_indices()
    n_cols = m.shape[1]
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keys = rows * n_cols + m.indices.astype(np.int64)  # sorted: by row, then column
    want = np.arange(len(items), dtype=np.int64)[:, None] * n_cols + items
    pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return (keys[pos] == want) & (items >= 0)


def top_k_excluding(
    ranked: np.ndarray, scores: np.ndarray, blocked: sp.csr_matrix | None, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first `k` items of each row of `ranked` [B, M] (best first, -1 empty) that are not in
    that row of `blocked` [B, n_items]; -> (items [B, k], scores [B, k]), -1 / -inf where a row
    runs out."""
    ranked = np.asarray(ranked, np.int64)
    drop = ranked < 0
    if blocked is not None:
        drop |= is_member(blocked, ranked)
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # survivors first, best-first kept
    kept = ~np.take_along_axis(drop, order, 1)
    items = np.where(kept, np.take_along_axis(ranked, order, 1), -1)
    out_scores = np.where(kept, np.take_along_axis(np.asarray(scores, np.float32), order, 1), -np.inf)
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = np.pad(items, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return items, out_scores.astype(np.float32)
