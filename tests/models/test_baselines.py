"""Popularity and EASE: the model contract, plus each one's defining computation."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from contract import ModelContract, seen_raw

from recfunnel.models.base import build_model
from recfunnel.models.baselines import MEMORY_ENV, EASEMemoryError, check_ease_memory


class TestPopularity(ModelContract):
    family = "popularity"
    beats_popularity = False  # it is the reference

    def test_scores_are_training_interaction_counts(self, fitted):
        ds, split = fitted.dataset, fitted.data.split
        train = split.part(ds, "train").matrix(ds.n_users, ds.n_items)
        counts = torch.from_numpy(np.asarray(train.sum(axis=0)).ravel().astype(np.float32))
        users = torch.arange(ds.n_users)
        assert torch.equal(fitted.model.score_all(users), counts.expand(ds.n_users, -1))
        items = torch.tensor([[0, 5, 9], [ds.n_items - 1, 3, 3]])
        assert torch.equal(fitted.model.score(users[:2], items), counts[items])

    def test_recommends_the_most_popular_unseen_items(self, fitted):
        ds = fitted.dataset
        seen = seen_raw(fitted.data)
        counts = fitted.model.counts.numpy()
        k = 10
        users = list(ds.users.ids[:40])
        ids, scores = fitted.rec.recommend(users, k=k)
        for user, row, row_scores in zip(users, ids, scores, strict=True):
            unseen = np.array([i not in seen[user] for i in ds.items.ids])
            best = np.sort(counts[unseen])[::-1][:k]
            np.testing.assert_array_equal(row_scores, best)  # ties may be broken either way
            np.testing.assert_array_equal(counts[ds.items.encode(row)], best)


class TestEASE(ModelContract):
    family = "ease"
    has_similar_items = True  # via its item-item weights

    def test_closed_form_matches_eq_8_computed_directly(self):
        rng = np.random.default_rng(0)
        x = (rng.random((12, 7)) < 0.4).astype(np.float64)
        x[0, :] = 0.0  # a user with no history scores 0 everywhere
        lam = 3.0
        model = build_model("ease", 12, 7, {"l2": lam})
        model.fit_matrix(sp.csr_matrix(x.astype(np.float32)))

        # Steck (2019) eq. 8: B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1.
        p = np.linalg.inv(x.T @ x + lam * np.eye(7))
        b = np.eye(7) - p @ np.diag(1.0 / np.diag(p))
        weights = model.weights.double().numpy()
        np.testing.assert_allclose(weights, b, rtol=1e-5, atol=1e-6)
        assert (np.diag(weights) == 0).all()
        # B is the constrained least-squares optimum: the gradient of ||X - XB||^2 + lambda ||B||^2,
        # (X^T X + lambda I) B - X^T X, vanishes off the diagonal (the diag(B) = 0 constraint).
        grad = (x.T @ x + lam * np.eye(7)) @ b - x.T @ x
        np.testing.assert_allclose(grad - np.diag(np.diag(grad)), 0.0, atol=1e-9)

        users = torch.arange(12)
        np.testing.assert_allclose(model.score_all(users).double().numpy(), x @ b, rtol=1e-5, atol=1e-5)
        assert torch.equal(model.score_all(users)[0], torch.zeros(7))
        items = torch.tensor([[6, 0, 2]]).expand(12, -1)
        torch.testing.assert_close(model.score(users, items), model.score_all(users).gather(1, items))

    def test_fitted_weights_have_a_zero_diagonal(self, fitted):
        assert torch.equal(torch.diagonal(fitted.model.weights), torch.zeros(fitted.model.n_items))

    @pytest.mark.parametrize("l2", [250.0, 2.0])
    def test_in_place_float32_fit_matches_the_float64_inverse_it_replaced(self, l2):
        # the fit before issue 14 (float64 Gram, np.linalg.inv): the same weights within 1e-4
        rng = np.random.default_rng(1)
        pop = 1.0 / (np.arange(150) + 5.0)
        x = (rng.random((400, 150)) < 0.6 * pop / pop.mean() * 0.08).astype(np.float32)
        train = sp.csr_matrix(x)
        xd = train.astype(np.float64)
        g = (xd.T @ xd).toarray()
        g[np.diag_indices_from(g)] += l2
        p = np.linalg.inv(g)
        before = -p / np.diag(p)
        np.fill_diagonal(before, 0.0)

        model = build_model("ease", 400, 150, {"l2": l2})
        buffer = model.weights.data_ptr()
        model.fit_matrix(train)
        assert model.weights.data_ptr() == buffer  # fitted in the buffer __init__ allocated
        assert model.weights.dtype == torch.float32 and model.weights.is_contiguous()
        np.testing.assert_allclose(model.weights.double().numpy(), before, rtol=0, atol=1e-4)
        users = torch.arange(400)
        np.testing.assert_allclose(model.score_all(users).double().numpy(), x @ before, rtol=0, atol=1e-4)
        model.fit_matrix(train)  # a refit overwrites the same buffer with the same weights
        np.testing.assert_allclose(model.weights.double().numpy(), before, rtol=0, atol=1e-4)

    def test_a_catalogue_that_would_not_fit_raises_before_allocating(self, monkeypatch):
        monkeypatch.setenv(MEMORY_ENV, "8G")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(EASEMemoryError) as err:  # 3M items: a 32.7 TiB dense matrix
            build_model("ease", 10, 3_000_000)
        msg = str(err.value)
        assert "EASE on 3,000,000 items needs 32.7 TiB" in msg, msg
        assert "3,000,000 x 3,000,000 float32 item-item matrix (32.7 TiB)" in msg
        assert f"8.0 GiB available ({MEMORY_ENV}=8G)" in msg and f"set {MEMORY_ENV}" in msg
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50 * 1024  # KiB: nothing big
        assert isinstance(err.value, MemoryError)

    @pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="MemAvailable is read on Linux")
    def test_the_available_memory_is_memavailable_unless_overridden(self, monkeypatch):
        monkeypatch.delenv(MEMORY_ENV, raising=False)
        with pytest.raises(EASEMemoryError, match=r"available \(MemAvailable in /proc/meminfo\)"):
            check_ease_memory(10_000_000)  # 364 TiB
        check_ease_memory(100)
        monkeypatch.setenv(MEMORY_ENV, "400T")  # the override lets a catalogue through
        check_ease_memory(10_000_000)
        monkeypatch.setenv(MEMORY_ENV, "lots")
        with pytest.raises(EASEMemoryError, match="is not a size"):
            check_ease_memory(100)

    def test_the_fit_checks_its_working_memory_before_touching_the_weights(self, monkeypatch):
        model = build_model("ease", 50, 300, {"l2": 10.0})
        train = sp.random(50, 300, density=0.1, format="csr", dtype=np.float32, random_state=0)
        monkeypatch.setenv(MEMORY_ENV, "100K")
        with pytest.raises(EASEMemoryError, match="EASE on 300 items needs"):
            model.fit_matrix(train)
        assert not model.weights.any()
        monkeypatch.setenv(MEMORY_ENV, "1G")
        model.fit_matrix(train)
        assert model.weights.any()
