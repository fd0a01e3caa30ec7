"""MF trained with BPR: the model contract, plus its scoring rule and regulariser."""

from __future__ import annotations

import numpy as np
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
    assert MFConfig() == MFConfig(factors=64, init_std=0.01, sparse=True)
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
    assert MF(MFConfig(factors=8), 100, 200).user_emb.sparse  # the default: sparse tables
