"""iALS: the model contract, the batched solves against a per-user reference, fold-in at request time,
confidence from weights, and `data.values` reaching the matrix families through run.fit."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from contract import ModelContract

from recfunnel.data.dataset import build_dataset
from recfunnel.data.splits import ratio
from recfunnel.errors import ConfigError
from recfunnel.models.base import Factorised, RecentEncoder, build_model
from recfunnel.models.ials import IALSConfig, SideMatrix, confidence, solve_side
from recfunnel.run import RunConfig, fit


class TestIALS(ModelContract):
    family = "ials"
    params = {"factors": 8, "iterations": 4}
    factorised = True


def counts_matrix(n_users: int = 40, n_items: int = 25, seed: int = 0) -> sp.csr_matrix:
    """A small user x item matrix of play counts (1-20), about 30% dense, every user with items."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.3) * rng.integers(1, 21, (n_users, n_items))
    x[:, 0] = np.maximum(x[:, 0], 1)
    return sp.csr_matrix(x.astype(np.float32))


def reference_solve(m: sp.csr_matrix, y: np.ndarray, cfg: IALSConfig) -> np.ndarray:
    """HKV eq. 4 one user at a time, with dense C^u and p(u)."""
    out = []
    for row in m.toarray():
        observed = row > 0
        c = np.ones(len(row))
        c[observed] = confidence(torch.from_numpy(row[observed]).double(), cfg).numpy()
        lam = cfg.reg * (len(row) + (c - 1).sum()) ** cfg.reg_exponent
        a = y.T @ (c[:, None] * y) + lam * np.eye(y.shape[1])
        out.append(np.linalg.solve(a, y.T @ (c * observed)))
    return np.array(out)


@pytest.mark.parametrize(
    "settings",
    [
        {"solver": "cholesky"},
        {"solver": "cholesky", "confidence": "log", "eps": 2.0, "reg_exponent": 1.0},
        {"solver": "cg", "cg_steps": 30, "reg_exponent": 0.5},  # CG is exact after d steps
    ],
)
def test_batched_solves_match_a_per_user_reference_solve(settings):
    m = counts_matrix()
    cfg = IALSConfig(factors=5, reg=0.3, alpha=0.7, **settings)
    y = torch.randn(m.shape[1], 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    side = SideMatrix.from_scipy(m, cfg, dtype=torch.float64)
    x = solve_side(side, y, torch.zeros(m.shape[0], 5, dtype=torch.float64), cfg)
    np.testing.assert_allclose(x.numpy(), reference_solve(m, y.numpy(), cfg), rtol=1e-7, atol=1e-9)


def test_confidence_is_linear_or_logarithmic_in_the_value():
    v = torch.tensor([1.0, 4.0, 9.0])
    lin = confidence(v, IALSConfig(alpha=2.0))
    log = confidence(v, IALSConfig(alpha=2.0, confidence="log", eps=0.5))
    torch.testing.assert_close(lin, 1 + 2 * v)
    torch.testing.assert_close(log, 1 + 2 * torch.log(1 + v / 0.5))


def weighted_loss(model, m: sp.csr_matrix, reg: float) -> float:
    """HKV eq. 3 with alpha 1, linear confidence and a constant lambda."""
    u, v = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    x = m.toarray()
    err = ((1 + x) * ((x > 0) - u @ v.T) ** 2).sum()
    return float(err + reg * ((u**2).sum() + (v**2).sum()))


def test_fit_lowers_the_weighted_loss_every_sweep_and_a_user_without_items_scores_zero():
    m = counts_matrix()
    m = sp.vstack([m, sp.csr_matrix((1, m.shape[1]), dtype=np.float32)]).tocsr()
    losses = []
    for iterations in (1, 2, 4, 8):
        torch.manual_seed(0)
        model = build_model("ials", *m.shape, {"factors": 6, "iterations": iterations, "reg": 0.5})
        model.fit_matrix(m)
        losses.append(weighted_loss(model, m, 0.5))
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False)), losses
    assert torch.equal(model.user_vectors(torch.tensor([m.shape[0] - 1])), torch.zeros(1, 6))


