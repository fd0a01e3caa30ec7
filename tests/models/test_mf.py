"""MF trained with BPR: the model contract, plus its scoring rule and regulariser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from contract import ModelContract

from recfunnel.data.dataset import Interactions
from recfunnel.models.base import build_model
from recfunnel.models.mf import MF, MFConfig
from recfunnel.train.registry import build_objective


class TestMF(ModelContract):
    family = "mf"
    params = {"factors": 32}
    train = {"epochs": 8, "batch_size": 1024, "lr": 0.01}
    objective = {"reg": 0.01}
    factorised = True


def _mf(n_users: int = 5, n_items: int = 9, **params) -> MF:
    torch.manual_seed(0)
    model = build_model("mf", n_users, n_items, {"factors": 4, **params})
    with torch.no_grad():
        model.item_bias.weight.normal_()  # non-zero biases, so every term is checked
        model.user_emb.weight.normal_()
        model.item_emb.weight.normal_()
    return model


def test_defaults_and_trained_by_bpr():
    assert MFConfig() == MFConfig(factors=MFConfig().factors, init_std=0.01, sparse="auto")
    assert MF.objective == "bpr" and MF.trainable


def test_score_is_dot_product_plus_item_bias():
    model = _mf()
    users, items = torch.tensor([0, 4]), torch.tensor([[1, 8, 1], [0, 2, 3]])
    p, q, b = model.user_emb.weight, model.item_emb.weight, model.item_bias.weight[:, 0]
    rows = [[p[u] @ q[i] + b[i] for i in row] for u, row in zip(users, items, strict=True)]
    expected = torch.stack([torch.stack(r) for r in rows])
    torch.testing.assert_close(model.score(users, items), expected)
    torch.testing.assert_close(model.score_all(users), p[users] @ q.T + b)


def test_regulariser_is_mean_squared_norm_of_the_rows_a_batch_touches():
    model = _mf()
    users, items = torch.tensor([0, 2, 2]), torch.tensor([[1, 3], [4, 4], [0, 8]])
    p, q = model.user_emb.weight, model.item_emb.weight
    expected = (p[users] ** 2).sum(-1).mean() + (q[items] ** 2).sum(-1).mean()
    torch.testing.assert_close(model.regulariser(users, items), expected)


def test_bpr_loss_is_minus_log_sigmoid_of_the_score_gap_plus_reg():
    model = _mf()
    train = Interactions(np.array([0, 1, 2]), np.array([3, 4, 5]))
    batch = {"users": torch.tensor([0, 1]), "items": torch.tensor([3, 4]), "negatives": torch.tensor([7, 0])}
    items = torch.stack([batch["items"], batch["negatives"]], dim=1)
    x = model.score(batch["users"], items)
    bpr = -F.logsigmoid(x[:, 0] - x[:, 1]).mean()
    plain = build_objective("bpr", train, 5, 9)
    torch.testing.assert_close(plain.loss(model, batch), bpr)
    reg = build_objective("bpr", train, 5, 9, reg=0.1)
    torch.testing.assert_close(reg.loss(model, batch), bpr + 0.1 * model.regulariser(batch["users"], items))


def test_sparse_config_gives_sparse_embedding_gradients():
    for sparse in (True, False):
        model = _mf(sparse=sparse)
        model.score(torch.tensor([0]), torch.tensor([[1, 2]])).sum().backward()
        assert model.user_emb.weight.grad.is_sparse is sparse
        assert model.item_emb.weight.grad.is_sparse is sparse


def test_sparse_auto_chooses_by_table_size():
    from recfunnel.models.base import SPARSE_MIN_PARAMS
    from recfunnel.models.mf import MF

    small = MF(MFConfig(factors=8, sparse="auto"), 100, 200)
    assert not small.user_emb.sparse and not small.item_emb.sparse and not small.item_bias.sparse
    rows = SPARSE_MIN_PARAMS // 8
    mixed = MF(MFConfig(factors=8, sparse="auto"), 100, rows)  # a big item table, a small user table
    assert mixed.item_emb.sparse and mixed.item_bias.sparse and not mixed.user_emb.sparse
    assert not MF(MFConfig(factors=8), 100, 200).user_emb.sparse  # the default: "auto"


# ---- the closed-form BPR step -------------------------------------------------------------------
def _autograd_step(model, users, items, negatives, reg):
    pair = torch.stack([items, negatives], 1)
    x = model.score(users, pair)
    loss = -F.logsigmoid(x[:, 0] - x[:, 1]).mean() + reg * model.regulariser(users, pair)
    loss.backward()
    return loss.detach()


def _grads(model):
    return {
        n: (p.grad.to_dense() if p.grad.is_sparse else p.grad)
        for n, p in model.named_parameters()
        if p.grad is not None
    }


@pytest.mark.parametrize("sparse", [False, True, "items"])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_bpr_backward_equals_autograd_loss_and_gradients_with_repeated_rows(sparse, reg):
    """Dense, sparse and mixed tables; users, positives and negatives repeat within the batch (and a
    row is both a positive and a negative); gradients of the same kind (dense / sparse) as autograd's."""
    users = torch.tensor([0, 1, 1, 4, 0, 2, 1])
    items = torch.tensor([3, 4, 3, 8, 3, 0, 5])
    negatives = torch.tensor([7, 3, 1, 0, 3, 5, 5])
    ref = _mf(sparse=sparse is True)
    ours = _mf(sparse=sparse is True)
    if sparse == "items":
        ref.item_emb.sparse = ours.item_emb.sparse = True
    want = _autograd_step(ref, users, items, negatives, reg)
    got = ours.bpr_backward(users, items, negatives, reg)
    torch.testing.assert_close(got, want)
    assert not got.requires_grad
    for name, p in ours.named_parameters():
        assert p.grad.is_sparse == dict(ref.named_parameters())[name].grad.is_sparse, name
    g_ref, g_ours = _grads(ref), _grads(ours)
    for name in g_ref:
        torch.testing.assert_close(g_ours[name], g_ref[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bpr_backward_adds_to_existing_gradients_and_skips_frozen_tables():
    users, items, negatives = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([4, 1])
    ref, ours = _mf(), _mf()
    for m in (ref, ours):
        m.item_bias.weight.requires_grad_(False)
    _autograd_step(ref, users, items, negatives, 0.05)
    _autograd_step(ref, users, items, negatives, 0.05)
    ours.bpr_backward(users, items, negatives, 0.05)
    ours.bpr_backward(users, items, negatives, 0.05)
    assert ours.item_bias.weight.grad is None
    for name, g in _grads(ref).items():
        torch.testing.assert_close(_grads(ours)[name], g, msg=name)


def test_bpr_objective_steps_mf_in_closed_form_and_other_models_through_autograd():
    train = Interactions(np.array([0, 1, 2]), np.array([3, 4, 5]))
    objective = build_objective("bpr", train, 5, 9, reg=0.1)
    batch = {
        "users": torch.tensor([0, 1, 1]),
        "items": torch.tensor([3, 4, 4]),
        "negatives": torch.tensor([7, 0, 7]),
    }
    ref, ours = _mf(), _mf()
    want = objective.loss(ref, batch)
    want.backward()
    got = objective.backward(ours, batch)
    torch.testing.assert_close(got, want.detach())
    for name, g in _grads(ref).items():
        torch.testing.assert_close(_grads(ours)[name], g, msg=name)
    gmf = build_model("gmf", 5, 9, {"factors": 4})  # no closed form: the loss is backpropagated
    loss = objective.backward(gmf, batch)
    assert not loss.requires_grad and gmf.out.weight.grad is not None


def test_a_trainer_fit_through_the_closed_form_equals_one_through_autograd():
    """Trainer + BPR: the closed-form step (objective.backward) and plain autograd (an objective
    without `backward`) train to the same weights."""
    from recfunnel.train.trainer import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    train = Interactions(rng.integers(0, 20, 300), rng.integers(0, 30, 300))
    objective = build_objective("bpr", train, 20, 30, reg=0.01)

    class AutogradOnly:
        name = objective.name
        samples_per_epoch = objective.samples_per_epoch
        batches = objective.batches
        loss = objective.loss

    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.01, progress=False)
    weights = []
    for obj in (objective, AutogradOnly()):
        model = _mf(n_users=20, n_items=30)
        Trainer(cfg).fit(model, obj)
        weights.append(model.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6, msg=k)


def test_defaults_are_the_configuration_ncf_ml100k_chose_on_valid():
    """What `recfunnel train --model mf` uses is what the suite runs (and implicit is compared with)."""
    from recfunnel.bench.ncf import ncf_entries
    from recfunnel.train.objectives import PairwiseBPR

    e = next(e for e in ncf_entries(quick=False) if e.label == "MF-BPR")
    assert MFConfig(**e.params) == MFConfig()
    assert e.train == MF.train_defaults
    assert e.objective == {"name": MF.objective, "params": MF.objective_defaults}
    assert PairwiseBPR.name == MF.objective


def test_an_interrupted_mf_bpr_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    """The closed-form step with TableAdam on dense tables, checkpointed and resumed by the Trainer."""
    from recfunnel.train.trainer import TrainConfig, Trainer

    rng = np.random.default_rng(1)
    train = Interactions(rng.integers(0, 20, 300), rng.integers(0, 30, 300))
    objective = build_objective("bpr", train, 20, 30, reg=0.01)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.01, progress=False)
    straight = _mf(n_users=20, n_items=30)
    Trainer(cfg).fit(straight, objective)
    resumed = _mf(n_users=20, n_items=30)
    Trainer(cfg).fit(resumed, objective, checkpoint_dir=tmp_path / "ckpt", max_epochs=2)
    resumed = _mf(n_users=20, n_items=30)
    Trainer(cfg).fit(resumed, objective, checkpoint_dir=tmp_path / "ckpt", resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
