"""Negative sampling: uniform over items a user has not interacted with, vectorised and seeded.

Training draws (:func:`sample_negatives`) are with replacement; the fixed negatives of sampled
evaluation (:func:`sample_distinct_negatives`) are distinct per user."""

from __future__ import annotations

import numpy as np

from recfunnel.data.errors import DataError


class PositiveSet:
    """Membership test for (user, item) pairs, vectorised via sorted int64 keys user*n_items+item."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
        self.counts = np.bincount(self.keys // n_items, minlength=n_users)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean array, same shape as users/items (broadcast), True where the pair is positive."""
        keys = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        if len(self.keys) == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys


def sample_negatives(
    users: np.ndarray, k: int, positives: PositiveSet, rng: np.random.Generator
) -> np.ndarray:
    """Draw `k` items per entry of `users`, uniform over items that user has no positive with.

    Rejection sampling: draw all at once, redraw only the collisions, until none are left.
    Draws are with replacement (a negative can repeat for one user), as in the reference code of
    He et al. 2017 and Kang & McAuley 2018.

    Args:
        users: int64 [n] user indices (repeats allowed).
        k: negatives per entry.
        positives: the pairs that must never be drawn.
        rng: numpy Generator (the caller seeds it).
    Returns:
        int64 [n, k] item indices.
    """
    users = np.asarray(users, np.int64)
    full = positives.counts[users] >= positives.n_items
    if full.any():
        bad = int(users[full][0])
        raise DataError(f"user index {bad} has interacted with every item: no negative can be drawn")
    out = rng.integers(0, positives.n_items, size=(len(users), k), dtype=np.int64)
    ub = np.broadcast_to(users[:, None], out.shape)
    bad = positives.contains(ub, out)
    while bad.any():
        out[bad] = rng.integers(0, positives.n_items, size=int(bad.sum()), dtype=np.int64)
        bad[bad] = positives.contains(ub[bad], out[bad])
    return out


def _later_repeats(block: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """bool [n, k]: True where a row holds a value already present at a position that keeps it:
    first any earlier draw (`fresh` False), then the earliest redraw."""
    idx = np.argsort(block * 2 + fresh, axis=1, kind="stable")  # ties: kept draws, then by position
    ordered = np.take_along_axis(block, idx, axis=1)
    rep = np.zeros(block.shape, dtype=bool)
    np.put_along_axis(rep, idx[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
    return rep


def _redraw_repeats(
    block: np.ndarray, users: np.ndarray, positives: PositiveSet, rng: np.random.Generator
) -> None:
    """Replace, in place, every later repeat within a row by a fresh draw that is no positive and
    not in the row, until each row holds distinct items. The first occurrence of every value stays
    where it is; rows without repeats are left untouched."""
    fresh = np.zeros(block.shape, dtype=bool)
    rep = _later_repeats(block, fresh)
    while rep.any():
        rows = np.flatnonzero(rep.any(axis=1))
        sub, bad = block[rows], rep[rows]
        fresh[rows] |= bad
        ub = np.broadcast_to(users[rows][:, None], sub.shape)
        while bad.any():
            sub[bad] = rng.integers(0, positives.n_items, size=int(bad.sum()), dtype=np.int64)
            bad[bad] = positives.contains(ub[bad], sub[bad])
        block[rows] = sub
        rep = np.zeros(block.shape, dtype=bool)
        rep[rows] = _later_repeats(sub, fresh[rows])


def _by_random_keys(
    users: np.ndarray, k: int, positives: PositiveSet, rng: np.random.Generator
) -> np.ndarray:
    """k distinct non-positive items per user from a random order of the catalogue (for users
    whose free items are few, where redrawing would mostly collide). Chunked: rows x n_items."""
    n_items = positives.n_items
    out = np.empty((len(users), k), dtype=np.int64)
    step = max(1, 2**22 // max(1, n_items))
    for s in range(0, len(users), step):
        u = users[s : s + step]
        keys = rng.random((len(u), n_items))
        keys[positives.contains(u[:, None], np.arange(n_items)[None, :])] = 2.0  # after every free item
        out[s : s + step] = np.argsort(keys, axis=1, kind="stable")[:, :k]
    return out


def _child(rng: np.random.Generator) -> np.random.Generator:
    """A generator of its own stream, derived from `rng` without advancing it."""
    if hasattr(rng, "spawn"):  # numpy >= 1.25
        return rng.spawn(1)[0]
    return np.random.Generator(rng.bit_generator.jumped())


def sample_distinct_negatives(
    users: np.ndarray, k: int, positives: PositiveSet, rng: np.random.Generator
) -> np.ndarray:
    """Draw `k` distinct items per entry of `users`, uniform over the k-subsets of the items that
    user has no positive with (the fixed negatives of sampled evaluation).

    The draw is that of :func:`sample_negatives` (which it advances `rng` exactly as) with each
    repeat within a row replaced by a fresh draw, so a row that held no repeat is unchanged and the
    first occurrence of every item keeps its place. Users whose free items number
    less than twice `k` get a random order of their free items instead (rejection would stall).

    Args:
        users: int64 [n] user indices (repeats allowed).
        k: distinct negatives per entry.
        positives: the pairs that must never be drawn.
        rng: numpy Generator (the caller seeds it).
    Returns:
        int64 [n, k] item indices, distinct within each row.
    Raises:
        DataError: a user has fewer than `k` items they never interacted with; the message says
            how many the tightest user has.
    """
    users = np.asarray(users, np.int64)
    free = positives.n_items - positives.counts[users]
    short = free < k
    if short.any():
        worst = int(np.argmin(free))
        raise DataError(
            f"{int(short.sum())} of {len(users)} users have fewer than {k} items they never interacted "
            f"with (user index {int(users[worst])} has {int(free[worst])} of a catalogue of "
            f"{positives.n_items}), so {k} distinct negatives cannot be drawn for them",
            expected=f"eval_negatives <= {int(free.min())}, or the full protocol (every item is ranked)",
        )
    out = np.empty((len(users), k), dtype=np.int64)
    dense = 2 * k > free
    if (~dense).any():
        sparse = np.flatnonzero(~dense)
        block = sample_negatives(users[sparse], k, positives, rng)
        # repeats are redrawn from a child generator: `rng` advances exactly as for the draw with
        # replacement, so the draws of later calls (the test part after the valid part) stay too
        _redraw_repeats(block, users[sparse], positives, _child(rng))
        out[sparse] = block
    if dense.any():
        out[dense] = _by_random_keys(users[dense], k, positives, rng)
    return out
