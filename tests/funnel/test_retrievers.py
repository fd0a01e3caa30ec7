"""Retrievers (recfunnel.funnel.retrievers) and request resolution (recfunnel.funnel.request)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfunnel.data.sequences import split_histories
from recfunnel.funnel import ANNRetriever, ItemToItemRetriever, PopularityRetriever, resolve_requests
from recfunnel.models.base import build_model
from recfunnel.run.artifact import seen_matrix


def _requests(toy, users=None, recent=None, exclude=None, **kw):
    ds = toy.dataset
    return resolve_requests(
        users,
        recent,
        exclude,
        n_users=ds.n_users,
        n_items=ds.n_items,
        user_vocab=ds.users,
        item_vocab=ds.items,
        seen=seen_matrix(ds, toy.split),
        histories=split_histories(ds, toy.split, ("train", "valid")),
        **kw,
    )


def test_resolution_reports_unknown_ids_and_serves_an_unknown_user_anonymously(toy):
    req = _requests(toy, ["u00", "nobody", None], [["i01", "zz"], None, ["i02"]], [None, ["yy"], None])
    assert req.users[0] == toy.dataset.users.index("u00")
    assert req.users[1] == -1 and req.users[2] == -1
    assert req.unknown_users == (None, "nobody", None)
    assert req.unknown_items == (("zz",), ("yy",), ())
    recent = req.recent_items[req.recent_indptr[0] : req.recent_indptr[1]]
    assert recent[-1] == toy.dataset.items.index("i01")  # the stored history tail, then the new item
    assert req.recent_lengths[1] == 0  # an unknown user has no stored history
    assert req.seen[1].nnz == 0 and req.seen[2].indices.tolist() == [toy.dataset.items.index("i02")]


def test_resolution_refuses_bare_strings_and_ragged_batches(toy):
    with pytest.raises(TypeError, match="bare string"):
        _requests(toy, "u00")
    with pytest.raises(ValueError, match="one entry per request"):
        _requests(toy, ["u00", "u01"], [["i01"]])


def test_ann_for_a_known_user_is_the_models_exact_top_k_without_seen_items(toy):
    ann = ANNRetriever(toy.mf)
    req = _requests(toy, ["u00", "u05"])
    got = ann.retrieve(req, 10)
    scores = toy.mf.score_all(torch.from_numpy(req.users)).detach().numpy()
    scores[req.seen.toarray() > 0] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert (got.items == expected).all()
    np.testing.assert_allclose(got.scores, np.take_along_axis(scores, expected, 1), rtol=1e-4, atol=1e-5)


def test_ann_folds_in_recent_items_for_an_anonymous_request_and_skips_nobody(toy):
    ann = ANNRetriever(toy.mf)
    req = _requests(toy, [None, None], [["i01", "i02"], None])
    got = ann.retrieve(req, 5)
    assert (got.items[1] == -1).all()  # nobody: no vector
    v = toy.mf.item_vectors().detach()
    idx = [toy.dataset.items.index("i01"), toy.dataset.items.index("i02")]
    scores = (v @ v[idx].mean(0) + toy.mf.item_bias_all().detach()).numpy()
    scores[idx] = -np.inf
    assert got.items[0].tolist() == np.argsort(-scores, kind="stable")[:5].tolist()


def test_ann_encodes_request_histories_with_a_sequence_model(toy):
    ds = toy.dataset
    torch.manual_seed(0)
    i2v = build_model("item2vec", ds.n_users, ds.n_items, {"dim": 8}).eval()
    torch.nn.init.normal_(i2v.in_emb.weight)
    req = _requests(toy, [None], [["i03", "i04"]])
    got = ANNRetriever(i2v).retrieve(req, 5)
    indptr, items = req.recent()
    expected = (i2v.encode_items(indptr, items) @ i2v.item_vectors().T).detach().numpy()[0]
    expected[items.numpy()] = -np.inf
    assert got.items[0].tolist() == np.argsort(-expected, kind="stable")[:5].tolist()


def test_item_to_item_scores_are_summed_cosines_to_the_recent_items(toy):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(toy.dataset.n_items, 6)).astype(np.float32)
    i2i = ItemToItemRetriever(vectors, recent=2)
    req = _requests(toy, [None, None], [["i01", "i02", "i03"], []])
    got = i2i.retrieve(req, 4)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    recent = [toy.dataset.items.index(x) for x in ("i02", "i03")]  # the last `recent` = 2
    sims = unit @ unit[recent].sum(0)
    sims[[toy.dataset.items.index(x) for x in ("i01", "i02", "i03")]] = -np.inf  # seen
    top = np.argsort(-sims, kind="stable")[:4]
    assert got.items[0].tolist() == top.tolist()
    np.testing.assert_allclose(got.scores[0], sims[top], rtol=1e-5)
    assert (got.items[1] == -1).all()


def test_popularity_ranks_by_count_and_the_window_counts_only_recent_events(toy):
    ds = toy.dataset
    log = toy.split.part(ds, "train")
    counts = np.bincount(log.item, minlength=ds.n_items)
    pop = PopularityRetriever(log, ds.n_items)
    got = pop.retrieve(_requests(toy, [None]), 5)
    assert got.items[0].tolist() == np.argsort(-counts, kind="stable")[:5].tolist()
    assert got.sources == ("popular",)

    now = int(log.timestamp.max()) + 1
    window = 60 * 50
    trending = PopularityRetriever(log, ds.n_items, window_seconds=window)
    recent = log.item[(log.timestamp >= now - window) & (log.timestamp < now)]
    np.testing.assert_array_equal(trending.counts(), np.bincount(recent, minlength=ds.n_items))
    assert trending.counts(now - 10 * window).sum() < len(log)
    got = trending.retrieve(_requests(toy, ["u00"]), 5)
    seen = set(_requests(toy, ["u00"]).seen[0].indices.tolist())
    assert got.sources == ("trending",) and not seen & set(got.items[0].tolist())


def test_top_stable_is_the_prefix_of_a_stable_descending_sort():
    from recfunnel.funnel.retrievers import top_stable

    rng = np.random.default_rng(3)
    for size in (1, 7, 100, 1000):
        values = rng.integers(0, 5, size).astype(np.float32)  # many ties
        full = np.argsort(-values, kind="stable")
        for n in (0, 1, 2, size // 3, size - 1, size, size + 5):
            assert np.array_equal(top_stable(values, n), full[: max(0, min(n, size))]), (size, n)


def test_popularity_keeps_its_order_and_recounts_when_the_window_moves():
    from recfunnel.data.dataset import Interactions

    log = Interactions(
        user=np.zeros(6, np.int64),
        item=np.array([2, 2, 1, 0, 0, 0]),
        timestamp=np.array([10, 11, 12, 20, 21, 22]),
    )
    trending = PopularityRetriever(log, 4, window_seconds=5, exclude_seen=False)
    assert trending.top(2, now=13).tolist() == [2, 1]  # events at 10, 11, 12
    assert trending.top(3, now=13).tolist() == [2, 1, 0]
    assert trending.top(2, now=23).tolist() == [0, 1]  # events at 20-22; then ties by index
    popular = PopularityRetriever(log, 4, exclude_seen=False)
    assert popular.top(4).tolist() == [0, 2, 1, 3]
