"""The fast epoch of the ID-table objectives draws exactly what it drew before: the bitmap
membership test answers as the sorted keys, and the rejection loop over rejected positions gives
the draws of data.sampling.sample_negatives."""

import numpy as np
import pytest

from recfunnel.data.errors import DataError
from recfunnel.data.sampling import PositiveSet, sample_negatives
from recfunnel.train.objectives import BitmapPositives, draw_negatives, positive_set


def _pairs(seed=0, n_users=37, n_items=53, n=400):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_users, n), rng.integers(0, n_items, n), n_users, n_items


@pytest.mark.parametrize("packed", [False, True])
def test_bitmap_positives_answer_as_the_sorted_keys_in_any_shape(packed, monkeypatch):
    import recfunnel.train.objectives as objectives

    monkeypatch.setattr(objectives, "BYTEMAP_MAX_PAIRS", 0 if packed else 2**24)
    users, items, n_users, n_items = _pairs()
    plain = PositiveSet(users, items, n_users, n_items)
    bitmap = BitmapPositives(users, items, n_users, n_items)
    assert bitmap.packed is packed
    rng = np.random.default_rng(1)
    qu, qi = rng.integers(0, n_users, 5000), rng.integers(0, n_items, 5000)
    assert np.array_equal(bitmap.contains(qu, qi), plain.contains(qu, qi))
    grid = bitmap.contains(qu[:6, None], qi[None, :7])
    assert grid.shape == (6, 7) and np.array_equal(grid, plain.contains(qu[:6, None], qi[None, :7]))
    assert bitmap.contains(users, items).all()  # every training pair is a positive
    assert isinstance(positive_set(users, items, n_users, n_items), BitmapPositives)
    empty = BitmapPositives(np.array([], np.int64), np.array([], np.int64), 3, 4)
    assert not empty.contains(np.array([0, 2]), np.array([3, 1])).any()


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("seed", [0, 7])
def test_draw_negatives_gives_the_draws_of_sample_negatives(k, seed):
    users, items, n_users, n_items = _pairs(seed)
    for positives in (
        PositiveSet(users, items, n_users, n_items),
        BitmapPositives(users, items, n_users, n_items),
    ):
        want = sample_negatives(users, k, positives, np.random.default_rng(seed))
        got = draw_negatives(users, k, positives, np.random.default_rng(seed))
        assert got.shape == (len(users), k) and np.array_equal(got, want)
        assert not positives.contains(np.repeat(users, k), got.reshape(-1)).any()


def test_draw_negatives_names_a_user_who_has_every_item():
    users = np.array([0, 0, 1])
    items = np.array([0, 1, 0])
    positives = BitmapPositives(users, items, 2, 2)
    with pytest.raises(DataError, match="user index 0"):
        draw_negatives(np.array([1, 0]), 1, positives, np.random.default_rng(0))
