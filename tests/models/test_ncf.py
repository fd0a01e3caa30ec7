"""GMF, MLP and NeuMF (He et al. 2017): the model contract, the paper's defaults, and NeuMF's
pre-training (eq. 13)."""

from __future__ import annotations

import pytest
import torch
from contract import ModelContract
from torch import nn

from recfunnel.models.base import Factorised, build_model
from recfunnel.models.ncf import GMF, MLP, GMFConfig, MLPConfig, NeuMF, NeuMFConfig


class TestGMF(ModelContract):
    family = "gmf"
    train = {"epochs": 6, "batch_size": 1024, "lr": 0.01}
    factorised = True


class TestMLP(ModelContract):
    family = "mlp"
    train = {"epochs": 8, "batch_size": 1024, "lr": 0.01}


class TestNeuMF(ModelContract):
    family = "neumf"
    train = {"epochs": 4, "batch_size": 1024, "lr": 0.005}


N_USERS, N_ITEMS = 6, 11


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Unit-scale random weights everywhere, so that no part of a score is negligible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


def _pair(**neumf_params) -> tuple[GMF, MLP, NeuMF]:
    cfg = NeuMFConfig(**neumf_params)
    gmf = build_model("gmf", N_USERS, N_ITEMS, {"factors": cfg.factors})
    mlp = build_model("mlp", N_USERS, N_ITEMS, {"layers": cfg.layers})
    neumf = build_model("neumf", N_USERS, N_ITEMS, cfg)
    return _randomised(gmf, 1), _randomised(mlp, 2), _randomised(neumf, 3)


USERS = torch.arange(N_USERS)
ITEMS = torch.arange(N_ITEMS).expand(N_USERS, -1)


# ---- defaults: the paper's tower, the factors chosen on valid ---------------------------------
def test_mlp_tower_defaults_to_64_32_16_8_with_32_dim_embeddings():
    assert MLPConfig().layers == (64, 32, 16, 8)
    model = build_model("mlp", N_USERS, N_ITEMS)
    assert model.user_emb.embedding_dim == 32 and model.item_emb.embedding_dim == 32
    linears = [m for m in model.tower if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 8)]
    assert (model.out.in_features, model.out.out_features) == (8, 1)
    assert sum(isinstance(m, nn.ReLU) for m in model.tower) == 3


def test_gmf_and_neumf_default_to_the_32_predictive_factors_chosen_on_valid():
    assert GMFConfig().factors == 32
    cfg = NeuMFConfig()
    assert cfg.factors == 32 and cfg.layers == (64, 32, 16, 8) and cfg.dropout == 0.0
    assert cfg.sparse == GMFConfig().sparse == MLPConfig().sparse == "auto"
    model = build_model("neumf", N_USERS, N_ITEMS)
    assert model.gmf.user_emb.embedding_dim == 32 and model.mlp.user_emb.embedding_dim == 32
    assert model.out.in_features == 32 + 8
    assert not hasattr(model.gmf, "out") and not hasattr(model.mlp, "out")  # one shared output layer
    assert not model.gmf.user_emb.sparse  # small tables: dense (sparse="auto")


def test_mlp_rejects_an_odd_first_layer():
    with pytest.raises(ValueError, match="even"):
        build_model("mlp", N_USERS, N_ITEMS, {"layers": (33, 8)})


def test_gmf_is_h_dot_elementwise_product_and_factorises_with_h_folded_into_users():
    gmf = _randomised(build_model("gmf", N_USERS, N_ITEMS), 0)
    p, q = gmf.user_emb.weight, gmf.item_emb.weight
    h, b = gmf.out.weight[0], gmf.out.bias
    with torch.no_grad():
        expected = torch.einsum("ud,id,d->ui", p, q, h) + b
        torch.testing.assert_close(gmf.score(USERS, ITEMS), expected)
        torch.testing.assert_close(gmf.score_all(USERS), expected)


def test_dropout_is_active_in_training_only():
    mlp = _randomised(build_model("mlp", N_USERS, N_ITEMS, {"dropout": 0.5}), 0)
    with torch.no_grad():
        first, second = mlp.score(USERS, ITEMS), mlp.score(USERS, ITEMS)
        assert torch.equal(first, second)  # eval mode: deterministic
        mlp.train()
        assert not torch.equal(mlp.score(USERS, ITEMS), first)


