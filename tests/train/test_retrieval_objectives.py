"""Retrieval objectives: in-batch softmax (logQ correction, extra negatives, positive masking) and
skip-gram negative sampling; batches are deterministic per (seed, epoch)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recfunnel.data.dataset import Interactions
from recfunnel.train.registry import OBJECTIVES, build_objective
from recfunnel.train.retrieval_objectives import InBatchSoftmax, SkipGramNS, item_log_q

N_USERS, N_ITEMS = 20, 30


class Dot(nn.Module):
    """A minimal factorised model: user/item tables, score = dot product."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.u = nn.Parameter(torch.randn(N_USERS, 8, generator=g))
        self.v = nn.Parameter(torch.randn(N_ITEMS, 8, generator=g))

    def user_vectors(self, users):
        return self.u[users]

    def item_vectors(self):
        return self.v

    def sgns_scores(self, centre, cand):
        return (self.v[centre].unsqueeze(1) * self.v[cand]).sum(-1)


def _train() -> Interactions:
    rng = np.random.default_rng(0)
    users = rng.integers(0, N_USERS, 300)
    items = np.minimum(rng.zipf(1.5, 300) - 1, N_ITEMS - 1)  # skewed popularity
    keys = np.unique(users * N_ITEMS + items)
    return Interactions(keys // N_ITEMS, keys % N_ITEMS, timestamp=np.arange(len(keys)))


def test_objectives_are_registered():
    assert OBJECTIVES["in-batch-softmax"] is InBatchSoftmax
    assert OBJECTIVES["sgns"] is SkipGramNS
    assert isinstance(
        build_objective("in-batch-softmax", _train(), N_USERS, N_ITEMS, logq=False), InBatchSoftmax
    )


def test_logq_is_the_log_training_share():
    train = _train()
    lq = item_log_q(train.item, N_ITEMS, smoothing=0.0)
    counts = np.bincount(train.item, minlength=N_ITEMS)
    seen = counts > 0
    np.testing.assert_allclose(np.exp(lq[seen]), counts[seen] / counts.sum(), rtol=1e-5)


def test_logq_correction_changes_logits_by_exactly_minus_log_q():
    train, model = _train(), Dot()
    on = InBatchSoftmax(train, N_USERS, N_ITEMS, logq=True)
    off = InBatchSoftmax(train, N_USERS, N_ITEMS, logq=False)
    batch = next(iter(on.batches(0, 0, 64)))
    diff = on.logits(model, batch) - off.logits(model, batch)
    finite = ~batch["mask"]
    expected = (-on.log_q[batch["items"]]).unsqueeze(0).expand_as(diff)
    torch.testing.assert_close(diff[finite], expected[finite])


def test_logq_with_extra_uniform_negatives_uses_the_mixed_sampling_probability():
    train, model = _train(), Dot()
    on = InBatchSoftmax(train, N_USERS, N_ITEMS, logq=True, extra_negatives=7)
    off = InBatchSoftmax(train, N_USERS, N_ITEMS, logq=False, extra_negatives=7)
    batch = next(iter(on.batches(3, 1, 32)))
    cand = torch.cat([batch["items"], batch["extra"]])
    lo, lf = on.logits(model, batch), off.logits(model, batch)
    assert lo.shape == (32, 32 + 7)
    q = torch.exp(on.log_q[cand])
    expected = -torch.log((32 * q + 7 / N_ITEMS) / (32 + 7))
    finite = ~batch["mask"]
    torch.testing.assert_close((lo - lf)[finite], expected.unsqueeze(0).expand_as(lo)[finite])


def test_in_batch_candidates_that_are_the_users_positives_are_masked_but_never_the_target():
    train, model = _train(), Dot()
    obj = InBatchSoftmax(train, N_USERS, N_ITEMS, extra_negatives=5)
    pos = set(zip(train.user.tolist(), train.item.tolist(), strict=True))
    for batch in obj.batches(0, 0, 50):
        cand = torch.cat([batch["items"], batch["extra"]]).tolist()
        users = batch["users"].tolist()
        mask = batch["mask"]
        for r, u in enumerate(users):
            for c, item in enumerate(cand):
                assert bool(mask[r, c]) == ((u, item) in pos and c != r)
        logits = obj.logits(model, batch)
        assert torch.isfinite(logits.diagonal()).all()
        assert torch.isfinite(obj.loss(model, batch))


def test_batches_are_deterministic_per_seed_and_epoch_and_cover_the_epoch():
    obj = InBatchSoftmax(_train(), N_USERS, N_ITEMS, extra_negatives=3)
    a = list(obj.batches(2, 5, 40))
    b = list(obj.batches(2, 5, 40))
    c = list(obj.batches(3, 5, 40))
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k])
    assert not torch.equal(a[0]["users"], c[0]["users"])
    assert sum(len(x["users"]) for x in a) == obj.samples_per_epoch()


def test_sgns_pairs_stay_within_one_user_and_the_window():
    # user 0: items 0,1,2,3 in time order; user 1: items 10, 11
    train = Interactions(
        np.array([0, 0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 10, 11]), timestamp=np.array([1, 2, 3, 4, 1, 2])
    )
    obj = SkipGramNS(train, 2, 12, window=1, k=3)
    pairs = set(zip(obj.centre.tolist(), obj.context.tolist(), strict=True))
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (10, 11), (11, 10)}
    batch = next(iter(obj.batches(0, 0, 100)))
    assert batch["negatives"].shape == (8, 3)
    assert set(batch["negatives"].unique().tolist()) <= {0, 1, 2, 3, 10, 11}  # unigram: seen items only


def test_sgns_loss_decreases_with_training():
    train = _train()
    obj = SkipGramNS(train, N_USERS, N_ITEMS, window=2, k=4)
    model = Dot()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for epoch in range(15):
        total = 0.0
        for batch in obj.batches(epoch, 0, 256):
            opt.zero_grad()
            loss = obj.loss(model, batch)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total)
    assert losses[-1] < losses[0]
