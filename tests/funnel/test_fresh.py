"""Request-time user vectors (issue 13's freshness, in the funnel): the two-tower's history field
taken from the request's recent items, so fresh events move its ANN candidates without retraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfunnel.data.sequences import split_histories
from recfunnel.funnel import ANNRetriever, Funnel
from recfunnel.models.base import RecentEncoder
from recfunnel.run import RunConfig, fit


@pytest.fixture(scope="module")
def tower(toy):
    cfg = RunConfig().updated(
        {
            "model": {
                "name": "two-tower",
                "params": {"dim": 16, "emb_dim": 8, "hidden": [16], "history_len": 5},
            },
            "features": {"preset": "ids"},
            "objective": {"name": "in-batch-softmax"},
            "train": {"epochs": 2, "progress": False, "batch_size": 64},
            "eval": {"valid_protocol": "full"},
        }
    )
    return fit(cfg, toy.dataset, toy.split, evaluate=False).model.eval()


@torch.no_grad()
def test_stored_history_reproduces_the_stored_user_vector(tower, toy):
    assert isinstance(tower, RecentEncoder)
    indptr, items = split_histories(toy.dataset, toy.split, ("train",))
    users = torch.arange(toy.dataset.n_users)
    torch.testing.assert_close(
        tower.user_vectors_from_recent(users, indptr, items), tower.user_vectors(users)
    )


@torch.no_grad()
def test_only_the_last_history_len_items_count(tower):
    users = torch.tensor([-1, -1])
    a = tower.user_vectors_from_recent(
        users, torch.tensor([0, 7, 12]), torch.tensor([9, 9, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    )
    torch.testing.assert_close(a[0], a[1])


def test_fresh_events_move_the_ann_candidates(tower, toy):
    funnel = Funnel.for_dataset([ANNRetriever(tower)], [20], dataset=toy.dataset, split=toy.split)
    base = funnel.recommend(users=["u01"], k=10)
    fresh = funnel.recommend(users=["u01"], recent_items=[["i40", "i41", "i42", "i43", "i44"]], k=10)
    assert base.item_ids != fresh.item_ids  # the history field now holds the fresh items
    assert not {"i40", "i41", "i42", "i43", "i44"} & set(fresh.item_ids[0])  # and they count as seen
    again = funnel.recommend(users=["u01"], recent_items=[[]], k=10)
    assert again.item_ids == base.item_ids  # no fresh events: the stored user vector


def test_anonymous_visitor_gets_a_tower_vector(tower, toy):
    ann = ANNRetriever(tower)
    funnel = Funnel.for_dataset([ann], [20], dataset=toy.dataset, split=toy.split)
    visits = dict(users=[None, None], recent_items=[["i01", "i02"], ["i50", "i51"]])
    res = funnel.recommend(**visits, k=5)
    assert (res.counts == 5).all() and np.isfinite(res.scores).all()
    rows, vectors = ann.query_vectors(funnel.resolve(**visits))
    assert rows.tolist() == [0, 1] and not np.allclose(vectors[0], vectors[1])
    seen = [toy.dataset.items.index(i) for i in ("i01", "i02")]
    mean = tower.item_vectors()[seen].mean(0).detach().numpy()  # not the averaging fallback
    assert not np.allclose(vectors[0], mean)


@pytest.fixture(scope="module")
def deepfm(toy):
    cfg = RunConfig().updated(
        {
            "model": {"name": "deepfm"},
            "features": {"preset": "ids"},
            "split": {"eval_negatives": 0},
            "train": {"epochs": 1, "progress": False, "monitor": "auc"},
        }
    )
    return fit(cfg, toy.dataset, toy.split, evaluate=False).model.eval()


@torch.no_grad()
def test_ranker_history_from_the_request_matches_the_log(deepfm, toy):
    """With no fresh events, the request's recent items (the stored tail) are the history the log
    gives at request time: the two paths score alike."""
    assert any(f.kind == "sequence" for f in deepfm.schema)
    from recfunnel.data.sequences import from_lists
    from recfunnel.run.scoring import candidate_scorer

    scorer = candidate_scorer(deepfm, toy.dataset, toy.split)
    users = torch.arange(6)
    items = torch.arange(12).repeat(6, 1)
    indptr, flat = split_histories(toy.dataset, toy.split, ("train", "valid"))
    lists = [flat[indptr[u] : indptr[u + 1]].tolist() for u in users.tolist()]
    torch.testing.assert_close(
        scorer.score(users, items, None, from_lists(lists)), scorer.score(users, items)
    )
    fresh = from_lists([x + [40, 41, 42] for x in lists])
    assert not torch.allclose(scorer.score(users, items, None, fresh), scorer.score(users, items))
    anon = scorer.score(torch.tensor([-1, -1]), items[:2], None, from_lists([[1, 2], [50, 51]]))
    assert not torch.allclose(anon[0], anon[1])  # an anonymous visitor's items are its history
