"""Merging several retrievers' answers: per-source quotas, de-duplication, provenance.

Sources are taken in priority order. Source s claims up to ``quotas[s]`` items that no earlier
source claimed, walking its own answer best first; an item it proposes that an earlier source
already claimed does not use its quota but is recorded as proposed by s too (with s's score). So a
merged row holds at most ``sum(quotas)`` distinct items, and each keeps every source's score.

For source s to fill its quota even when its best items were all claimed before, ask it for
``quota_s + sum of earlier quotas`` items (:func:`fetch_sizes`): at most that many can be taken.
Everything is vectorised over the batch: one pass per source, keys ``row * n + item``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def _sorted_keys(items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys row * n + item of the filled slots, flat slot index of each key)."""
    rows = np.arange(len(items), dtype=np.int64)[:, None]
    keys = (rows * n + items).reshape(-1)
    slots = np.flatnonzero(items.reshape(-1) >= 0)
    order = np.argsort(keys[slots], kind="stable")
    return keys[slots][order], slots[order]


def _lookup(sorted_keys: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found bool, position in sorted_keys) for each key of `want`."""
    if not len(sorted_keys):
        return np.zeros(want.shape, bool), np.zeros(want.shape, np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
    return sorted_keys[pos] == want, pos


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
    n = 1 + max((int(a.items.max()) for a in answers if a.items.size), default=0)
    width = max(1, int(sum(quotas)))
    items = np.full((b, width), -1, np.int64)
    scores = np.full((b, width), -np.inf, np.float32)
    filled = np.zeros(b, np.int64)
    row_of = np.arange(b, dtype=np.int64)[:, None]
    for ans, quota in zip(answers, quotas, strict=True):
        cand = ans.items
        valid = cand >= 0
        keys = row_of * n + cand
        # skip what earlier sources claimed, and repeats inside this answer (first one counts)
        claimed, _ = _sorted_keys(items, n)
        dup, _ = _lookup(claimed, keys)
        flat = np.where(valid, keys, -1 - np.arange(keys.size).reshape(keys.shape))
        _, first = np.unique(flat.reshape(-1), return_index=True)
        repeat = np.ones(keys.size, bool)
        repeat[first] = False
        new = valid & ~dup & ~repeat.reshape(keys.shape)
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
    want = row_of * n + items
    for s, ans in enumerate(answers):
        keys, slots = _sorted_keys(ans.items, n)
        if not len(keys):
            continue
        found, pos = _lookup(keys, want)
        found &= items >= 0
        per_source[:, :, s] = np.where(found, ans.scores.reshape(-1)[slots[pos]], np.nan)
    return Candidates(items, scores, tuple(names), per_source)
