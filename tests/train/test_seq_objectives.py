"""Sequence objectives: the sampled softmax (uniform or popularity negatives, logQ correction)
against a direct computation, its sampling distribution, and that with many negatives it estimates
the full softmax cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from recfunnel.data.dataset import build_dataset
from recfunnel.models.base import build_model
from recfunnel.train.registry import build_objective


@pytest.fixture(scope="module")
def data():
    """40 users with 3..15 time-ordered items out of 25, item popularity skewed (Zipf-like)."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, 26)
    p /= p.sum()
    users, items = [], []
    for u in range(40):
        n = int(rng.integers(3, 16))
        users += [u] * n
        items += rng.choice(25, size=n, p=p).tolist()
    ds = build_dataset("synthetic", pl.DataFrame({"user": users, "item": items}))
    return ds.interactions, ds.n_users, ds.n_items


def _model(n_users: int, n_items: int):
    torch.manual_seed(0)
    return build_model("sasrec", n_users, n_items, {"hidden": 8, "max_len": 10, "dropout": 0.0}).eval()


def _direct(model, obj, batch) -> torch.Tensor:
    """Mean over real positions of -r_t + log(exp(r_t) + sum_j exp(r_j - c_j)), hits excluded,
    written out one position at a time."""
    h, targets, _ = obj.states(model, batch)
    table = model.output_table()
    negs = batch["negatives"]
    losses = []
    for n in range(len(h)):
        pos = h[n] @ table[targets[n]]
        terms = [pos]
        for j in negs.tolist():
            if j == int(targets[n]):
                continue  # an accidental hit is not a negative
            c = math.log(obj.k * float(obj.q[j - 1])) if obj.logq else 0.0
            terms.append(h[n] @ table[j] - c)
        losses.append(torch.logsumexp(torch.stack(terms), 0) - pos)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
@pytest.mark.parametrize("logq", [False, True])
def test_sampled_ce_loss_equals_a_direct_computation(data, sampling, logq):
    train, n_users, n_items = data
    obj = build_objective(
        "seq-sampled-ce", train, n_users, n_items, max_len=10, negatives=12, sampling=sampling, logq=logq
    )
    obj.q = torch.exp(obj.log_kq[1:].double()) / obj.k  # the sampling distribution, for _direct
    model = _model(n_users, n_items)
    batch = next(iter(obj.batches(0, 0, 8)))
    torch.testing.assert_close(obj.loss(model, batch), _direct(model, obj, batch), rtol=1e-5, atol=1e-6)


def test_sampled_ce_without_logq_is_the_cross_entropy_it_was(data):
    train, n_users, n_items = data
    obj = build_objective("seq-sampled-ce", train, n_users, n_items, max_len=10, negatives=12)
    model = _model(n_users, n_items)
    batch = next(iter(obj.batches(0, 0, 8)))
    pos, neg = obj.scores(model, batch)
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    want = F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))
    torch.testing.assert_close(obj.loss(model, batch), want)


