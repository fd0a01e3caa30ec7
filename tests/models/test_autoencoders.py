"""AutoRec, CDAE, Mult-DAE and Mult-VAE: the model contract, plus each one's defining computation
(the KL annealing schedule, the multinomial likelihood, corruption only while training, the
normalised input, the explicit AutoRec loss over observed entries, request-time encoding)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from contract import ModelContract

from recfunnel.data.dataset import Interactions
from recfunnel.models.autoencoders import MatrixInput
from recfunnel.models.base import Factorised, RecentEncoder, build_model
from recfunnel.train.ae_objectives import AutoRecLoss, DenoisingLogistic, MultinomialLikelihood, kl_weight
from recfunnel.train.registry import build_objective


class TestAutoRec(ModelContract):
    family = "autorec"
    params = {"hidden": 16}
    factorised = True


class TestCDAE(ModelContract):
    family = "cdae"
    params = {"hidden": 8}
    factorised = True


class TestMultDAE(ModelContract):
    family = "mult-dae"
    params = {"dims": (32, 8)}
    factorised = True


class TestMultVAE(ModelContract):
    family = "mult-vae"
    params = {"dims": (32, 8)}
    factorised = True


def matrix(n_users: int = 12, n_items: int = 9, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.4) * rng.integers(1, 6, (n_users, n_items))
    x[:, 0] = np.maximum(x[:, 0], 1)
    return sp.csr_matrix(x.astype(np.float32))


def interactions(m: sp.csr_matrix) -> Interactions:
    coo = m.tocoo()
    return Interactions(coo.row.astype(np.int64), coo.col.astype(np.int64))


def fitted(family: str, m: sp.csr_matrix, **params):
    torch.manual_seed(0)
    model = build_model(family, *m.shape, params)
    assert isinstance(model, MatrixInput)
    model.set_matrix(m)
    return model.eval()


# ---- Mult-VAE: KL annealing and the multinomial likelihood --------------------------------------


def test_kl_weight_follows_the_papers_linear_schedule_to_its_cap():
    assert kl_weight(0, 200_000, 0.2) == 0.0
    assert kl_weight(20_000, 200_000, 0.2) == pytest.approx(0.1)
    assert kl_weight(40_000, 200_000, 0.2) == pytest.approx(0.2)
    assert kl_weight(10**7, 200_000, 0.2) == 0.2
    assert kl_weight(5, 0, 0.2) == 0.2  # no annealing: the cap from the start


def test_multinomial_objective_anneals_beta_by_update_count_across_epochs():
    m = matrix(n_users=10)
    obj = MultinomialLikelihood(interactions(m), *m.shape, total_anneal_steps=8, anneal_cap=0.5)
    assert obj.samples_per_epoch() == 10 and (obj.total_anneal_steps, obj.anneal_cap) == (8, 0.5)
    betas = [float(b["beta"]) for epoch in range(3) for b in obj.batches(epoch, seed=0, batch_size=4)]
    # 3 batches an epoch (4 + 4 + 2 users): update t has beta min(0.5, t / 8)
    assert betas == pytest.approx([min(0.5, t / 8) for t in range(9)])
    default = build_objective("multinomial", interactions(m), *m.shape)
    assert (default.total_anneal_steps, default.anneal_cap, default.reg) == (200_000, 0.2, 0.0)
    users = [b["keys"] for b in obj.batches(0, seed=0, batch_size=4)]
    assert sorted(torch.cat(users).tolist()) == list(range(10))  # every user once an epoch


def test_multinomial_loss_is_the_negative_log_likelihood_plus_beta_times_kl():
    m = matrix()
    model = fitted("mult-vae", m, dims=(16, 4))  # eval mode: z = mu, no dropout
    obj = MultinomialLikelihood(interactions(m), *m.shape, reg=0.01)
    users = torch.tensor([0, 3, 5])
    loss = obj.loss(model, {"keys": users, "beta": torch.tensor(0.3)})
    logits, kl = model.reconstruct(users)
    x = torch.from_numpy(m[users.numpy()].toarray())
    nll = -(F.log_softmax(logits, 1) * x).sum(1).mean()
    weights = sum(p.pow(2).sum() for p in model.parameters() if p.dim() == 2)
    torch.testing.assert_close(loss, nll + 0.3 * kl + 0.01 * weights)
    assert kl is not None and float(kl.detach()) > 0
    assert fitted("mult-dae", m, dims=(16, 4)).reconstruct(users)[1] is None  # no KL term


def test_mult_models_read_the_l2_normalised_row_so_scaling_it_changes_nothing():
    m = matrix()
    for family in ("mult-dae", "mult-vae"):
        a = fitted(family, m, dims=(16, 4)).score_all(torch.arange(12))
        b = fitted(family, m * 7.0, dims=(16, 4)).score_all(torch.arange(12))
        torch.testing.assert_close(a, b)


def test_mult_vae_samples_z_only_while_training():
    model = fitted("mult-vae", matrix(), dims=(16, 4))
    users = torch.arange(4)
    torch.testing.assert_close(model.reconstruct(users)[0], model.reconstruct(users)[0], rtol=0, atol=0)
    model.train()
    assert not torch.equal(model.reconstruct(users)[0], model.reconstruct(users)[0])


# ---- CDAE ------------------------------------------------------------------------------------------


def test_cdae_corrupts_its_input_only_while_training_and_adds_the_users_node():
    model = fitted("cdae", matrix(), hidden=6, corruption=0.5)
    users = torch.arange(12)
    torch.testing.assert_close(model.user_vectors(users), model.user_vectors(users), rtol=0, atol=0)
    with torch.no_grad():
        model.user_node.weight.normal_()
    indptr, items = torch.tensor([0, 2, 4]), torch.tensor([2, 3, 2, 3])  # the same items for two users
    known = model.user_vectors_from_recent(torch.tensor([0, 1]), indptr, items)
    anonymous = model.user_vectors_from_recent(torch.tensor([-1, -1]), indptr, items)
    assert not torch.allclose(known[0], known[1])
    torch.testing.assert_close(anonymous[0], anonymous[1])
    with torch.no_grad():  # z_u = sigmoid(W^T y_u + V_u + b)
        wy = model.encoder.weight[2] + model.encoder.weight[3] + model.encoder_bias
        torch.testing.assert_close(known[0], torch.sigmoid(wy + model.user_node.weight[0]))
        torch.testing.assert_close(anonymous[0], torch.sigmoid(wy))
    model.train()
    assert not torch.equal(model.user_vectors(users), model.user_vectors(users))


def test_cdae_objective_is_the_logistic_loss_over_every_item():
    m = matrix()
    model = fitted("cdae", m, hidden=6)
    obj = DenoisingLogistic(interactions(m), *m.shape)
    users = torch.tensor([1, 2])
    logits, _ = model.reconstruct(users)
    y = torch.from_numpy((m[users.numpy()].toarray() > 0).astype(np.float32))
    expected = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / 2
    torch.testing.assert_close(obj.loss(model, {"keys": users}), expected)


# ---- AutoRec ---------------------------------------------------------------------------------------


def test_autorec_reconstructs_item_columns_and_its_explicit_loss_counts_observed_entries_only():
    m = matrix()
    model = fitted("autorec", m, hidden=5)
    items = torch.tensor([0, 4, 8])
    out, _ = model.reconstruct(items)
    r = torch.from_numpy(m.T.toarray()[items.numpy()])
    assert out.shape == (3, m.shape[0]) and torch.equal(model.targets(items), r)
    observed = AutoRecLoss(interactions(m), *m.shape, entries="observed")
    every = AutoRecLoss(interactions(m), *m.shape)
    assert observed.samples_per_epoch() == m.shape[1]  # batches of items
    torch.testing.assert_close(
        observed.loss(model, {"keys": items}), ((out - r) ** 2 * (r > 0)).sum(1).mean()
    )
    torch.testing.assert_close(every.loss(model, {"keys": items}), ((out - r) ** 2).sum(1).mean())
    # scores: R_ui = h(r^(i))_u, the user's decoder row against the item's code
    torch.testing.assert_close(
        model.score_all(torch.arange(m.shape[0])), model.reconstruct(torch.arange(9))[0].T
    )


# ---- shared: request-time encoding, weights ----------------------------------------------------------


@pytest.mark.parametrize("family", ["cdae", "mult-dae", "mult-vae"])
def test_user_row_models_encode_a_training_users_items_as_their_stored_row(family):
    m = matrix()
    m.data[:] = 1.0
    model = fitted(family, m)
    assert isinstance(model, RecentEncoder) and isinstance(model, Factorised)
    users = torch.tensor([0, 5, 11])
    rows = [m[int(u)].indices for u in users]
    indptr = torch.tensor(np.cumsum([0] + [len(r) for r in rows]))
    items = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    torch.testing.assert_close(
        model.user_vectors_from_recent(users, indptr, items), model.user_vectors(users)
    )
    twice = torch.cat([items[: len(rows[0])], items[: len(rows[0])]])  # repeats count once (binary model)
    once = model.user_vectors_from_recent(users[:1], torch.tensor([0, len(rows[0])]), items[: len(rows[0])])
    again = model.user_vectors_from_recent(users[:1], torch.tensor([0, len(twice)]), twice)
    torch.testing.assert_close(once, again)


def test_weighted_rows_are_kept_and_change_the_scores():
    m = matrix()
    binary = m.copy()
    binary.data[:] = 1.0
    weighted = fitted("mult-vae", m, dims=(16, 4))
    assert torch.equal(weighted.targets(torch.arange(12)), torch.from_numpy(m.toarray()))
    assert not bool(weighted.binary_values) and bool(fitted("mult-vae", binary, dims=(16, 4)).binary_values)
    assert not torch.allclose(
        weighted.score_all(torch.arange(12)),
        fitted("mult-vae", binary, dims=(16, 4)).score_all(torch.arange(12)),
    )


@pytest.mark.parametrize("family", ["cdae", "mult-dae", "mult-vae"])
def test_fold_in_scores_from_the_given_rows_while_training_reads_the_training_rows(family):
    m = matrix()
    m.data[:] = 1.0
    more = m.tolil()
    more[0, 8] = more[3, 7] = 1.0  # the "valid" items, known before the test item
    more = more.tocsr()
    model = fitted(family, m)
    users = torch.arange(12)
    before = model.score_all(users)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.fold_in(more)
    assert model.state_dict().keys() == state.keys()  # the folded rows are not saved with the weights
    rows = [more[u].indices for u in range(12)]
    indptr = torch.tensor(np.cumsum([0] + [len(r) for r in rows]))
    items = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    torch.testing.assert_close(
        model.user_vectors(users), model.user_vectors_from_recent(users, indptr, items)
    )
    after = model.score_all(users)
    assert not torch.allclose(after[[0, 3]], before[[0, 3]])
    torch.testing.assert_close(after[[1, 2, 4]], before[[1, 2, 4]])  # unchanged rows score the same
    assert torch.equal(model.targets(users), torch.from_numpy(m.toarray()))  # the training targets
    model.train()
    torch.manual_seed(0)
    h_train = model.user_vectors(users)
    model.fold_in(None)
    torch.manual_seed(0)
    torch.testing.assert_close(model.user_vectors(users), h_train)  # training reads the train rows
    model.eval()
    torch.testing.assert_close(model.score_all(users), before)
