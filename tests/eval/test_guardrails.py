"""Guardrail metrics against small cases computed by hand, and through the full-ranking protocol."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from recfunnel.data.dataset import build_dataset
from recfunnel.data.splits import leave_one_out
from recfunnel.eval.guardrails import (
    coverage,
    exposure_gini,
    gini_index,
    guardrail_metrics,
    head_items,
    intra_list_diversity,
    item_feature_vectors,
    item_popularity,
    long_tail_share,
    novelty,
    popularity_percentile,
)
from recfunnel.eval.protocols import evaluate, evaluate_full

# 3 users, K = 2, 5 items; the third list has one item and a padding slot
TOP = np.array([[0, 1], [0, 2], [1, -1]])
POP = np.array([4, 3, 2, 1, 0])  # distinct training users per item, 4 training users


def test_coverage_counts_distinct_recommended_items_over_the_catalogue():
    assert coverage(TOP, 5) == pytest.approx(3 / 5)


def test_gini_of_exposure_by_hand():
    # exposure counts [2, 2, 1, 0, 0] -> sorted [0, 0, 1, 2, 2]; sum (2i - n - 1) x_(i) = 12; G = 12 / (5 * 5)
    assert exposure_gini(TOP, 5) == pytest.approx(12 / 25)
    assert gini_index([3, 3, 3, 3]) == 0.0
    assert gini_index([0, 0, 0, 7]) == pytest.approx(3 / 4)
    assert gini_index([0, 0]) == 0.0


def test_novelty_is_mean_self_information_with_unseen_items_as_one_user():
    # recommended 0, 1, 0, 2, 1: -log2 of 4/4, 3/4, 4/4, 2/4, 3/4
    want = (0 - math.log2(0.75) + 0 + 1 - math.log2(0.75)) / 5
    assert novelty(TOP, POP, 4) == pytest.approx(want)
    assert novelty(np.array([[4]]), POP, 4) == pytest.approx(2.0)  # pop 0 counts as 1: -log2(1/4)


def test_popularity_percentile_runs_from_least_to_most_popular_with_ties_averaged():
    # percentiles of items 0..4: 100, 75, 50, 25, 0 -> recommended 0, 1, 0, 2, 1
    assert popularity_percentile(TOP, POP) == pytest.approx((100 + 75 + 100 + 50 + 75) / 5)
    # ties: pops [1, 1, 2] -> average ranks 1.5, 1.5, 3 -> 25, 25, 100
    assert popularity_percentile(np.array([[0, 2]]), [1, 1, 2]) == pytest.approx((25 + 100) / 2)


def test_long_tail_share_is_the_share_of_slots_outside_the_top_fifth():
    # head: ceil(0.2 * 5) = 1 item, item 0; tail slots: 1, 2, 1 of five
    assert long_tail_share(TOP, POP) == pytest.approx(3 / 5)
    assert head_items([3, 3, 1, 0, 0]).tolist() == [True, True, False, False, False]  # a tie joins the head
    assert head_items([1] + [0] * 9).tolist() == [True] + [False] * 9  # never an item nobody had


def test_intra_list_diversity_is_one_minus_mean_pairwise_cosine_over_lists_of_two_or_more():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    # user 0: items 0, 1 -> cos 0 -> 1; user 1: items 0, 2 -> cos 1/sqrt(2); user 2: one item, left out
    assert intra_list_diversity(TOP, vectors) == pytest.approx((1 + (1 - 1 / math.sqrt(2))) / 2)
    # a zero vector has cosine 0 with every item; parallel vectors have cosine 1
    assert intra_list_diversity(np.array([[0, 3], [0, 4]]), vectors) == pytest.approx((1 + 0) / 2)
    assert math.isnan(intra_list_diversity(np.array([[1, -1]]), vectors))
    # blocks of users give the same figure as one block
    assert intra_list_diversity(TOP, vectors, chunk=1) == pytest.approx(intra_list_diversity(TOP, vectors))


def test_guardrail_metrics_names_each_figure_at_the_lists_width():
    got = guardrail_metrics(TOP, POP, 4, item_vectors=np.eye(5))
    assert list(got) == ["coverage@2", "gini@2", "diversity@2", "novelty@2", "pop_pct@2", "long_tail@2"]
    assert "diversity@2" not in guardrail_metrics(TOP, POP, 4)
    assert list(guardrail_metrics(np.array([[1, -1]]), POP, 4, np.eye(5))) == [
        "coverage@2",
        "gini@2",
        "novelty@2",
        "pop_pct@2",
        "long_tail@2",
    ]  # one item per list: diversity is undefined and left out


def test_lists_naming_items_outside_the_catalogue_are_refused():
    with pytest.raises(ValueError, match="catalogue has 2 items"):
        coverage(TOP, 2)
    with pytest.raises(ValueError, match="-1 for padding"):
        coverage(np.array([[-2, 0]]), 5)


def test_item_popularity_counts_distinct_users_not_events_or_stored_zeros():
    m = sp.csr_matrix(([1.0, 5.0, 1.0, 0.0], ([0, 1, 1, 2], [0, 0, 2, 1])), shape=(3, 3))
    assert item_popularity(m).tolist() == [2, 0, 1]


def test_item_feature_vectors_are_the_multi_hot_of_a_list_column():
    table = pl.DataFrame({"id": ["a", "b", "c"], "genres": [["Drama", "Comedy"], [], ["Drama"]]})
    v = item_feature_vectors(table)
    assert v.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]]  # columns: Comedy, Drama
    assert item_feature_vectors(pl.DataFrame({"id": ["a"]})) is None
    assert item_feature_vectors(None) is None


class FixedScores(torch.nn.Module):
    """Every user scores item i as scores[i]."""

    family = "fixed"

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = torch.tensor(scores)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(users), -1).clone()


@pytest.fixture
def data():
    # a: train 0, 1, 2, valid 3, test 1; b: train 4, valid 2, test 0
    frame = pl.DataFrame(
        {
            "user": ["a", "a", "a", "a", "a", "b", "b", "b"],
            "item": [0, 1, 2, 3, 1, 4, 2, 0],
            "timestamp": [1, 2, 3, 4, 5, 1, 2, 3],
        }
    )
    ds = build_dataset("hand", frame)
    return ds, leave_one_out(ds)


def test_full_ranking_adds_guardrails_of_the_top_k_lists_and_per_user_vectors(data):
    ds, split = data
    model = FixedScores([0.5, 0.9, 0.8, 0.7, 0.1])
    r = evaluate_full(
        model, ds, split, "test", ks=(1, 3), guardrails=True, per_user=True, item_vectors=np.eye(5)
    )
    # a sees only item 4 (the rest masked): [4, -, -]; b: [1, 3, 0]. Train popularity [1, 1, 1, 0, 1], 2 users
    m = r.metrics
    assert m["coverage@3"] == pytest.approx(4 / 5)
    assert m["gini@3"] == pytest.approx(4 / 20)  # counts [1, 1, 0, 1, 1]
    assert m["novelty@3"] == pytest.approx(1.0)  # every p(i) = 1/2 (item 3 counted as one user)
    assert m["pop_pct@3"] == pytest.approx((62.5 * 3 + 0) / 4)
    assert m["long_tail@3"] == pytest.approx(1 / 4)  # head: items 0, 1, 2, 4 (tied); tail: item 3
    assert m["diversity@3"] == pytest.approx(1.0)  # b's three items are orthogonal; a has one item
    assert r.users.tolist() == [0, 1]
    assert r.per_user["ndcg@3"].tolist() == pytest.approx([0.0, 1 / math.log2(4)])
    assert r.per_user["recall@3"].tolist() == [0.0, 1.0]
    assert r.per_user["ndcg@3"].mean() == pytest.approx(m["ndcg@3"])


def test_guardrails_and_per_user_vectors_are_off_unless_asked(data):
    ds, split = data
    r = evaluate(FixedScores([0.5, 0.9, 0.8, 0.7, 0.1]), ds, split, "full", "test", ks=(1, 3))
    assert not any(k.startswith(("coverage", "gini", "novelty")) for k in r.metrics)
    assert r.per_user is None and r.users is None
    assert "per_user" not in r.to_dict()
