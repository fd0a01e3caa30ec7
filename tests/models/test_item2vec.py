"""Item2Vec: the model contract (factorised, fit through recfunnel.run, save/load, recommend,
similar_items), user vectors as the mean of the latest items, and skip-gram learning co-occurrence."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from contract import ModelContract

from recfunnel.data.dataset import build_dataset
from recfunnel.data.sequences import from_lists
from recfunnel.data.splits import leave_one_out
from recfunnel.models.base import Factorised, HistoryAware, build_model
from recfunnel.models.item2vec import Item2Vec
from recfunnel.recommender import Recommender
from recfunnel.run import RunConfig, fit


class TestItem2Vec(ModelContract):
    family = "item2vec"
    params = {"dim": 8, "recent": 5}
    train = {"batch_size": 512, "lr": 3e-3}
    objective = {"window": 3, "k": 2}
    factorised = True


def test_user_vector_is_the_mean_of_the_latest_items():
    m = build_model("item2vec", 3, 10, {"dim": 4, "recent": 2})
    assert isinstance(m, Factorised) and isinstance(m, HistoryAware)
    indptr, items = from_lists([[1, 2, 3], [], [7]])
    m.set_history(indptr, items)
    w = m.item_vectors().detach()
    u = m.user_vectors(torch.tensor([0, 1, 2])).detach()
    torch.testing.assert_close(u[0], (w[2] + w[3]) / 2)
    torch.testing.assert_close(u[1], torch.zeros(4))
    torch.testing.assert_close(u[2], w[7])
    torch.testing.assert_close(m.user_vectors(torch.tensor([2, 0])).detach(), u[[2, 0]])
    torch.testing.assert_close(m.encode_items(*from_lists([[2, 3]])).detach(), u[:1])
    with torch.no_grad():
        torch.testing.assert_close(m.score_all(torch.tensor([0, 2])), u[[0, 2]] @ w.T)
    state = m.state_dict()
    assert torch.equal(state["hist_items"], items)


def test_skip_gram_places_co_occurring_items_together():
    """Each user consumes items of one of 4 groups (5 items each): every item's nearest neighbour
    by item vector is in its own group."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(200):
        group = u % 4
        for t, item in enumerate(rng.choice(5, size=4, replace=False) + 5 * group):
            rows.append((u, int(item), t))
    frame = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    ds = build_dataset("groups", frame)
    split = leave_one_out(ds)
    cfg = RunConfig.model_validate(
        {
            "model": {"name": "item2vec", "params": {"dim": 16}},
            "objective": {"params": {"window": 3, "k": 5}},
            "train": {"epochs": 20, "batch_size": 256, "lr": 0.02, "patience": 0, "progress": False},
        }
    )
    res = fit(cfg, ds, split, evaluate=False)
    assert isinstance(res.model, Item2Vec) and res.objective.name == "sgns"
    rec = Recommender("item2vec", {"dim": 16}, cfg.train, run=cfg).fit(ds, split)
    assert torch.equal(rec.model_.item_vectors(), res.model.item_vectors())  # the same door
    ids, _ = rec.similar_items([str(i) for i in range(20)], k=1)
    hits = sum(int(a[0]) // 5 == i // 5 for i, a in enumerate(ids))
    assert hits >= 18