# ---- NeuMF pre-training (eq. 13) ----------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5, 0.3])
def test_pretrained_neumf_is_alpha_gmf_plus_one_minus_alpha_mlp(alpha):
    """NeuMF's output layer over [GMF vector, MLP vector] starts as [alpha h_gmf, (1 - alpha) h_mlp]
    (bias likewise), and the output is linear, so NeuMF = alpha GMF + (1 - alpha) MLP exactly:
    alpha = 1 zeroes the MLP half of the output weights and NeuMF scores as GMF does."""
    gmf, mlp, neumf = _pair()
    neumf.load_pretrained(gmf, mlp, alpha)
    with torch.no_grad():
        expected = alpha * gmf.score(USERS, ITEMS) + (1 - alpha) * mlp.score(USERS, ITEMS)
        torch.testing.assert_close(neumf.score(USERS, ITEMS), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(neumf.score_all(USERS), expected, rtol=1e-5, atol=1e-5)
    if alpha == 1.0:
        assert torch.equal(neumf.out.weight[0, gmf.config.factors :], torch.zeros(8))


def test_load_pretrained_copies_weights_without_sharing_them():
    gmf, mlp, neumf = _pair(factors=4, layers=(16, 8, 4))
    gmf_before = {k: v.clone() for k, v in gmf.state_dict().items()}
    neumf.load_pretrained(gmf, mlp)
    assert torch.equal(neumf.gmf.user_emb.weight, gmf.user_emb.weight)
    assert torch.equal(neumf.mlp.item_emb.weight, mlp.item_emb.weight)
    assert torch.equal(neumf.mlp.tower[0].weight, mlp.tower[0].weight)
    with torch.no_grad():
        neumf.gmf.user_emb.weight.add_(1.0)
    for k, v in gmf.state_dict().items():
        assert torch.equal(v, gmf_before[k]), k


def test_load_pretrained_rejects_mismatched_sizes():
    gmf, mlp, _ = _pair(factors=4)
    neumf = build_model("neumf", N_USERS, N_ITEMS, {"factors": 8})
    with pytest.raises(RuntimeError):
        neumf.load_pretrained(gmf, mlp)


def test_neumf_is_not_factorised_but_gmf_is():
    assert isinstance(build_model("neumf", 2, 3), NeuMF)
    assert isinstance(build_model("gmf", 2, 3), Factorised)
    assert not isinstance(build_model("neumf", 2, 3), Factorised)
    assert not isinstance(build_model("mlp", 2, 3), Factorised)


def test_mlp_tower_starts_with_live_relus():
    """Default Linear bias init swamped the 0.01-std embeddings and killed the ReLUs (MLP then
    predicted a constant); Glorot weights + zero biases keep most of the last layer alive."""
    import torch

    from recfunnel.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", 500, 800)
    users = torch.randint(0, 500, (256,))
    items = torch.randint(0, 800, (256, 1))
    hidden = model.hidden(users, items).reshape(-1, model.config.layers[-1])
    alive = (hidden > 0).any(dim=0).float().mean()
    assert alive >= 0.75


def test_defaults_are_the_configuration_ncf_ml100k_chose_on_valid():
    """Model configs and train settings: what `recfunnel train --model X` uses is what the suite runs."""
    from recfunnel.bench.ncf import ncf_entries

    entries = {e.label: e for e in ncf_entries(quick=False)}
    for label, cls, config in (
        ("GMF", GMF, GMFConfig),
        ("MLP", MLP, MLPConfig),
        ("NeuMF", NeuMF, NeuMFConfig),
    ):
        e = entries[label]
        assert config(**e.params) == config(), label
        assert e.train == cls.train_defaults, label
        assert e.objective == {"name": "bce", "params": {"k": 4}}  # the objective's own default k


@pytest.mark.parametrize("layers", [(16,), (16, 8), (64, 32, 16, 8)])
def test_mlp_and_neumf_scores_are_the_concatenated_forms(layers):
    """The first tower layer split into user and item terms (and NeuMF's output into its GMF and MLP
    terms) computes eq. 10 / 12 on the concatenated embeddings."""
    users, items = torch.tensor([0, 4, 4]), torch.tensor([[1, 2, 3], [8, 0, 1], [8, 8, 2]])
    mlp = build_model("mlp", N_USERS, N_ITEMS, {"layers": layers})
    u = mlp.user_emb(users).unsqueeze(1).expand(-1, 3, -1)
    concat = mlp.tower(torch.cat([u, mlp.item_emb(items)], -1))
    torch.testing.assert_close(mlp.hidden(users, items), concat)
    torch.testing.assert_close(mlp.score(users, items), mlp.out(concat).squeeze(-1))
    neumf = build_model("neumf", N_USERS, N_ITEMS, {"factors": 4, "layers": layers})
    g = neumf.gmf.user_emb(users).unsqueeze(1) * neumf.gmf.item_emb(items)
    u = neumf.mlp.user_emb(users).unsqueeze(1).expand(-1, 3, -1)
    m = neumf.mlp.tower(torch.cat([u, neumf.mlp.item_emb(items)], -1))
    torch.testing.assert_close(neumf.score(users, items), neumf.out(torch.cat([g, m], -1)).squeeze(-1))
