"""Objectives: what one epoch of batches holds (positives, negatives, labels), and that it is seeded."""

import math
from collections import Counter

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from recfunnel.data.dataset import build_dataset
from recfunnel.models.mf import MF, MFConfig
from recfunnel.models.ncf import GMF, GMFConfig
from recfunnel.train.objectives import PairwiseBPR, PointwiseBCE
from recfunnel.train.registry import build_objective


@pytest.fixture(scope="module")
def data():
    """A small random dataset: 25 users with 3..12 distinct items out of 30."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(25):
        chosen = rng.choice(30, size=int(rng.integers(3, 13)), replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    ds = build_dataset("synthetic", pl.DataFrame({"user": users, "item": items}))
    return ds.interactions, ds.n_users, ds.n_items


def epoch(objective, ep, seed=0, batch_size=37):
    """All batches of one epoch concatenated, plus the batch sizes."""
    batches = list(objective.batches(ep, seed, batch_size))
    cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    return cat, [len(b["users"]) for b in batches]


def pairs(users, items):
    return Counter(zip(users.tolist(), items.tolist(), strict=True))


# ------------------------------------------------------------------------------------------
# PointwiseBCE
# ------------------------------------------------------------------------------------------


def test_bce_epoch_holds_each_positive_once_labelled_1_and_k_negatives_per_positive(data):
    train, n_users, n_items = data
    obj = PointwiseBCE(train, n_users, n_items, k=4)
    n_pos = len(train)
    assert obj.samples_per_epoch() == 5 * n_pos
    b, sizes = epoch(obj, 0)
    assert len(b["users"]) == 5 * n_pos
    assert all(s <= 37 for s in sizes) and len(sizes) == math.ceil(5 * n_pos / 37)
    assert b["users"].dtype == torch.int64 and b["items"].dtype == torch.int64
    assert b["labels"].dtype == torch.float32
    assert set(b["labels"].unique().tolist()) == {0.0, 1.0}
    is_pos = b["labels"] == 1
    assert int(is_pos.sum()) == n_pos
    # the label-1 rows are exactly the training pairs
    assert pairs(b["users"][is_pos], b["items"][is_pos]) == pairs(train.user, train.item)
    # every user gets k negatives per positive
    neg_users = Counter(b["users"][~is_pos].tolist())
    assert neg_users == Counter({u: 4 * c for u, c in Counter(train.user.tolist()).items()})


def test_bce_negatives_are_never_training_positives(data):
    train, n_users, n_items = data
    obj = PointwiseBCE(train, n_users, n_items, k=4)
    positives = set(zip(train.user.tolist(), train.item.tolist(), strict=True))
    for ep in range(3):
        b, _ = epoch(obj, ep)
        neg = b["labels"] == 0
        assert not any(p in positives for p in pairs(b["users"][neg], b["items"][neg]))
        assert int(b["items"].max()) < n_items and int(b["items"].min()) >= 0


def test_bce_same_seed_and_epoch_give_the_same_batches_and_other_epochs_other_negatives(data):
    train, n_users, n_items = data
    obj = PointwiseBCE(train, n_users, n_items, k=4)
    first = list(obj.batches(2, 5, 64))
    again = list(PointwiseBCE(train, n_users, n_items, k=4).batches(2, 5, 64))
    assert len(first) == len(again)
    for x, y in zip(first, again, strict=True):
        for key in ("users", "items", "labels"):
            assert torch.equal(x[key], y[key])
    b2, _ = epoch(obj, 2, seed=5)
    b3, _ = epoch(obj, 3, seed=5)
    neg2 = pairs(b2["users"][b2["labels"] == 0], b2["items"][b2["labels"] == 0])
    neg3 = pairs(b3["users"][b3["labels"] == 0], b3["items"][b3["labels"] == 0])
    assert neg2 != neg3
    other_seed, _ = epoch(obj, 2, seed=6)
    assert not torch.equal(other_seed["items"], b2["items"])


def test_bce_batches_are_shuffled_not_positives_first(data):
    train, n_users, n_items = data
    b, _ = epoch(PointwiseBCE(train, n_users, n_items, k=4), 0)
    labels = b["labels"].numpy()
    assert labels[: len(train)].mean() < 0.5  # a positives-first order would give 1.0


def test_bce_loss_is_binary_cross_entropy_of_the_model_logits(data):
    train, n_users, n_items = data
    torch.manual_seed(0)
    model = GMF(GMFConfig(factors=4), n_users, n_items)
    obj = PointwiseBCE(train, n_users, n_items, k=2)
    batch = next(iter(obj.batches(0, 0, 50)))
    loss = obj.loss(model, batch)
    logits = torch.stack(
        [
            model.score(u.view(1), i.view(1, 1))[0, 0]
            for u, i in zip(batch["users"], batch["items"], strict=True)
        ]
    )
    assert loss.ndim == 0
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, batch["labels"]), atol=1e-6)
    loss.backward()
    assert model.out.weight.grad is not None


# ------------------------------------------------------------------------------------------
# PairwiseBPR
# ------------------------------------------------------------------------------------------


def test_bpr_epoch_pairs_each_positive_once_with_one_non_positive_negative(data):
    train, n_users, n_items = data
    obj = PairwiseBPR(train, n_users, n_items)
    assert obj.samples_per_epoch() == len(train)
    b, sizes = epoch(obj, 0, batch_size=16)
    assert len(sizes) == math.ceil(len(train) / 16)
    assert pairs(b["users"], b["items"]) == pairs(train.user, train.item)
    positives = set(zip(train.user.tolist(), train.item.tolist(), strict=True))
    assert not any(p in positives for p in zip(b["users"].tolist(), b["negatives"].tolist(), strict=True))


def test_bpr_same_seed_and_epoch_give_the_same_batches_and_other_epochs_differ(data):
    train, n_users, n_items = data
    obj = PairwiseBPR(train, n_users, n_items)
    a, _ = epoch(obj, 1, seed=3)
    b, _ = epoch(PairwiseBPR(train, n_users, n_items), 1, seed=3)
    c, _ = epoch(obj, 2, seed=3)
    for key in ("users", "items", "negatives"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["negatives"], c["negatives"])
    assert not torch.equal(a["users"], c["users"])  # order is reshuffled per epoch


def test_bpr_loss_adds_reg_times_the_model_regulariser(data):
    train, n_users, n_items = data
    torch.manual_seed(0)
    model = MF(MFConfig(factors=4, init_std=0.5), n_users, n_items)
    batch = next(iter(PairwiseBPR(train, n_users, n_items).batches(0, 0, 32)))
    plain = PairwiseBPR(train, n_users, n_items, reg=0.0).loss(model, batch)
    reg = PairwiseBPR(train, n_users, n_items, reg=0.1).loss(model, batch)
    items = torch.stack([batch["items"], batch["negatives"]], dim=1)
    x = model.score(batch["users"], items)
    assert torch.allclose(plain, -F.logsigmoid(x[:, 0] - x[:, 1]).mean(), atol=1e-6)
    assert torch.allclose(reg - plain, 0.1 * model.regulariser(batch["users"], items), atol=1e-6)


def test_build_objective_by_name_and_unknown_names_list_the_valid_ones(data):
    train, n_users, n_items = data
    assert isinstance(build_objective("bce", train, n_users, n_items, k=2), PointwiseBCE)
    assert isinstance(build_objective("bpr", train, n_users, n_items), PairwiseBPR)
    with pytest.raises(ValueError, match="bce, bpr"):
        build_objective("hinge", train, n_users, n_items)
