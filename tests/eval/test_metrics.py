"""Tests for recfunnel.eval.metrics (ranking metrics, tie rule, CTR metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score, top_k_accuracy_score

from recfunnel.eval.metrics import (
    auc,
    gauc,
    logloss,
    mean_metrics,
    ranking_metrics,
    ranks_of_relevant,
)

INF = float("inf")
NAMES = ("hr", "recall", "precision", "ndcg", "mrr", "map")
L3 = 1.0 / math.log2(3)  # discount at rank 1
L4 = 1.0 / math.log2(4)  # discount at rank 2 (= 0.5)
L6 = 1.0 / math.log2(6)  # discount at rank 4


# ------------------------------------------------------------------------------------------
# Brute-force reference: sort each row explicitly, then read metrics off the top-k list.
# ------------------------------------------------------------------------------------------


def reference_order(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Item ids of one row in ranked order (finite scores only), with the pessimistic tie rule."""
    n = scores.shape[0]
    is_rel = np.zeros(n, dtype=np.int64)
    pos = np.zeros(n, dtype=np.int64)
    for p, item in enumerate(relevant):
        if item >= 0:
            is_rel[item] = 1
            pos[item] = p
    order = np.lexsort((pos, is_rel, -scores))  # score desc, then non-relevant first, then column
    return order[np.isfinite(scores[order])]


def reference_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    b, n = scores.shape
    out = np.full(relevant.shape, n, dtype=np.int64)
    for u in range(b):
        where = {item: r for r, item in enumerate(reference_order(scores[u], relevant[u]))}
        for p, item in enumerate(relevant[u]):
            if item >= 0 and item in where:
                out[u, p] = where[item]
    return out


def reference_metrics(scores, relevant, n_relevant, ks) -> dict[str, np.ndarray]:
    b = scores.shape[0]
    out = {f"{m}@{k}": np.zeros(b) for m in NAMES for k in ks}
    for u in range(b):
        rel = {int(i) for i in relevant[u] if i >= 0}
        order = reference_order(scores[u], relevant[u])
        n_rel = int(n_relevant[u])
        for k in ks:
            flags = [int(i) in rel for i in order[:k]]
            hits = sum(flags)
            dcg = sum(1 / math.log2(p + 2) for p, f in enumerate(flags) if f)
            idcg = sum(1 / math.log2(i + 2) for i in range(min(n_rel, k)))
            first = next((p for p, f in enumerate(flags) if f), None)
            cum, ap = 0, 0.0
            for p, f in enumerate(flags):
                if f:
                    cum += 1
                    ap += cum / (p + 1)
            out[f"hr@{k}"][u] = float(hits > 0)
            out[f"recall@{k}"][u] = hits / n_rel
            out[f"precision@{k}"][u] = hits / k
            out[f"ndcg@{k}"][u] = dcg / idcg
            out[f"mrr@{k}"][u] = 0.0 if first is None else 1 / (first + 1)
            out[f"map@{k}"][u] = ap / min(n_rel, k)
    return out


