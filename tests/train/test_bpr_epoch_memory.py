"""The BPR epoch of an out-of-core run (recfunnel.train.objectives): three row-sized arrays instead
of six, and the membership test of the negatives in slices, give the batches the epoch-long arrays
gave (same seed -> same training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfunnel.data.dataset import Interactions
from recfunnel.data.sampling import PositiveSet
from recfunnel.train import objectives
from recfunnel.train.objectives import PairwiseBPR, draw_negatives, epoch_rng, positive_set


def _epoch_long(obj: PairwiseBPR, epoch: int, seed: int, batch_size: int):
    """The batches as PairwiseBPR built them before: every array an epoch long, pairs stacked once."""
    rng = epoch_rng(seed, epoch)
    perm = rng.permutation(len(obj.users))
    users = obj.users[perm]
    negs = draw_negatives(users, 1, obj.positives, rng)[:, 0]
    u, i, j = torch.from_numpy(users), torch.from_numpy(obj.items[perm]), torch.from_numpy(negs)
    pairs = torch.stack([i, j], 1)
    for start in range(0, len(u), batch_size):
        s = slice(start, start + batch_size)
        yield {"users": u[s], "items": i[s], "negatives": j[s], "pairs": pairs[s]}


@pytest.mark.parametrize("bitmap", [True, False])
@pytest.mark.parametrize("batch_size", [64, 1000])
def test_bpr_batches_are_those_of_the_epoch_long_arrays(bitmap, batch_size, monkeypatch):
    if not bitmap:  # the sorted-key membership test of pair spaces too large for a bitmap
        monkeypatch.setattr(objectives, "BITMAP_MAX_PAIRS", 0)
    monkeypatch.setattr(objectives, "CONTAINS_ROWS", 97)  # the membership test in many slices
    rng = np.random.default_rng(5)
    n_users, n_items, n = 60, 40, 900
    train = Interactions(rng.integers(0, n_users, n), rng.integers(0, n_items, n))
    obj = PairwiseBPR(train, n_users, n_items)
    assert isinstance(obj.positives, objectives.BitmapPositives) is bitmap
    for epoch in (0, 3):
        got = list(obj.batches(epoch, 11, batch_size))
        want = list(_epoch_long(obj, epoch, 11, batch_size))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            for key in w:
                assert g[key].dtype == w[key].dtype and torch.equal(g[key], w[key]), key


@pytest.mark.parametrize("k", [1, 3])
def test_the_membership_test_in_slices_draws_the_same_negatives(k, monkeypatch):
    rng = np.random.default_rng(2)
    users, items = rng.integers(0, 20, 500), rng.integers(0, 15, 500)
    positives = PositiveSet(users, items, 20, 15)
    want = draw_negatives(users, k, positives, np.random.default_rng(4))
    for rows in (1, 7, 499, 10_000):
        monkeypatch.setattr(objectives, "CONTAINS_ROWS", rows)
        got = draw_negatives(users, k, positives, np.random.default_rng(4))
        np.testing.assert_array_equal(got, want)
    assert not positive_set(users, items, 20, 15).contains(np.repeat(users, k), want.reshape(-1)).any()