def test_popularity_negatives_follow_training_target_counts_plus_one(data):
    train, n_users, n_items = data
    obj = build_objective(
        "seq-sampled-ce",
        train,
        n_users,
        n_items,
        max_len=10,
        negatives=4000,
        sampling="popularity",
        alpha=1.0,
    )
    counts = torch.bincount(obj.windows.targets.flatten(), minlength=n_items + 1)[1:].double()
    want = (counts + 1) / (counts + 1).sum()
    draws = torch.cat([b["negatives"] for b in obj.batches(0, 0, 4)])
    got = torch.bincount(draws - 1, minlength=n_items).double() / len(draws)
    assert int(draws.min()) >= 1 and int(draws.max()) <= n_items  # shifted item indices
    torch.testing.assert_close(got, want, rtol=0, atol=0.01)
    torch.testing.assert_close(torch.exp(obj.log_kq[1:].double()) / obj.k, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_sampled_ce_with_logq_and_many_negatives_estimates_the_full_softmax_ce(data, sampling):
    train, n_users, n_items = data
    full = build_objective("seq-ce", train, n_users, n_items, max_len=10)
    obj = build_objective(
        "seq-sampled-ce", train, n_users, n_items, max_len=10, negatives=200_000, sampling=sampling, logq=True
    )
    model = _model(n_users, n_items)
    batch = next(iter(obj.batches(0, 0, 16)))
    with torch.no_grad():
        got = obj.loss(model, batch)
        want = full.loss(model, {k: batch[k] for k in ("inputs", "targets")})
        no_logq = build_objective(
            "seq-sampled-ce", train, n_users, n_items, max_len=10, negatives=200_000, sampling=sampling
        ).loss(model, batch)
    assert float(got) == pytest.approx(float(want), rel=0.01)
    assert abs(float(no_logq) - float(want)) > 1.0  # uncorrected, K copies inflate the sum


def test_sampling_must_be_uniform_or_popularity(data):
    train, n_users, n_items = data
    with pytest.raises(ValueError, match="uniform"):
        build_objective("seq-sampled-ce", train, n_users, n_items, max_len=10, sampling="zipf")


def test_sampled_ce_gradient_is_finite_when_every_negative_is_the_target(data):
    train, n_users, n_items = data
    obj = build_objective("seq-sampled-ce", train, n_users, n_items, max_len=10, negatives=3, logq=True)
    model = _model(n_users, n_items).train()
    batch = next(iter(obj.batches(0, 0, 1)))
    target = int(batch["targets"][0, -1])
    batch = {k: v[:, -1:] if k != "negatives" else torch.full_like(v, target) for k, v in batch.items()}
    loss = obj.loss(model, batch)
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _reference_sampled_ce(obj, model, batch) -> torch.Tensor:
    """The sampled softmax as it was written before the fused path: every draw scored (duplicates
    included), hits masked in the [N, K] block, logsumexp by autograd."""
    shift = obj.log_kq[batch["negatives"]] if obj.logq else None
    pos, neg = obj.scores(model, batch, shift, torch.finfo(torch.float32).min)
    return obj.reduce(torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos)


@pytest.mark.parametrize("family", ["sasrec", "gru4rec"])  # gru4rec: an output bias
@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("bucket", [False, True])
def test_fused_sampled_ce_matches_the_reference_in_loss_and_gradient(data, family, logq, bucket):
    """Distinct negatives with log(count) added and the fused autograd function give the loss and
    every parameter gradient of scoring each draw (many duplicates: 40 draws over 25 items)."""
    train, n_users, n_items = data
    obj = build_objective(
        "seq-sampled-ce",
        train,
        n_users,
        n_items,
        max_len=10,
        negatives=40,
        sampling="popularity",
        logq=logq,
        bucket=bucket,
    )
    torch.manual_seed(0)
    params = {"hidden": 8, "max_len": 10} | ({"dropout": 0.0} if family == "sasrec" else {})
    model = build_model(family, n_users, n_items, params).eval()
    if family == "gru4rec":
        with torch.no_grad():
            model.output_bias().normal_()
    for batch in list(obj.batches(0, 0, 8))[:3]:
        assert len(torch.unique(batch["negatives"])) < len(batch["negatives"])  # duplicates drawn
        model.zero_grad()
        got = obj.loss(model, batch)
        got.backward()
        got_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        want = _reference_sampled_ce(obj, model, batch)
        want.backward()
        want_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert len(got_grads) == len(want_grads)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_sampled_softmax_ce_matches_a_direct_logsumexp_in_value_and_gradient():
    """The fused function (hits left out) against autograd of the written-out formula, float64,
    with a non-uniform upstream gradient (its backward reuses its buffer, so no gradcheck)."""
    from recfunnel.train.seq_objectives import sampled_softmax_ce

    torch.manual_seed(0)
    leaves = [torch.randn(*s, dtype=torch.float64) for s in ((5, 3), (4, 3), (4,), (5,))]
    rows, cols = torch.tensor([0, 3, 4]), torch.tensor([2, 0, 0])
    upstream = torch.rand(5, dtype=torch.float64)

    def run(fused: bool):
        h, w, off, pos = (t.clone().requires_grad_() for t in leaves)
        if fused:
            out = sampled_softmax_ce(h, w, off, pos, rows, cols)
        else:
            logits = (h @ w.T + off).index_put((rows, cols), torch.tensor(float("-inf"), dtype=torch.float64))
            out = torch.logsumexp(torch.cat([pos.unsqueeze(1), logits], 1), 1) - pos
        (out * upstream).sum().backward()
        return out.detach(), [t.grad for t in (h, w, off, pos)]

    got, got_grads = run(True)
    want, want_grads = run(False)
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", ["seq-ce", "seq-sampled-ce"])
def test_fused_softmax_losses_train_under_bf16_autocast(data, name):
    """The fused functions run their own backward, so under the Trainer's bf16 autocast they take
    fp32 copies of their inputs: the loss and the gradients come back finite and close to fp32."""
    train, n_users, n_items = data
    obj = build_objective(
        name, train, n_users, n_items, max_len=10, **({"negatives": 30} if "sampled" in name else {})
    )
    model = _model(n_users, n_items)
    batch = next(iter(obj.batches(0, 0, 8)))
    want = obj.loss(model, batch)
    want.backward()
    want_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = obj.loss(model, batch)
    got.backward()
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=0.05)
    got_grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert g.dtype == torch.float32 and torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=0.1, atol=0.02)
