"""Pieces of the retrieval-ml100k cold-start protocol (:mod:`recfunnel.run.coldstart`): interaction
ranks, the exact random expectation, and the popularity-from-content baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from recfunnel.run.coldstart import (
    _interaction_ranks,
    _metrics_from_ranks,
    _random_metrics,
    content_popularity,
)


def test_interaction_ranks_mask_the_users_other_positives_and_disallowed_items():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = torch.tensor([[False, True, False, True, False]])
    allowed = torch.tensor([[False, True, True, True, True]])  # item 0 is a training item
    ranks, n_cand = _interaction_ranks(scores, rel, allowed)
    # item 1: beats nothing else allowed -> rank 0; item 3: item 2 (0.7) above it, item 1 masked
    assert ranks.tolist() == [0, 1] and n_cand.tolist() == [3, 3]


def test_ties_rank_pessimistically():
    ranks, _ = _interaction_ranks(
        torch.zeros(1, 4), torch.tensor([[True, False, False, False]]), torch.ones(1, 4, dtype=torch.bool)
    )
    assert ranks.tolist() == [3]


@pytest.mark.parametrize("n", [1, 3, 6, 12])
def test_random_expectation_matches_every_ranking_equally_likely(n):
    k = 5
    got = _random_metrics(torch.tensor([n]), k)
    if n <= 6:  # enumerate every permutation; the target is item 0
        ranks = torch.tensor([perm.index(0) for perm in itertools.permutations(range(n))])
        want = _metrics_from_ranks(ranks, k)
        assert got[f"hr@{k}"] == pytest.approx(want[f"hr@{k}"])
        assert got["ndcg@10"] == pytest.approx(want["ndcg@10"])
    assert got[f"hr@{k}"] == pytest.approx(min(1.0, k / n))
    assert got["hr@10"] == pytest.approx(min(1.0, 10 / n))


def test_content_popularity_recovers_a_linear_signal_and_only_fits_warm_items():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 6))
    w = np.array([1.0, -0.5, 0.0, 0.3, 0.0, 0.8])
    counts = np.round(np.expm1(2.0 + x @ w * 0.5)).clip(0)
    warm = np.ones(400, bool)
    warm[:40] = False
    pred, strength = content_popularity(x, counts, warm)
    assert pred.shape == (400,) and strength in (0.1, 1.0, 10.0, 100.0, 1000.0)
    truth = np.log1p(counts)
    assert np.corrcoef(pred[:40], truth[:40])[0, 1] > 0.95  # cold items, never fitted
    # the held-out items' counts do not enter: changing them changes nothing
    other = counts.copy()
    other[:40] = 1e6
    np.testing.assert_allclose(content_popularity(x, other, warm)[0], pred)
