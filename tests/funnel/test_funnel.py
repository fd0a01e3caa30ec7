"""The whole funnel (recfunnel.funnel.funnel): who is served, what is reported, stage order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfunnel.funnel import (
    ANNRetriever,
    Filters,
    Funnel,
    ItemToItemRetriever,
    PopularityRetriever,
    ScorerRanker,
)
from recfunnel.run.artifact import seen_matrix

K = 8


class ItemIndexScorer:
    """A scorer that prefers higher item indices: any order it gives differs from retrieval's."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return items.float()

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return torch.arange(self.n_items).float().expand(len(users), -1)


def _funnel(toy, ranker=None, **kw) -> Funnel:
    ds, split, mf = toy.dataset, toy.split, toy.mf
    log = split.part(ds, "train")
    retrievers = [
        ANNRetriever(mf),
        ItemToItemRetriever.from_model(mf),
        PopularityRetriever(log, ds.n_items),
    ]
    return Funnel.for_dataset(
        retrievers, [12, 6, 10], ranker, dataset=ds, split=split, item_vectors=mf.item_vectors(), **kw
    )


@pytest.fixture(scope="module")
def funnel(toy) -> Funnel:
    return _funnel(toy)


def test_a_known_user_a_recent_items_list_and_nobody_each_get_k_items(toy, funnel):
    res = funnel.recommend(users=["u00", None, None], recent_items=[None, ["i01", "i02"], None], k=K)
    assert res.items.shape == (3, K) and res.counts.tolist() == [K, K, K]
    assert [len(x) for x in res.item_ids] == [K, K, K]
    assert all(len(set(row)) == K for row in res.item_ids)
    assert np.isfinite(res.scores).all()
    sources = res.proposed_by()
    assert any("ann" in s for s in sources[0])  # the known user gets model candidates
    assert any("item2item" in s for s in sources[1])  # the item list gets similar items
    assert all(s == ["popular"] for s in sources[2])  # nobody: popularity only


def test_one_call_for_many_users_answers_as_one_call_each(funnel):
    users = ["u00", "u07", None, "u13"]
    recent = [None, ["i05"], ["i09", "i10"], []]
    batch = funnel.recommend(users=users, recent_items=recent, k=K)
    for b, (u, r) in enumerate(zip(users, recent, strict=True)):
        one = funnel.recommend(users=[u], recent_items=[r], k=K)
        assert one.item_ids[0] == batch.item_ids[b]
        np.testing.assert_allclose(one.scores[0], batch.scores[b], rtol=1e-5)


def test_unknown_ids_are_reported_and_the_rest_of_the_request_is_served(funnel):
    res = funnel.recommend(users=[None, "ghost"], recent_items=[["i01", "nope", "i02"], ["i03"]], k=K)
    assert res.unknown_items == (("nope",), ())
    assert res.unknown_users == (None, "ghost")
    assert res.counts.tolist() == [K, K]


def test_seen_and_excluded_items_are_never_returned(toy, funnel):
    ds = toy.dataset
    seen = seen_matrix(ds, toy.split)
    users = ["u00", "u01", "u02"]
    popular = funnel.recommend(users=[None], k=K).item_ids[0]
    exclude = [popular[:4], ["i00", "i59"], []]
    res = funnel.recommend(users=users, recent_items=[["i30"], None, None], k=K, exclude=exclude)
    for b, u in enumerate(users):
        got = set(res.item_ids[b])
        seen_ids = {ds.items.ids[i] for i in seen[ds.users.index(u)].indices}
        assert not got & seen_ids and not got & set(exclude[b])
    assert "i30" not in res.item_ids[0]  # a recent item counts as seen


def test_every_stage_is_timed(funnel):
    res = funnel.recommend(users=["u00"], k=K)
    expected = {"resolve", "retrieve.ann", "retrieve.item2item", "retrieve.popular", "merge", "rank"}
    parts = {"retrieve.ann.user_vector", "retrieve.ann.search"}  # the ANN retriever's own split
    assert expected | parts | {"filter", "order", "total"} == set(res.timings_ms)
    assert all(v >= 0 for v in res.timings_ms.values())
    t = res.timings_ms
    assert t["retrieve.ann.user_vector"] + t["retrieve.ann.search"] <= t["retrieve.ann"]
    assert res.timings_ms["total"] >= max(v for n, v in res.timings_ms.items() if n != "total")


def test_the_ranker_reorders_candidates_by_its_scores(toy):
    ds = toy.dataset
    plain = _funnel(toy)
    ranked = _funnel(toy, ranker=ScorerRanker(ItemIndexScorer(ds.n_items)))
    users = ["u00", "u03"]
    cand = plain.candidates(plain.resolve(users))
    res = ranked.recommend(users=users, k=K)
    for b in range(len(users)):
        pool = cand.items[b][cand.items[b] >= 0]
        assert res.items[b].tolist() == sorted(pool.tolist(), reverse=True)[:K]
        assert res.scores[b].tolist() == res.items[b].astype(np.float32).tolist()
        assert res.stage_scores["rank"][b].tolist() == res.scores[b].tolist()
    before = plain.recommend(users=users, k=K).items
    assert (before != res.items).any()


def test_a_user_item_ranker_keeps_retrieval_scores_for_anonymous_requests(toy):
    f = _funnel(toy, ranker=ScorerRanker.from_model(toy.mf))
    res = f.recommend(users=["u00", None], k=K)
    assert res.counts.tolist() == [K, K]
    np.testing.assert_allclose(res.scores[1], res.stage_scores["retrieval"][1])


def test_filters_availability_and_rules_apply_and_mmr_diversifies(toy):
    ds = toy.dataset
    available = np.arange(ds.n_items) % 2 == 0

    def no_item_zero(users, items, scores):
        return items != 0

    f = _funnel(toy, filters=Filters(available=available, rules=[no_item_zero]))
    res = f.recommend(users=["u00", None], k=K)
    got = res.items[res.items >= 0]
    assert (got % 2 == 0).all() and (got != 0).all()

    plain = _funnel(toy).recommend(users=["u02"], k=K)
    same = _funnel(toy).recommend(users=["u02"], k=K, mmr_lambda=1.0)
    assert same.item_ids == plain.item_ids
    diverse = _funnel(toy).recommend(users=["u02"], k=K, mmr_lambda=0.0)
    assert diverse.counts.tolist() == [K] and diverse.item_ids != plain.item_ids


def test_bad_calls_say_what_is_valid(funnel):
    with pytest.raises(ValueError, match="k must be"):
        funnel.recommend(users=["u00"], k=0)
    with pytest.raises(ValueError, match="fewer than k"):
        funnel.recommend(users=["u00"], k=1000)
