"""Merging several retrievers' answers: per-source quotas, de-duplication, provenance.

Sources are taken in priority order. Source s claims up to ``quotas[s]`` items that no earlier
source claimed, walking its own answer best first; an item it proposes that an earlier source
already claimed does not use its quota but is recorded as proposed by s too (with s's score). So a
merged row holds at most ``sum(quotas)`` distinct items, and each keeps every source's score.

For source s to fill its quota even when its best items were all claimed before, ask it for
``quota_s + sum of earlier quotas`` items (:func:`fetch_sizes`): at most that many can be taken.
Everything is vectorised over the batch: one pass per source, per-row sorted item sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recfunnel.funnel.candidates import Candidates

__all__ = ["fetch_sizes", "merge"]


def fetch_sizes(quotas: Sequence[int]) -> list[int]:
    """How many candidates to ask each source for so that its quota can always be filled:
    its own quota plus every earlier source's (the most its answer can share with theirs)."""
    _check_quotas(quotas, len(quotas))
    earlier = np.concatenate([[0], np.cumsum(quotas)[:-1]]).astype(int)
    return [int(q + e) for q, e in zip(quotas, earlier, strict=True)]


def _check_quotas(quotas: Sequence[int], n: int) -> None:
    if len(quotas) != n:
        raise ValueError(f"one quota per source: {n} source(s), {len(quotas)} quota(s)")
    bad = [q for q in quotas if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 0]
    if bad:
        raise ValueError(f"quotas must be ints >= 0, got {list(quotas)}")


_PAD = np.iinfo(np.int64).max  # sorts after every item; never an item


class _RowSets:
    """Each row's items sorted (empty slots as _PAD), for batched per-row membership tests: one
    binary search per query within its own row (torch.searchsorted on [B, L]), no Python loop."""

    def __init__(self, items: np.ndarray) -> None:
        padded = np.where(items >= 0, items, _PAD)
        self.order = np.argsort(padded, axis=1, kind="stable")  # equal items: first place first
        self.sorted = torch.from_numpy(np.ascontiguousarray(np.take_along_axis(padded, self.order, 1)))

    def find(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found bool [B, Q], the slot of each found item in its row: its first place)."""
        if self.sorted.shape[1] == 0:
            return np.zeros(query.shape, bool), np.zeros(query.shape, np.int64)
        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.int64))
        pos = torch.searchsorted(self.sorted, q).clamp_(max=self.sorted.shape[1] - 1)
        found = (self.sorted.gather(1, pos) == q).numpy() & (query >= 0)
        return found, np.take_along_axis(self.order, pos.numpy(), 1)

    def repeats(self) -> np.ndarray:
        """bool [B, L]: the slot holds an item that an earlier slot of its row holds too."""
        s = self.sorted.numpy()
        again = np.zeros(s.shape, bool)
        again[:, 1:] = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] != _PAD)
        out = np.zeros(s.shape, bool)
        np.put_along_axis(out, self.order, again, 1)
        return out


def merge(answers: Sequence[Candidates], quotas: Sequence[int]) -> Candidates:
    """Merge single-source answers [B, L_s] into one :class:`Candidates` [B, C] with S sources.

    Args:
        answers: each retriever's answer (one source each, same B), in priority order.
        quotas: items each source may claim per request.
    Returns:
        Candidates whose `scores` are the claiming source's, `source_scores` [B, C, S] every
        source's (NaN where it did not propose the item); C = the most items any row holds.
    """
    _check_quotas(quotas, len(answers))
    if not answers:
        raise ValueError("merge needs at least one source")
    names: list[str] = []
    for a in answers:
        if len(a.sources) != 1:
            raise ValueError(f"merge takes single-source answers; got one from {a.sources}")
        names.append(a.sources[0])
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be distinct, got {names}")
    b = len(answers[0])
    if any(len(a) != b for a in answers):
        raise ValueError(f"answers cover different request counts: {[len(a) for a in answers]}")
    width = max(1, int(sum(quotas)))
    items = np.full((b, width), -1, np.int64)
    scores = np.full((b, width), -np.inf, np.float32)
    filled = np.zeros(b, np.int64)
    for ans, quota in zip(answers, quotas, strict=True):
        cand = ans.items
        # skip what earlier sources claimed, and repeats inside this answer (first one counts)
        claimed, _ = _RowSets(items).find(cand)
        new = (cand >= 0) & ~claimed & ~_RowSets(cand).repeats()
        rank = np.cumsum(new, axis=1)
        take = new & (rank <= quota)
        r, c = np.nonzero(take)
        dest = filled[r] + rank[r, c] - 1
        items[r, dest] = cand[r, c]
        scores[r, dest] = ans.scores[r, c]
        filled += take.sum(axis=1)
    c_out = int(filled.max()) if b else 0
    items, scores = items[:, :c_out], scores[:, :c_out]
    per_source = np.full((b, c_out, len(answers)), np.nan, np.float32)
    ranks = np.full((b, c_out, len(answers)), -1, np.int64)
    for s, ans in enumerate(answers):
        found, slot = _RowSets(ans.items).find(items)  # slot: the item's first place in this answer
        if ans.items.shape[1]:
            per_source[:, :, s] = np.where(found, np.take_along_axis(ans.scores, slot, 1), np.nan)
            ranks[:, :, s] = np.where(found, np.take_along_axis(ans.source_ranks[:, :, 0], slot, 1), -1)
    return Candidates(items, scores, tuple(names), per_source, ranks)
