"""The ranking stage and its training rows (recfunnel.funnel.ranker, recfunnel.funnel.ranker_data)."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.data.sampling import PositiveSet
from recfunnel.funnel import (
    ANNRetriever,
    Candidates,
    Funnel,
    PopularityRetriever,
    RankerDataConfig,
    RetrievalScoreRanker,
    ScorerRanker,
    merge,
    mine_negatives,
    ranker_parts,
    resolve_requests,
    train_ranker,
)
from recfunnel.run import TrainConfig

K = 8


def test_reciprocal_rank_fusion_lifts_items_several_sources_propose():
    a = Candidates.single("a", np.array([[1, 2, 3]]), np.array([[9.0, 8.0, 7.0]]))
    b = Candidates.single("b", np.array([[3, 4, 5]]), np.array([[0.3, 0.2, 0.1]]))
    cand = merge([a, b], [3, 2])
    req = resolve_requests(n_users=1, n_items=6)
    rrf = RetrievalScoreRanker().rank(req, cand)
    slot = {int(i): j for j, i in enumerate(cand.items[0])}
    assert rrf[0, slot[3]] == pytest.approx(1 / 63 + 1 / 61)  # a's third, b's first
    assert rrf[0, slot[3]] == rrf[0].max()
    assert rrf[0, slot[1]] == pytest.approx(1 / 61)
    claimed = RetrievalScoreRanker(fusion="claimed").rank(req, cand)
    assert claimed[0].tolist() == cand.scores[0].tolist()
    only_b = RetrievalScoreRanker(source="b").rank(req, cand)
    assert np.isneginf(only_b[0, slot[1]]) and only_b[0, slot[4]] == pytest.approx(0.2)


def _known(toy) -> PositiveSet:
    ds, train = toy.dataset, toy.split.part(toy.dataset, "train")
    return PositiveSet(train.user, train.item, ds.n_users, ds.n_items)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_hard_negatives_come_from_the_retrievers_top_candidates_in_the_configured_share(toy, fraction):
    ds = toy.dataset
    ann = ANNRetriever(toy.mf)
    known = _known(toy)
    cfg = RankerDataConfig(negatives=4, hard_fraction=fraction, hard_pool=5)
    users = np.repeat(np.arange(ds.n_users), 3)
    items, hard = mine_negatives(users, ann, known, cfg, np.random.default_rng(0))
    assert items.shape == hard.shape == (len(users), 4)
    assert hard.sum(axis=1).tolist() == [cfg.n_hard] * len(users)
    pool = ann.retrieve(
        resolve_requests(
            np.arange(ds.n_users).tolist(), n_users=ds.n_users, n_items=ds.n_items, seen=_seen(known)
        ),
        5,
    ).items
    for r, u in enumerate(users):
        assert set(items[r][hard[r]].tolist()) <= set(pool[u].tolist())
    assert not known.contains(np.broadcast_to(users[:, None], items.shape), items).any()


def _seen(known: PositiveSet):
    import scipy.sparse as sp

    u, i = np.divmod(known.keys, known.n_items)
    return sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(known.n_users, known.n_items))


def test_ranker_rows_hold_each_positive_and_its_negatives_encoded_for_the_ctr_models(toy):
    ds, split = toy.dataset, toy.split
    cfg = RankerDataConfig(negatives=3, hard_fraction=2 / 3, hard_pool=10)
    schema, parts = ranker_parts(ds, split, ANNRetriever(toy.mf), cfg=cfg)
    train = parts["train"]
    n_pos = len(split.train)
    assert len(train) == n_pos * 4 and len(parts["valid"]) == len(split.valid) * 4
    assert train.labels[:n_pos].eq(1).all() and train.labels[n_pos:].eq(0).all()
    np.testing.assert_array_equal(train.rows[:n_pos], split.train)
    assert set(train.fields.tensors) == set(schema.names)
    assert len(train.fields) == len(train)
    known = _known(toy)
    assert not known.contains(train.users[n_pos:], train.items[n_pos:]).any()


def test_a_ranker_trained_on_mined_rows_serves_known_and_anonymous_requests(toy):
    ds, split = toy.dataset, toy.split
    schema, parts = ranker_parts(ds, split, ANNRetriever(toy.mf), cfg=RankerDataConfig(negatives=2))
    model = train_ranker("fm", schema, parts, train=TrainConfig(epochs=2, progress=False, batch_size=512))
    ranker = ScorerRanker.from_model(model, ds, split)
    log = split.part(ds, "train")
    funnel = Funnel.for_dataset(
        [ANNRetriever(toy.mf), PopularityRetriever(log, ds.n_items)],
        [10, 10],
        ranker,
        dataset=ds,
        split=split,
    )
    res = funnel.recommend(users=["u00", None, None], recent_items=[None, ["i01"], None], k=K)
    assert res.counts.tolist() == [K, K, K]
    assert np.isfinite(res.scores).all()
    assert (np.diff(res.scores, axis=1) <= 0).all()  # best first by the ranker's scores
    cand = funnel.candidates(funnel.resolve(["u00"]))
    direct = ranker.rank(funnel.resolve(["u00"]), cand)[0]
    np.testing.assert_allclose(res.scores[0], np.sort(direct)[::-1][:K], rtol=1e-5)
