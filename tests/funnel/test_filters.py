"""Filters and MMR (recfunnel.funnel.filters), property-style over random requests."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.funnel import Filters, mmr, resolve_requests

N_USERS, N_ITEMS = 8, 25


def _random_case(seed: int):
    """Random requests (some known users with seen items, some anonymous with recent items, random
    exclusions) and random candidate rows that may repeat, pad, and hit blocked items."""
    rng = np.random.default_rng(seed)
    seen = sp.random(N_USERS, N_ITEMS, density=0.3, format="csr", random_state=rng)
    seen.data[:] = 1.0
    b = int(rng.integers(1, 6))
    users = [int(u) if rng.random() < 0.6 else None for u in rng.integers(0, N_USERS, b)]
    recent = [rng.integers(0, N_ITEMS, rng.integers(0, 4)).tolist() for _ in range(b)]
    exclude = [rng.integers(0, N_ITEMS, rng.integers(0, 5)).tolist() for _ in range(b)]
    req = resolve_requests(users, recent, exclude, n_users=N_USERS, n_items=N_ITEMS, seen=seen)
    items = rng.integers(-1, N_ITEMS, (b, int(rng.integers(1, 30))))
    scores = rng.normal(size=items.shape).astype(np.float32)
    return rng, seen, users, recent, exclude, req, items, scores


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_filters_never_let_a_seen_or_excluded_item_through(seed):
    _, seen, users, recent, exclude, req, items, scores = _random_case(seed)
    keep = Filters().keep(req, items, scores)
    for b, u in enumerate(users):
        blocked = set(exclude[b]) | set(recent[b])
        if u is not None:
            blocked |= set(seen[u].indices.tolist())
        for item, kept in zip(items[b].tolist(), keep[b].tolist(), strict=True):
            if item < 0 or item in blocked:
                assert not kept
            else:
                assert kept


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_with_seen_items_allowed_exclusions_still_never_pass(seed):
    _, _, _, _, exclude, req, items, scores = _random_case(seed)
    keep = Filters(exclude_seen=False).keep(req, items, scores)
    for b in range(len(req)):
        assert not any(i in set(exclude[b]) for i in items[b][keep[b]].tolist())
        assert (items[b][keep[b]] >= 0).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_availability_and_business_rules_both_restrict(seed):
    rng, _, _, _, _, req, items, scores = _random_case(seed)
    available = set(rng.choice(N_ITEMS, 12, replace=False).tolist())
    calls = []

    def positive_scores_only(users, cand, s):
        calls.append((users.shape, cand.shape))
        return s > 0

    base = Filters().keep(req, items, scores)
    for avail in (available, np.isin(np.arange(N_ITEMS), list(available))):  # ids or a mask
        keep = Filters(available=avail, rules=[positive_scores_only]).keep(req, items, scores)
        expected = base & np.isin(items, list(available)) & (scores > 0)
        assert (keep == expected).all()
    assert calls[0] == ((len(req),), items.shape)


def test_a_rule_returning_the_wrong_shape_is_named():
    req = resolve_requests([0], n_users=1, n_items=5)

    def broken(users, items, scores):
        return np.ones(3, bool)

    with pytest.raises(ValueError, match="broken"):
        Filters(rules=[broken]).keep(req, np.array([[0, 1]]), np.zeros((1, 2)))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_mmr_with_lambda_one_is_pure_relevance_order(seed):
    rng = np.random.default_rng(seed)
    b, c, k = int(rng.integers(1, 4)), int(rng.integers(1, 20)), int(rng.integers(1, 25))
    vectors = rng.normal(size=(N_ITEMS, 4))
    items = rng.integers(-1, N_ITEMS, (b, c))
    rel = rng.normal(size=(b, c)).astype(np.float32)
    rel[rng.random((b, c)) < 0.2] = -np.inf  # filtered-out slots
    rel[:, -1] = rel[:, 0]  # a tie
    order = mmr(items, rel, vectors, k, lam=1.0)
    valid = (items >= 0) & np.isfinite(rel)
    expected = np.argsort(np.where(valid, -rel, np.inf), axis=1, kind="stable")[:, :k]
    expected = np.where(np.take_along_axis(valid, expected, 1), expected, -1)
    width = min(k, c)
    assert (order[:, :width] == expected[:, :width]).all()
    assert (order[:, width:] == -1).all()


def test_mmr_with_a_low_lambda_skips_a_near_duplicate_of_the_first_pick():
    vectors = np.array([[1.0, 0.0], [0.999, 0.01], [0.0, 1.0]])
    items = np.array([[0, 1, 2]])
    rel = np.array([[3.0, 2.9, 1.0]])
    assert mmr(items, rel, vectors, 3, lam=1.0).tolist() == [[0, 1, 2]]
    assert mmr(items, rel, vectors, 3, lam=0.3).tolist() == [[0, 2, 1]]
    with pytest.raises(ValueError, match="lambda"):
        mmr(items, rel, vectors, 3, lam=1.5)