def assert_metrics_close(got: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, values in want.items():
        np.testing.assert_allclose(got[name].numpy(), values, rtol=1e-9, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------------
# Hand-computed case
# ------------------------------------------------------------------------------------------

HAND_SCORES = torch.tensor(
    [
        # user 0: order 0(.9) 2(.8) 4(.5) 3(.3) 5(.2) 1(.1); relevant 2 -> rank 1, 5 -> rank 4
        [0.9, 0.1, 0.8, 0.3, 0.5, 0.2],
        # user 1: order 2(.7) 5(.6) 0(.4) 3(.1), items 1 and 4 masked; relevant 1 (masked) -> 6, 0 -> 2
        [0.4, -INF, 0.7, 0.1, -INF, 0.6],
        # user 2: its only relevant item 0 is masked -> 6
        [-INF, 0.2, 0.3, 0.4, 0.5, 0.6],
        # user 3: relevant 5 is the top item -> rank 0
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ]
)
HAND_RELEVANT = torch.tensor([[2, 5], [1, 0], [0, -1], [5, -1]])
HAND_N_REL = torch.tensor([2, 2, 1, 1])
IDCG2 = 1 + L3  # IDCG with two relevant items and k >= 2

HAND_EXPECTED = {
    # k = 1: only user 3 has a hit in the top 1 (rank 0): everything is 1 for it
    "hr@1": [0, 0, 0, 1],
    "recall@1": [0, 0, 0, 1],
    "precision@1": [0, 0, 0, 1],
    "ndcg@1": [0, 0, 0, 1],
    "mrr@1": [0, 0, 0, 1],
    "map@1": [0, 0, 0, 1],
    # k = 3: user 0 hits rank 1 only; user 1 hits rank 2 only; user 3 hits rank 0
    "hr@3": [1, 1, 0, 1],
    "recall@3": [1 / 2, 1 / 2, 0, 1],
    "precision@3": [1 / 3, 1 / 3, 0, 1 / 3],
    # u0: (1/log2 3) / (1 + 1/log2 3) = 0.38685; u1: (1/log2 4) / (1 + 1/log2 3) = 0.30657
    "ndcg@3": [L3 / IDCG2, L4 / IDCG2, 0, 1],
    "mrr@3": [1 / 2, 1 / 3, 0, 1],
    # u0: P(2) = 1/2, divided by min(2, 3) = 2 -> 1/4; u1: P(3) = 1/3, / 2 -> 1/6
    "map@3": [1 / 4, 1 / 6, 0, 1],
    # k = 5: user 0 now also hits rank 4
    "hr@5": [1, 1, 0, 1],
    "recall@5": [1, 1 / 2, 0, 1],
    "precision@5": [2 / 5, 1 / 5, 0, 1 / 5],
    # u0: (1/log2 3 + 1/log2 6) / (1 + 1/log2 3) = 1.01778 / 1.63093 = 0.62405
    "ndcg@5": [(L3 + L6) / IDCG2, L4 / IDCG2, 0, 1],
    "mrr@5": [1 / 2, 1 / 3, 0, 1],
    # u0: (P(2) + P(5)) / 2 = (1/2 + 2/5) / 2 = 0.45
    "map@5": [0.45, 1 / 6, 0, 1],
}


def test_hand_computed_ranks_put_masked_relevant_and_padding_at_sentinel_n():
    ranks = ranks_of_relevant(HAND_SCORES, HAND_RELEVANT)
    assert ranks.dtype == torch.long
    assert ranks.tolist() == [[1, 4], [6, 2], [6, 6], [0, 6]]


def test_hand_computed_metrics_at_k_1_3_5_match_arithmetic():
    ranks = ranks_of_relevant(HAND_SCORES, HAND_RELEVANT)
    got = ranking_metrics(ranks, HAND_N_REL, [1, 3, 5])
    assert set(got) == set(HAND_EXPECTED)
    for name, want in HAND_EXPECTED.items():
        assert got[name].shape == (4,)
        assert got[name].is_floating_point()
        np.testing.assert_allclose(got[name].numpy(), want, rtol=1e-12, atol=1e-15, err_msg=name)
    assert got["ndcg@3"][0].item() == pytest.approx(0.38685, abs=1e-5)
    assert got["ndcg@5"][0].item() == pytest.approx(0.62405, abs=1e-5)


def test_mean_metrics_averages_over_users_and_returns_floats():
    per_user = ranking_metrics(ranks_of_relevant(HAND_SCORES, HAND_RELEVANT), HAND_N_REL, [3, 5])
    means = mean_metrics(per_user)
    assert set(means) == set(per_user)
    assert all(isinstance(v, float) for v in means.values())
    assert means["hr@3"] == pytest.approx(3 / 4)
    assert means["recall@5"] == pytest.approx((1 + 1 / 2 + 0 + 1) / 4)
    assert means["map@5"] == pytest.approx((0.45 + 1 / 6 + 0 + 1) / 4)


# ------------------------------------------------------------------------------------------
# Tie rule
# ------------------------------------------------------------------------------------------


def test_relevant_tied_with_non_relevant_ranks_below_it():
    scores = torch.tensor([[0.5, 0.5, 0.9, 0.1]])
    # item 1 ties with non-relevant item 0 and is behind item 2 -> rank 2 (not 1)
    assert ranks_of_relevant(scores, torch.tensor([[1]])).tolist() == [[2]]
    assert ranks_of_relevant(scores, torch.tensor([[0]])).tolist() == [[2]]


def test_tied_relevant_items_take_distinct_consecutive_ranks_in_column_order():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    # non-relevant item 0 ranks first; relevant items 1, 2 then follow in their column order
    assert ranks_of_relevant(scores, torch.tensor([[1, 2]])).tolist() == [[1, 2]]
    assert ranks_of_relevant(scores, torch.tensor([[2, 1]])).tolist() == [[1, 2]]
    # padding between them does not change the order
    assert ranks_of_relevant(scores, torch.tensor([[2, -1, 1]])).tolist() == [[1, 4, 2]]


def test_constant_scores_never_flatter_the_model():
    n = 50
    scores = torch.zeros(2, n)
    ranks = ranks_of_relevant(scores, torch.tensor([[7], [0]]))
    assert ranks.tolist() == [[n - 1], [n - 1]]
    per_user = ranking_metrics(ranks, torch.tensor([1, 1]), [10])
    assert per_user["hr@10"].tolist() == [0.0, 0.0]


def test_minus_inf_items_never_rank_above_anything_and_masked_relevant_is_sentinel():
    scores = torch.tensor([[-INF, -INF, 0.0, -5.0, -INF]])
    ranks = ranks_of_relevant(scores, torch.tensor([[3, 0, 4]]))
    # item 3 (-5.0) is behind item 2 only; items 0 and 4 are masked
    assert ranks.tolist() == [[1, 5, 5]]


def test_nan_relevant_score_is_not_retrieved():
    scores = torch.tensor([[float("nan"), 0.3, 0.2]])
    assert ranks_of_relevant(scores, torch.tensor([[0, 2]])).tolist() == [[3, 1]]


# ------------------------------------------------------------------------------------------
# Sampled protocol
# ------------------------------------------------------------------------------------------


def test_sampled_layout_target_in_column_0_against_99_negatives():
    gen = torch.Generator().manual_seed(0)
    negatives = torch.rand(3, 99, generator=gen) * 0.5  # all in [0, 0.5)
    target = torch.tensor([[0.9], [0.0], [0.3]])
    negatives[1] = 0.0  # user 1: target tied with all 99 negatives -> rank 99
    negatives[2, :4] = torch.tensor([0.6, 0.7, 0.8, 0.95])  # user 2: 4 negatives above 0.3
    negatives[2, 4:] = negatives[2, 4:].clamp(max=0.29)
    scores = torch.cat([target, negatives], dim=1)
    assert scores.shape == (3, 100)
    ranks = ranks_of_relevant(scores, torch.zeros(3, 1, dtype=torch.long))
    assert ranks.tolist() == [[0], [99], [4]]

    got = ranking_metrics(ranks, torch.ones(3, dtype=torch.long), [1, 5, 10])
    assert got["hr@1"].tolist() == [1, 0, 0]
    assert got["hr@5"].tolist() == [1, 0, 1]
    assert got["ndcg@10"].tolist() == pytest.approx([1.0, 0.0, 1 / math.log2(6)])
    assert got["mrr@10"].tolist() == pytest.approx([1.0, 0.0, 1 / 5])
    # with a single relevant item, recall = HR and MAP = MRR
    for k in (1, 5, 10):
        assert torch.equal(got[f"recall@{k}"], got[f"hr@{k}"])
        assert torch.equal(got[f"map@{k}"], got[f"mrr@{k}"])
        assert torch.equal(got[f"precision@{k}"], got[f"hr@{k}"] / k)


# ------------------------------------------------------------------------------------------
# Against scikit-learn and a brute-force reference
# ------------------------------------------------------------------------------------------


def _random_multi_relevant(rng: np.random.Generator, b: int, n: int, r_max: int):
    scores = rng.standard_normal((b, n))
    relevant = np.full((b, r_max), -1, dtype=np.int64)
    n_rel = rng.integers(1, r_max + 1, size=b)
    for u in range(b):
        relevant[u, : n_rel[u]] = rng.choice(n, size=n_rel[u], replace=False)
    return scores, relevant, n_rel


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_mean_ndcg_matches_sklearn_ndcg_score_for_continuous_scores(k):
    rng = np.random.default_rng(k)
    scores, relevant, n_rel = _random_multi_relevant(rng, b=30, n=40, r_max=6)
    y_true = np.zeros_like(scores)
    for u in range(scores.shape[0]):
        y_true[u, relevant[u, : n_rel[u]]] = 1.0
    ranks = ranks_of_relevant(torch.from_numpy(scores), torch.from_numpy(relevant))
    ours = mean_metrics(ranking_metrics(ranks, torch.from_numpy(n_rel), [k]))[f"ndcg@{k}"]
    assert ours == pytest.approx(ndcg_score(y_true, scores, k=k), rel=1e-10)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_single_relevant_hr_matches_sklearn_top_k_accuracy(k):
    rng = np.random.default_rng(100 + k)
    b, n = 200, 30
    scores = rng.standard_normal((b, n))
    target = rng.integers(0, n, size=b)
    ranks = ranks_of_relevant(torch.from_numpy(scores), torch.from_numpy(target[:, None]))
    ours = mean_metrics(ranking_metrics(ranks, torch.ones(b, dtype=torch.long), [k]))[f"hr@{k}"]
    # y_true holds class (= column) indices; labels must name every column of y_score
    want = top_k_accuracy_score(target, scores, k=k, labels=np.arange(n))
    assert ours == pytest.approx(want, rel=1e-12)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 5),
    n=st.integers(1, 25),
    r_max=st.integers(1, 6),
    n_levels=st.integers(1, 6),
    p_inf=st.sampled_from([0.0, 0.2, 0.6]),
    extra_rel=st.integers(0, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_all_metrics_match_brute_force_sort_reference(b, n, r_max, n_levels, p_inf, extra_rel, seed):
    rng = np.random.default_rng(seed)
    r_max = min(r_max, n)
    # few distinct levels -> many ties; some items masked with -inf
    scores = rng.integers(0, n_levels, size=(b, n)).astype(np.float64)
    scores[rng.random((b, n)) < p_inf] = -np.inf
    relevant = np.full((b, r_max), -1, dtype=np.int64)
    n_real = rng.integers(1, r_max + 1, size=b)
    for u in range(b):
        slots = rng.choice(r_max, size=n_real[u], replace=False)  # padding can sit anywhere
        relevant[u, slots] = rng.choice(n, size=n_real[u], replace=False)
    n_rel = n_real + extra_rel  # held-out items outside the candidate set count as misses
    ks = [1, 2, 5, n, n + 3]

    ranks = ranks_of_relevant(torch.from_numpy(scores), torch.from_numpy(relevant))
    np.testing.assert_array_equal(ranks.numpy(), reference_ranks(scores, relevant))
    got = ranking_metrics(ranks, torch.from_numpy(n_rel), ks, n_items=n)
    assert_metrics_close(got, reference_metrics(scores, relevant, n_rel, sorted(set(ks))))


def test_k_beyond_n_items_needs_n_items_to_count_sentinels_as_misses():
    ranks = torch.tensor([[0, 3]])  # N = 3: second entry is the sentinel
    n_rel = torch.tensor([2])
    got = ranking_metrics(ranks, n_rel, [5], n_items=3)
    assert got["recall@5"].item() == 0.5
    assert ranking_metrics(ranks, n_rel, [3])["recall@3"].item() == 0.5


# ------------------------------------------------------------------------------------------
# Chunking and scale
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_elems", [1, 5, 37, 40 * 4 - 1, 40 * 4, 1000])
def test_tiny_chunks_give_identical_ranks_to_default(chunk_elems):
    rng = np.random.default_rng(chunk_elems)
    scores = torch.from_numpy(rng.integers(0, 5, size=(9, 40)).astype(np.float32))
    scores[torch.from_numpy(rng.random((9, 40)) < 0.2)] = -INF
    relevant = torch.from_numpy(
        np.stack([np.r_[rng.choice(40, size=3, replace=False), -1] for _ in range(9)])
    )
    default = ranks_of_relevant(scores, relevant)
    chunked = ranks_of_relevant(scores, relevant, chunk_elems=chunk_elems)
    assert torch.equal(default, chunked)
    np.testing.assert_array_equal(default.numpy(), reference_ranks(scores.numpy(), relevant.numpy()))


def test_large_catalogue_with_item_chunking_matches_reference():
    rng = np.random.default_rng(7)
    b, n = 3, 120_000
    scores = rng.standard_normal((b, n)).astype(np.float32)
    scores[:, rng.choice(n, size=1000, replace=False)] = -np.inf
    relevant = np.stack([rng.choice(n, size=4, replace=False) for _ in range(b)])
    scores[0, relevant[0, 1]] = scores[0, relevant[0, 0]]  # a relevant/relevant tie
    st_, rel_ = torch.from_numpy(scores), torch.from_numpy(relevant)
    chunked = ranks_of_relevant(st_, rel_, chunk_elems=100_000)  # < R * N: splits items
    assert torch.equal(chunked, ranks_of_relevant(st_, rel_))
    np.testing.assert_array_equal(chunked.numpy(), reference_ranks(scores, relevant))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ranks_match_cpu():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.integers(0, 4, size=(64, 500)).astype(np.float32))
    relevant = torch.from_numpy(np.stack([rng.choice(500, size=5, replace=False) for _ in range(64)]))
    cpu = ranks_of_relevant(scores, relevant, chunk_elems=4096)
    gpu = ranks_of_relevant(scores.cuda(), relevant.cuda(), chunk_elems=4096)
    assert gpu.device.type == "cuda"
    assert torch.equal(cpu, gpu.cpu())


# ------------------------------------------------------------------------------------------
# Input validation and edge cases
# ------------------------------------------------------------------------------------------


def test_duplicate_or_out_of_range_relevant_indices_are_rejected():
    scores = torch.rand(2, 5)
    with pytest.raises(ValueError, match="distinct"):
        ranks_of_relevant(scores, torch.tensor([[1, 1], [0, -1]]))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        ranks_of_relevant(scores, torch.tensor([[5, -1], [0, -1]]))


def test_all_padding_rows_and_empty_inputs_give_sentinels():
    scores = torch.rand(2, 4)
    assert ranks_of_relevant(scores, torch.full((2, 3), -1)).tolist() == [[4] * 3] * 2
    assert ranks_of_relevant(scores, torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0)


def test_zero_n_relevant_is_rejected():
    with pytest.raises(ValueError, match="n_relevant"):
        ranking_metrics(torch.tensor([[0]]), torch.tensor([0]), [1])


# ------------------------------------------------------------------------------------------
# CTR metrics
# ------------------------------------------------------------------------------------------


def test_auc_matches_sklearn_including_tied_scores():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, size=500)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # coarse rounding -> many ties
    assert len(np.unique(scores)) < 20
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    cont = rng.standard_normal(500) + labels
    assert auc(labels.astype(bool), cont) == pytest.approx(roc_auc_score(labels, cont), rel=1e-12)


