"""Negative sampling: never a positive, uniform over the allowed items, seeded; PositiveSet membership."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from recfunnel.data.errors import DataError
from recfunnel.data.sampling import PositiveSet, sample_distinct_negatives, sample_negatives


@st.composite
def positive_sets(draw, allow_full=False):
    """(n_users, n_items, users, items): random small positive pairs, repeats allowed."""
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(1 if allow_full else 2, 12))
    pairs = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)), max_size=60))
    if not allow_full:
        # keep at least one free item per user
        full = {u for u in range(n_users) if len({i for v, i in pairs if v == u}) == n_items}
        pairs = [(u, i) for u, i in pairs if not (u in full and i == 0)]
    users = np.array([p[0] for p in pairs], dtype=np.int64)
    items = np.array([p[1] for p in pairs], dtype=np.int64)
    return n_users, n_items, users, items


@settings(max_examples=150, deadline=None)
@given(positive_sets(), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_sample_negatives_never_returns_a_positive_and_has_shape_n_by_k(data, k, seed):
    n_users, n_items, users, items = data
    pos = PositiveSet(users, items, n_users, n_items)
    reference = set(zip(users.tolist(), items.tolist(), strict=True))
    query = np.repeat(np.arange(n_users), 3)
    out = sample_negatives(query, k, pos, np.random.default_rng(seed))
    assert out.shape == (len(query), k)
    assert out.dtype == np.int64
    assert out.min() >= 0 and out.max() < n_items
    for u, row in zip(query.tolist(), out.tolist(), strict=True):
        assert not any((u, i) in reference for i in row)


@settings(max_examples=150, deadline=None)
@given(positive_sets(allow_full=True), st.data())
def test_positive_set_contains_matches_a_python_set(data, draw):
    n_users, n_items, users, items = data
    pos = PositiveSet(users, items, n_users, n_items)
    reference = set(zip(users.tolist(), items.tolist(), strict=True))
    qu = np.array(draw.draw(st.lists(st.integers(0, n_users - 1), min_size=1, max_size=30)), np.int64)
    qi = np.array(draw.draw(st.lists(st.integers(0, n_items - 1), min_size=len(qu), max_size=len(qu))))
    got = pos.contains(qu, qi)
    assert got.dtype == bool
    assert got.tolist() == [(u, i) in reference for u, i in zip(qu.tolist(), qi.tolist(), strict=True)]
    # every (user, item) cell, as a broadcast [n_users, n_items] query
    grid = pos.contains(np.arange(n_users)[:, None], np.arange(n_items)[None, :])
    assert grid.shape == (n_users, n_items)
    expected = np.zeros((n_users, n_items), dtype=bool)
    for u, i in reference:
        expected[u, i] = True
    assert np.array_equal(grid, expected)
    assert pos.counts.tolist() == expected.sum(axis=1).tolist()


def test_positive_set_with_no_pairs_contains_nothing():
    pos = PositiveSet(np.zeros(0, np.int64), np.zeros(0, np.int64), 3, 4)
    assert not pos.contains(np.array([0, 1, 2]), np.array([0, 3, 1])).any()
    out = sample_negatives(np.array([0, 2]), 5, pos, np.random.default_rng(0))
    assert out.shape == (2, 5)


def test_sample_negatives_is_reproducible_for_a_seed_and_differs_across_seeds():
    pos = PositiveSet(np.array([0, 0, 1]), np.array([1, 2, 3]), 2, 50)
    users = np.array([0, 1, 1, 0])
    a = sample_negatives(users, 10, pos, np.random.default_rng(42))
    b = sample_negatives(users, 10, pos, np.random.default_rng(42))
    c = sample_negatives(users, 10, pos, np.random.default_rng(43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sample_negatives_is_uniform_over_the_items_a_user_has_not_touched():
    n_items = 30
    positives = np.array([0, 3, 4, 5, 17, 29])  # dense at the start, so rejection must redraw often
    pos = PositiveSet(np.zeros(len(positives), np.int64), positives, 1, n_items)
    draws = sample_negatives(np.zeros(2000, np.int64), 20, pos, np.random.default_rng(0))
    counts = np.bincount(draws.ravel(), minlength=n_items)
    assert counts[positives].sum() == 0
    allowed = np.setdiff1d(np.arange(n_items), positives)
    assert (counts[allowed] > 0).all()
    assert chisquare(counts[allowed]).pvalue > 1e-3


def test_a_user_with_every_item_cannot_get_negatives_and_the_error_names_the_user():
    n_items = 4
    users = np.array([1] * n_items + [0])
    items = np.array(list(range(n_items)) + [2])
    pos = PositiveSet(users, items, 2, n_items)
    assert sample_negatives(np.array([0]), 3, pos, np.random.default_rng(0)).shape == (1, 3)
    with pytest.raises(DataError, match="user index 1 has interacted with every item"):
        sample_negatives(np.array([0, 1]), 3, pos, np.random.default_rng(0))


def test_duplicate_positive_pairs_count_once_toward_a_full_user():
    # user 0 has item 0 twice and item 1 once out of 3 items: not full, item 2 is always drawn
    pos = PositiveSet(np.array([0, 0, 0]), np.array([0, 0, 1]), 1, 3)
    out = sample_negatives(np.zeros(10, np.int64), 4, pos, np.random.default_rng(0))
    assert (out == 2).all()


# ------------------------------------------------------------------------------------------
# distinct negatives (sampled evaluation; issue 11: the draws repeated items)
# ------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(positive_sets(), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_distinct_negatives_are_distinct_per_row_never_positive_and_keep_the_draws_without_repeats(
    data, k, seed
):
    n_users, n_items, users, items = data
    pos = PositiveSet(users, items, n_users, n_items)
    reference = set(zip(users.tolist(), items.tolist(), strict=True))
    query = np.repeat(np.arange(n_users), 2)
    free = n_items - pos.counts[query]
    if (free < k).any():
        with pytest.raises(DataError, match=f"eval_negatives <= {int(free.min())}"):
            sample_distinct_negatives(query, k, pos, np.random.default_rng(seed))
        return
    out = sample_distinct_negatives(query, k, pos, np.random.default_rng(seed))
    assert out.shape == (len(query), k) and out.dtype == np.int64
    for u, row in zip(query.tolist(), out.tolist(), strict=True):
        assert len(set(row)) == k
        assert not any((u, i) in reference for i in row)
    if (2 * k <= free).all():  # the draw with replacement, its repeats redrawn
        rng = np.random.default_rng(seed)
        old = sample_negatives(query, k, pos, rng)
        for a, b in zip(old.tolist(), out.tolist(), strict=True):
            firsts = sorted({v: j for j, v in reversed(list(enumerate(a)))}.values())
            assert [b[j] for j in firsts] == [a[j] for j in firsts]  # first occurrences stay
        assert rng.integers(1 << 30) == _next_draw(query, k, pos, seed)  # rng advanced identically


def _next_draw(query, k, pos, seed):
    rng = np.random.default_rng(seed)
    sample_distinct_negatives(query, k, pos, rng)
    return rng.integers(1 << 30)


@pytest.mark.parametrize("k", [5, 40])  # 40 of 50 free items: drawn from a random order of them
def test_distinct_negatives_are_uniform_over_the_free_items(k):
    n_items = 56
    positives = np.array([0, 3, 4, 5, 17, 29])
    pos = PositiveSet(np.zeros(len(positives), np.int64), positives, 1, n_items)
    draws = sample_distinct_negatives(np.zeros(3000, np.int64), k, pos, np.random.default_rng(1))
    assert all(len(set(r)) == k for r in draws[:50].tolist())
    counts = np.bincount(draws.ravel(), minlength=n_items)
    assert counts[positives].sum() == 0
    allowed = np.setdiff1d(np.arange(n_items), positives)
    assert chisquare(counts[allowed]).pvalue > 1e-3


def test_a_catalogue_too_small_for_n_distinct_negatives_says_how_many_are_available():
    # the case: a 3-item catalogue gave "sampled-99" against 99 copies of one item
    pos = PositiveSet(np.array([0, 1]), np.array([0, 2]), 2, 3)
    with pytest.raises(DataError) as e:
        sample_distinct_negatives(np.array([0, 1]), 99, pos, np.random.default_rng(0))
    msg = str(e.value)
    assert "2 of 2 users have fewer than 99 items they never interacted with" in msg
    assert "a catalogue of 3" in msg
    assert "eval_negatives <= 2, or the full protocol" in msg
