"""Merging sources: quotas, de-duplication and provenance (recfunnel.funnel.merge)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.funnel import Candidates, fetch_sizes, merge


def _answer(name: str, rows: list[list[int]], width: int) -> Candidates:
    items = np.full((len(rows), width), -1, np.int64)
    for b, row in enumerate(rows):
        items[b, : len(row)] = row
    scores = np.where(items >= 0, 100.0 - np.arange(width), -np.inf)  # best first
    return Candidates.single(name, items, scores)


def test_each_source_claims_its_quota_of_items_no_earlier_source_claimed():
    a = _answer("a", [[1, 2, 3, 4]], 4)
    b = _answer("b", [[2, 1, 5, 6, 7]], 5)
    m = merge([a, b], [2, 2])
    assert m.items.tolist() == [[1, 2, 5, 6]]  # b's 2 and 1 were claimed by a: b takes 5 and 6
    assert m.sources == ("a", "b")


def test_an_item_two_sources_propose_is_kept_once_with_both_scores():
    a = _answer("a", [[1, 2]], 2)
    b = _answer("b", [[2, 9]], 2)
    m = merge([a, b], [2, 1])
    assert m.items.tolist() == [[1, 2, 9]]
    assert m.source_names() == [[["a"], ["a", "b"], ["b"]]]
    slot = 1  # item 2: a's second (score 99), b's first (score 100)
    assert m.source_scores[0, slot].tolist() == [99.0, 100.0]
    assert m.scores[0, slot] == 99.0  # the claiming source's score
    assert np.isnan(m.source_scores[0, 0, 1]) and np.isnan(m.source_scores[0, 2, 0])
    assert m.source_ranks[0].tolist() == [[0, -1], [1, 0], [-1, 1]]  # places in each answer


def test_a_zero_quota_source_claims_nothing_but_still_records_what_it_proposed():
    a = _answer("a", [[1, 2]], 2)
    b = _answer("b", [[2, 3]], 2)
    m = merge([a, b], [2, 0])
    assert m.items.tolist() == [[1, 2]]
    assert m.source_names() == [[["a"], ["a", "b"]]]


def test_rows_are_merged_independently_and_empty_rows_stay_empty():
    a = _answer("a", [[1, 2], [], [7]], 2)
    b = _answer("b", [[3], [4, 5], []], 2)
    m = merge([a, b], [1, 1])
    assert m.items.tolist() == [[1, 3], [4, -1], [7, -1]]
    assert np.isneginf(m.scores[1, 1]) and np.isnan(m.source_scores[1, 1]).all()


def test_bad_quotas_and_mismatched_sources_are_refused():
    a = _answer("a", [[1]], 1)
    with pytest.raises(ValueError, match="one quota per source"):
        merge([a], [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        merge([a], [-1])
    with pytest.raises(ValueError, match="distinct"):
        merge([a, a], [1, 1])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.lists(st.integers(0, 6), min_size=1, max_size=4),
    st.integers(0, 2**31 - 1),
)
def test_merge_never_duplicates_and_fills_every_quota_when_sources_fetch_enough(b, quotas, seed):
    """Property: with each source asked for fetch_sizes(quotas) distinct items, every source
    claims exactly its quota (catalogue permitting), no row repeats an item, and provenance
    marks exactly the sources whose answer holds the item."""
    rng = np.random.default_rng(seed)
    n_items = 15
    fetch = fetch_sizes(quotas)
    answers = []
    for s, f in enumerate(fetch):
        rows = [rng.permutation(n_items)[: min(f, n_items)].tolist() for _ in range(b)]
        answers.append(_answer(f"s{s}", rows, max(f, 1)))
    m = merge(answers, quotas)
    for row in range(b):
        got = m.items[row][m.items[row] >= 0]
        assert len(set(got.tolist())) == len(got)
        claimed = set()
        for s, (ans, q) in enumerate(zip(answers, quotas, strict=True)):
            proposed = set(ans.items[row][ans.items[row] >= 0].tolist())
            new = [x for x in ans.items[row] if x >= 0 and x not in claimed][:q]
            claimed.update(new)
            for slot, item in enumerate(m.items[row]):
                if item >= 0:
                    assert m.proposed[row, slot, s] == (item in proposed)
            if len(proposed) >= sum(quotas[: s + 1]):  # enough distinct items were available
                assert len(new) == q
        assert set(got.tolist()) == claimed
