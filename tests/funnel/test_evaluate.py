"""Offline evaluation of a funnel (recfunnel.funnel.evaluate): a hand-placed held-out item, items
the candidates miss, and agreement with recfunnel.eval's full ranking for an exact ANN funnel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recfunnel.eval.protocols import evaluate_full
from recfunnel.funnel import (
    ANNRetriever,
    Candidates,
    Funnel,
    FunnelEval,
    PopularityRetriever,
    Requests,
    RetrievalScoreRanker,
    evaluate_funnel,
)
from recfunnel.run.artifact import seen_matrix


class PlacingRetriever:
    """Proposes, for each known user, unseen filler items with decreasing scores and the user's
    held-out item at the 1-based place `place[u]` (None: not proposed)."""

    name = "placer"

    def __init__(self, held_out: dict[int, int], place: dict[int, int | None], seen) -> None:
        self.held_out, self.place, self.seen = held_out, place, seen.tocsr()

    def retrieve(self, requests: Requests, k: int) -> Candidates:
        items = np.full((len(requests), k), -1, np.int64)
        for b, u in enumerate(requests.users.tolist()):
            target = self.held_out[u]
            blocked = set(self.seen[u].indices.tolist()) | {target}
            row = [i for i in range(requests.n_items) if i not in blocked][:k]
            if self.place[u] is not None:
                row.insert(self.place[u] - 1, target)
            items[b] = row[:k]
        scores = np.broadcast_to(-np.arange(k, dtype=np.float32), items.shape)
        return Candidates.single(self.name, items, scores)


def _placed(toy):
    ds, split = toy.dataset, toy.split
    test = split.part(ds, "test")
    held_out = dict(zip(test.user.tolist(), test.item.tolist(), strict=True))
    # places 1..13 in turn; every 7th user's item is not proposed at all
    place = {u: None if u % 7 == 3 else u % 13 + 1 for u in held_out}
    retriever = PlacingRetriever(held_out, place, seen_matrix(ds, split))
    funnel = Funnel.for_dataset(
        [retriever], [20], RetrievalScoreRanker(source="placer"), dataset=ds, split=split
    )
    return funnel, place


def test_a_held_out_item_at_rank_r_scores_one_over_log2_r_plus_one(toy):
    funnel, place = _placed(toy)
    res = evaluate_funnel(funnel, toy.dataset, toy.split, ks=(5, 10), candidate_ks=(3, 20), batch_size=7)
    assert isinstance(res, FunnelEval)
    users = sorted(place)
    assert res.n_users == len(users) and res.users.tolist() == users
    ranks = [place[u] for u in users]
    ndcg10 = [1 / math.log2(r + 1) if r is not None and r <= 10 else 0.0 for r in ranks]
    np.testing.assert_allclose(res.per_user["ndcg@10"], ndcg10)
    np.testing.assert_allclose(
        res.per_user["ndcg@5"],
        [x if r is not None and r <= 5 else 0.0 for x, r in zip(ndcg10, ranks, strict=True)],
    )
    np.testing.assert_array_equal(res.per_user["recall@10"], [r is not None and r <= 10 for r in ranks])
    np.testing.assert_array_equal(res.per_user["hr@10"], res.per_user["recall@10"])
    np.testing.assert_array_equal(res.per_user["cand_recall@3"], [r is not None and r <= 3 for r in ranks])
    np.testing.assert_array_equal(res.per_user["cand_recall"], [r is not None for r in ranks])
    # user 0 first: NDCG 1; user 2 third: NDCG@10 = 1 / log2(4) = 0.5, MRR@10 = 1/3
    assert place[0] == 1 and res.per_user["ndcg@10"][0] == pytest.approx(1.0)
    assert place[2] == 3 and res.per_user["ndcg@10"][2] == pytest.approx(0.5)
    assert res.per_user["mrr@10"][2] == pytest.approx(1 / 3)
    assert res.metrics["ndcg@10"] == pytest.approx(np.mean(ndcg10))
    assert set(res.metrics) == set(res.per_user)
    assert res.mean_candidates == pytest.approx(20.0)
    assert {"resolve", "retrieve.placer", "merge", "rank", "filter", "order", "total"} <= set(res.stage_ms)
    assert all(v >= 0 for v in res.stage_ms.values())
    assert res.stage_ms["total"] >= res.stage_ms["rank"]


def test_an_item_the_candidates_miss_scores_zero_and_lowers_candidate_recall(toy):
    funnel, place = _placed(toy)
    res = evaluate_funnel(funnel, toy.dataset, toy.split, ks=(10,), candidate_ks=(20,))
    missed = np.array([place[u] is None for u in res.users.tolist()])
    assert missed.any() and not missed.all()
    for key in ("ndcg@10", "recall@10", "mrr@10", "cand_recall@20", "cand_recall"):
        assert (res.per_user[key][missed] == 0).all(), key
    assert res.metrics["cand_recall@20"] == pytest.approx(1 - missed.mean())
    assert res.metrics["cand_recall"] == pytest.approx(1 - missed.mean())
    assert res.metrics["cand_recall"] < 1
    assert res.metrics["recall@10"] <= res.metrics["cand_recall"]


def test_an_exact_ann_funnel_over_every_item_matches_the_full_ranking_protocol(toy):
    ds, split = toy.dataset, toy.split
    funnel = Funnel.for_dataset(
        [ANNRetriever(toy.mf, backend="exact")],
        [ds.n_items],
        RetrievalScoreRanker(source="ann"),
        dataset=ds,
        split=split,
    )
    got = evaluate_funnel(funnel, ds, split, ks=(5, 10), candidate_ks=(10,), batch_size=16)
    want = evaluate_full(toy.mf, ds, split, "test", ks=(5, 10))
    assert got.n_users == want.n_users
    for key in ("ndcg@5", "ndcg@10", "recall@5", "recall@10", "hr@10", "mrr@10"):
        assert got.metrics[key] == pytest.approx(want.metrics[key], abs=1e-9), key
    # every unseen item is a candidate; the ANN's own top 10 is the final top 10
    assert got.metrics["cand_recall"] == 1.0
    assert got.metrics["cand_recall@10"] == pytest.approx(got.metrics["recall@10"])


def test_popularity_added_after_the_ann_is_counted_in_the_whole_candidate_set(toy):
    ds, split = toy.dataset, toy.split
    log = ds.interactions.take(np.sort(np.concatenate([split.train, split.valid])))
    funnel = Funnel.for_dataset(
        [ANNRetriever(toy.mf), PopularityRetriever(log, ds.n_items)],
        [5, 5],
        RetrievalScoreRanker(source="ann"),
        dataset=ds,
        split=split,
    )
    res = evaluate_funnel(funnel, ds, split, ks=(3,), candidate_ks=(5, 10))
    assert res.mean_candidates == pytest.approx(10.0)
    assert res.metrics["cand_recall@10"] == res.metrics["cand_recall"] >= res.metrics["cand_recall@5"]
    # ranked by the ANN score: the top 3 are the ANN's first 3 candidates
    assert res.metrics["recall@3"] <= res.metrics["cand_recall@5"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"part": "train"}, "unknown part"),
        ({"ks": ()}, "cut-offs"),
        ({"ks": (0,)}, "cut-offs"),
        ({"candidate_ks": (0,)}, "cut-offs"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_refused(toy, kwargs, match):
    funnel, _ = _placed(toy)
    with pytest.raises(ValueError, match=match):
        evaluate_funnel(funnel, toy.dataset, toy.split, **kwargs)


def test_held_out_items_the_funnel_counts_as_seen_are_reported(toy):
    ds, split = toy.dataset, toy.split
    funnel = Funnel.for_dataset([ANNRetriever(toy.mf)], [20], dataset=ds, split=split)  # seen: train + valid
    with pytest.warns(UserWarning, match="held-out item"):
        res = evaluate_funnel(funnel, ds, split, part="valid")
    assert res.metrics["recall@10"] == 0.0 and res.metrics["cand_recall"] == 0.0