def test_auc_with_a_single_class_raises_value_error():
    with pytest.raises(ValueError, match="only one class"):
        auc(np.ones(5), np.arange(5.0))


def test_logloss_matches_sklearn_and_clips_extreme_probabilities():
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 2, size=300)
    probs = np.round(rng.uniform(0.01, 0.99, size=300), 2)
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, probs), rel=1e-10)
    # confident mistakes cost -log(eps), not infinity
    assert logloss(np.array([1, 0]), np.array([0.0, 1.0])) == pytest.approx(-math.log(1e-7), rel=1e-6)


def _gauc_loop_reference(users, labels, scores):
    total, weight, skipped = 0.0, 0, 0
    for u in np.unique(users):
        m = users == u
        if len(np.unique(labels[m])) < 2:
            skipped += 1
            continue
        total += m.sum() * roc_auc_score(labels[m], scores[m])
        weight += m.sum()
    return total / weight, skipped


def test_gauc_matches_per_user_sklearn_loop_and_counts_skipped_users():
    rng = np.random.default_rng(13)
    n = 2000
    users = rng.integers(0, 150, size=n)
    labels = (rng.random(n) < 0.15).astype(np.int64)
    scores = np.round(rng.random(n) + 0.4 * labels, 1)  # ties within users
    want, want_skipped = _gauc_loop_reference(users, labels, scores)
    got, skipped = gauc(users, labels, scores)
    assert skipped == want_skipped > 0
    assert got == pytest.approx(want, rel=1e-12)
    # string user ids, shuffled rows: same answer
    perm = rng.permutation(n)
    got2, skipped2 = gauc(np.char.add("u", users.astype(str))[perm], labels[perm], scores[perm])
    assert (got2, skipped2) == (pytest.approx(want, rel=1e-12), want_skipped)


def test_gauc_without_any_two_class_user_raises_value_error():
    with pytest.raises(ValueError, match="no user"):
        gauc(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]))
