"""Popularity and EASE: the model contract, plus each one's defining computation."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from contract import ModelContract, seen_raw

from recfunnel.models.base import build_model


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
