"""Negative sampling: uniform over items a user has not interacted with, vectorised and seeded."""

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