def test_fold_in_of_a_training_users_items_gives_their_trained_vector_after_convergence():
    m = counts_matrix()
    m.data[:] = 1.0
    torch.manual_seed(0)
    model = build_model("ials", *m.shape, {"factors": 6, "iterations": 200, "reg": 0.5, "alpha": 3.0})
    model.fit_matrix(m)
    assert isinstance(model, RecentEncoder) and isinstance(model, Factorised)
    users = torch.tensor([0, 7, 39])
    rows = [m[int(u)].indices for u in users]
    indptr = torch.tensor(np.cumsum([0] + [len(r) for r in rows]))
    items = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    folded = model.user_vectors_from_recent(torch.full((3,), -1), indptr, items)
    torch.testing.assert_close(folded, model.user_vectors(users), rtol=1e-3, atol=1e-4)
    # an item listed twice counts as value 2; an empty list gives the zero vector
    twice = model.user_vectors_from_recent(torch.tensor([-1]), torch.tensor([0, 2]), torch.tensor([3, 3]))
    value_2 = model.user_vectors_from_recent(
        torch.tensor([-1]), torch.tensor([0, 1]), torch.tensor([3]), values=torch.tensor([2.0])
    )
    torch.testing.assert_close(twice, value_2)
    empty = model.user_vectors_from_recent(
        torch.tensor([-1]), torch.tensor([0, 0]), torch.tensor([], dtype=torch.long)
    )
    assert torch.equal(empty, torch.zeros(1, 6))


def test_weights_raise_the_heavily_played_items_of_a_user():
    m = counts_matrix(seed=1)
    binary = m.copy()
    binary.data[:] = 1.0
    fitted = {}
    for name, matrix in (("weights", m), ("binary", binary)):
        torch.manual_seed(0)
        model = build_model("ials", *m.shape, {"factors": 6, "iterations": 10, "reg": 0.5, "alpha": 1.0})
        model.fit_matrix(matrix)
        fitted[name] = model.score_all(torch.arange(m.shape[0])).numpy()
    assert not np.allclose(fitted["weights"], fitted["binary"])
    # per user: the correlation between an observed item's play count and its score rises with weights
    gain = []
    for u in range(m.shape[0]):
        row = m[u]
        if len(row.data) < 4 or row.data.std() == 0:
            continue
        corr = {k: np.corrcoef(row.data, s[u, row.indices])[0, 1] for k, s in fitted.items()}
        gain.append(corr["weights"] - corr["binary"])
    assert np.mean(gain) > 0.2, np.mean(gain)


def test_cg_reaches_the_loss_of_exact_solves():
    m = counts_matrix(seed=2)
    losses = {}
    for solver in ("cholesky", "cg"):
        torch.manual_seed(0)
        model = build_model("ials", *m.shape, {"factors": 6, "iterations": 30, "reg": 0.5, "solver": solver})
        model.fit_matrix(m)
        losses[solver] = weighted_loss(model, m, 0.5)
    assert losses["cg"] == pytest.approx(losses["cholesky"], rel=0.01), losses


# ---- data.values through the run door --------------------------------------------------------------


@pytest.fixture(scope="module")
def play_counts():
    """60 users x 30 items with a play-count weight column (no time: a ratio split)."""
    m = counts_matrix(60, 30, seed=3).tocoo()
    frame = pl.DataFrame({"user": m.row + 1, "item": m.col + 1, "plays": m.data.astype(np.float32)})
    ds = build_dataset("plays", frame.rename({"plays": "weight"}))
    return ds, ratio(ds, (0.7, 0.1, 0.2), seed=0)


def run(family: str, values: str, params: dict | None = None) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"values": values},
            "split": {"method": "ratio", "eval_negatives": 0},
            "model": {"name": family, "params": params or {}},
            "train": {"epochs": 1, "progress": False, "seed": 0},
            "eval": {"protocols": ("full",), "ks": (10,), "valid_protocol": "full"},
        }
    )


def test_weights_reach_ials_ease_and_the_autoencoders_when_values_is_weight(play_counts):
    ds, split = play_counts
    train = split.part(ds, "train").matrix(ds.n_users, ds.n_items, "weight")
    for family, params in (
        ("ials", {"factors": 4, "iterations": 3}),
        ("ease", {}),
        ("mult-vae", {"dims": (8,)}),
    ):
        scores = {}
        for values in ("binary", "weight"):
            res = fit(run(family, values, params), ds, split, evaluate=False)
            scores[values] = res.model.score_all(torch.arange(ds.n_users))
        assert not torch.allclose(scores["binary"], scores["weight"]), family
    res = fit(run("ease", "weight"), ds, split, evaluate=False)
    x = torch.from_numpy(train.toarray())
    torch.testing.assert_close(res.model.score_all(torch.arange(ds.n_users)), x @ res.model.weights)


def test_values_naming_a_column_the_data_lacks_is_refused_with_the_valid_choices(play_counts):
    ds, split = play_counts
    with pytest.raises(ConfigError, match=r"no rating column; valid here: 'binary', 'weight'"):
        fit(run("ials", "rating", {"factors": 4, "iterations": 1}), ds, split, evaluate=False)
