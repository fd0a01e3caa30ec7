"""Sequence models (SASRec, GRU4Rec): the model contract, causal masking, padding invariance, a
synthetic next-item task learned to HR@1 > 0.9, the history evaluation gives each part, ad-hoc
item lists with raw ids, and the sequence objectives."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from contract import ModelContract

from recfunnel.data.dataset import build_dataset
from recfunnel.data.sequences import from_lists
from recfunnel.data.splits import leave_one_out
from recfunnel.eval.protocols import evaluate, evaluate_full
from recfunnel.models.base import Factorised, HistoryAware, build_model
from recfunnel.models.seq.blocks import PoolDropout
from recfunnel.recommender import Recommender
from recfunnel.run import RunConfig, fit
from recfunnel.train.registry import build_objective
from recfunnel.train.seq_objectives import full_softmax_ce
from recfunnel.train.trainer import TrainConfig

FAMILIES = ("sasrec", "gru4rec")


class TestSASRec(ModelContract):
    family = "sasrec"
    params = {"hidden": 32, "max_len": 50, "dropout": 0.2}
    train = {"epochs": 6, "batch_size": 64, "lr": 2e-3, "patience": 0}
    factorised = True


class TestGRU4Rec(ModelContract):
    family = "gru4rec"
    params = {"hidden": 32, "max_len": 50}
    train = {"epochs": 6, "batch_size": 64, "lr": 2e-3, "patience": 0}
    factorised = True


def _model(family: str, n_items: int = 30, **params):
    torch.manual_seed(0)
    return build_model(family, 4, n_items, {"max_len": 8, **params}).eval()


# ---- encoder properties -------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_output_at_t_does_not_change_when_later_items_change(family):
    model = _model(family)
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]])
    later = seq.clone()
    later[:, 5:] = torch.tensor([20, 21, 22])
    with torch.no_grad():
        a, b = model.encode(seq), model.encode(later)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_does_not_change_outputs(family):
    model = _model(family)
    with torch.no_grad():
        alone = model.encode(torch.tensor([[3, 4, 5]]))
        padded = model.encode(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]]))
        beside_longer = model.encode(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]]))
    torch.testing.assert_close(padded[:, -3:], alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(beside_longer[:1, -3:], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_last_max_len_items_count(family):
    model = _model(family)
    indptr, items = from_lists([list(range(20)), list(range(12, 20))])
    with torch.no_grad():
        u = model.encode_items(indptr, items)
    torch.testing.assert_close(u[0], u[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_is_factorised_and_history_aware_and_needs_a_history(family):
    model = _model(family)
    assert isinstance(model, Factorised) and isinstance(model, HistoryAware)
    with pytest.raises(RuntimeError, match="set_history"):
        model.user_vectors(torch.tensor([0]))
    with pytest.raises(ValueError, match="n_users"):
        model.set_history(torch.zeros(3, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def test_pool_dropout_drops_p_keeps_the_mean_and_is_identity_in_eval():
    torch.manual_seed(0)
    drop = PoolDropout(0.3)
    x = torch.ones(200, 500)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.3) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.02
    assert not torch.equal(drop(x), y)  # another window of the pool
    assert drop.eval()(x) is x


# ---- learning a deterministic next item ---------------------------------------------------------
def _cycle_dataset(n_users: int = 240, n_items: int = 15, length: int = 12):
    """Each user walks the cycle 0 -> 1 -> ... -> n_items - 1 -> 0 from a random start."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, n_items, n_users)
    items = (starts[:, None] + np.arange(length)) % n_items
    frame = pl.DataFrame(
        {
            "user": np.repeat(np.arange(n_users), length),
            "item": items.reshape(-1),
            "timestamp": np.tile(np.arange(length), n_users),
        }
    )
    ds = build_dataset("cycle", frame)
    return ds, leave_one_out(ds)


@pytest.mark.parametrize("family", FAMILIES)
def test_learns_a_deterministic_next_item_to_hr_at_1_above_0_9(family):
    ds, split = _cycle_dataset()
    cfg = TrainConfig(epochs=12, batch_size=32, lr=5e-3, patience=0, progress=False, monitor="hr@10")
    params = {"hidden": 32, "max_len": 10} | ({"dropout": 0.1} if family == "sasrec" else {})
    run = RunConfig(train=cfg).updated(
        {"model": {"name": family, "params": params}, "eval": {"valid_protocol": "full"}}
    )
    model = fit(run, ds, split, evaluate=False).model
    # 12 steps of a 15-cycle never repeat an item, so masking seen items hides no answer
    assert evaluate_full(model, ds, split, "test", ks=(1,)).metrics["hr@1"] > 0.9


# ---- the history each evaluated part sees -------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_seq():
    """8 users x 6 time-ordered items over 12 items, leave-one-out with 4 negatives per user."""
    rng = np.random.default_rng(1)
    rows = [(u, int(i), t) for u in range(8) for t, i in enumerate(rng.permutation(12)[:6])]
    frame = pl.DataFrame({k: [r[j] for r in rows] for j, k in enumerate(("user", "item", "timestamp"))})
    ds = build_dataset("tiny-seq", frame)
    return ds, leave_one_out(ds).with_negatives(ds, 4, seed=0)


def _untrained(ds):
    torch.manual_seed(0)
    return build_model("sasrec", ds.n_users, ds.n_items, {"hidden": 16, "max_len": 10}).eval()


def _lists(ds, split, parts):
    """Per user, the items of `parts` by time, in plain Python (independent of the library)."""
    rows = np.concatenate([split.rows(p) for p in parts])
    ints = ds.interactions
    out = {u: [] for u in range(ds.n_users)}
    for r in sorted(rows.tolist(), key=lambda r: (ints.user[r], ints.timestamp[r])):
        out[int(ints.user[r])].append(int(ints.item[r]))
    return [out[u] for u in range(ds.n_users)]


def test_evaluation_gives_valid_the_train_history_and_test_the_valid_item_too(tiny_seq):
    ds, split = tiny_seq
    for part, parts in (("valid", ["train"]), ("test", ["train", "valid"])):
        model = _untrained(ds)
        evaluate_full(model, ds, split, part, ks=(3,))
        indptr, items = model.get_history()  # none was set before, so the part's history stays
        got = [items[indptr[u] : indptr[u + 1]].tolist() for u in range(ds.n_users)]
        assert got == _lists(ds, split, parts)
    test, valid = split.part(ds, "test"), split.part(ds, "valid")
    test_items = dict(zip(test.user.tolist(), test.item.tolist(), strict=True))
    valid_items = dict(zip(valid.user.tolist(), valid.item.tolist(), strict=True))
    for u, seq in enumerate(got):
        assert seq[-1] == valid_items[u] and test_items[u] not in seq


def test_evaluation_scores_match_encoding_the_part_history_by_hand(tiny_seq):
    ds, split = tiny_seq
    model = _untrained(ds)
    lists = _lists(ds, split, ["train", "valid"])
    with torch.no_grad():
        vectors = model.encode_items(*from_lists(lists))
    negs = split.negatives["test"]
    test = split.part(ds, "test")
    cand = np.concatenate([test.item[np.argsort(test.user)][:, None], negs], axis=1)
    scores = (vectors.unsqueeze(1) * model.item_vectors()[torch.from_numpy(cand)]).sum(-1)
    hr = float(((scores[:, 1:] >= scores[:, :1]).sum(1) < 2).float().mean())
    assert evaluate(model, ds, split, "sampled", "test", ks=(2,)).metrics["hr@2"] == pytest.approx(hr)


def test_evaluation_restores_a_history_set_before(tiny_seq):
    ds, split = tiny_seq
    model = _untrained(ds)
    mine = from_lists([[0]] * ds.n_users)
    model.set_history(*mine)
    evaluate(model, ds, split, "sampled", "valid", ks=(2,))
    assert model.get_history() is not None and torch.equal(model.get_history()[1], mine[1])


# ---- Recommender: ad-hoc item lists with raw ids ------------------------------------------------
@pytest.fixture(scope="module")
def seq_rec(tiny_seq):
    ds, split = tiny_seq
    rec = Recommender("sasrec", {"hidden": 16, "max_len": 10}, {"epochs": 1, "progress": False})
    return rec.fit(ds, split), ds, split


def test_recommend_from_items_matches_recommend_for_the_users_own_history(seq_rec):
    rec, ds, split = seq_rec
    seen = _lists(ds, split, ["train", "valid"])
    user = 3
    raw = [ds.items.ids[i] for i in seen[user]]
    a_ids, a_scores = rec.recommend([ds.users.ids[user]], k=4)
    b_ids, b_scores = rec.recommend_from_items([raw], k=4)
    assert a_ids == b_ids
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5)
    assert not set(b_ids[0]) & set(raw)  # the given items are excluded


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_an_index_over_a_sequence_model_answers_as_the_model_does(seq_rec, backend):
    from recfunnel.index import index_from_model

    rec, ds, _ = seq_rec
    index = index_from_model(rec.model_, backend, **({"ef_search": 200} if backend == "hnsw" else {}))
    users = [ds.users.ids[u] for u in range(0, ds.n_users, 3)]
    want_ids, want_scores = rec.recommend(users, k=5)
    got_ids, got_scores = rec.recommend(users, k=5, index=index)
    assert got_ids == want_ids
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-5)


def test_recommend_from_items_handles_unknown_ids_and_empty_lists(seq_rec):
    rec, ds, _ = seq_rec
    known = ds.items.ids[0]
    with pytest.raises(KeyError, match="no-such-item"):
        rec.recommend_from_items([[known, "no-such-item"]], k=3)
    ids, _ = rec.recommend_from_items([[known, "no-such-item"], []], k=3, unknown="skip")
    assert len(ids) == 2 and all(len(r) == 3 for r in ids) and known not in ids[0]
    with pytest.raises(TypeError, match="one list"):
        rec.recommend_from_items([known], k=3)


def test_recommend_from_items_needs_a_sequence_model(tiny_seq):
    ds, split = tiny_seq
    rec = Recommender("popularity").fit(ds, split)
    with pytest.raises(TypeError, match="sequence model"):
        rec.recommend_from_items([[ds.items.ids[0]]])


def test_saved_sequence_model_recommends_the_same_after_load(seq_rec, tmp_path):
    rec, ds, _ = seq_rec
    loaded = Recommender.load(rec.save(tmp_path / "seq"))
    users = list(ds.users.ids)
    assert rec.recommend(users, k=5)[0] == loaded.recommend(users, k=5)[0]
    lists = [[ds.items.ids[1], ds.items.ids[2]]]
    assert rec.recommend_from_items(lists)[0] == loaded.recommend_from_items(lists)[0]


# ---- objectives ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seq-bce", "seq-ce", "seq-sampled-ce", "seq-bpr-max"])
def test_objective_batches_repeat_per_seed_and_epoch_and_losses_are_finite(tiny_seq, name):
    ds, split = tiny_seq
    train = split.part(ds, "train")
    params = {"negatives": 5} if name in ("seq-sampled-ce", "seq-bpr-max") else {}
    obj = build_objective(name, train, ds.n_users, ds.n_items, max_len=10, **params)
    a = list(obj.batches(3, 7, 3))
    b = list(obj.batches(3, 7, 3))
    c = list(obj.batches(4, 7, 3))
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)
    assert any(not torch.equal(x["inputs"], y["inputs"]) for x, y in zip(a, c, strict=True))
    assert sum(len(x["inputs"]) for x in a) == obj.samples_per_epoch() == ds.n_users
    torch.manual_seed(0)
    model = build_model("gru4rec", ds.n_users, ds.n_items, {"hidden": 8, "max_len": 10})
    loss = obj.loss(model, a[0])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()


def test_bucketed_batches_hold_every_window_once_and_are_narrower(tiny_seq):
    ds, split = tiny_seq
    train = split.part(ds, "train")
    # uneven lengths: drop a varying number of each user's rows
    keep = np.flatnonzero(np.arange(len(train)) % 7 != 0)
    train = train.take(keep)
    plain = build_objective("seq-bce", train, ds.n_users, ds.n_items, max_len=10)
    bucket = build_objective("seq-bce", train, ds.n_users, ds.n_items, max_len=10, bucket=True)
    a, b = list(plain.batches(0, 0, 2)), list(bucket.batches(0, 0, 2))

    def rows(batches):  # (last input, last target, length) of every window in the epoch
        return sorted(
            (int(x["inputs"][i, -1]), int(x["targets"][i, -1]), int((x["targets"][i] > 0).sum()))
            for x in batches
            for i in range(len(x["inputs"]))
        )

    assert len(a) == len(b) and rows(a) == rows(b) and len(rows(a)) == plain.samples_per_epoch()
    assert sum(x["inputs"].shape[1] for x in b) <= sum(x["inputs"].shape[1] for x in a)
    again = list(bucket.batches(0, 0, 2))
    assert all(torch.equal(x["inputs"], y["inputs"]) for x, y in zip(b, again, strict=True))
    # a position weighs the same in every batch: the sum over the mean positions per batch
    per_position = torch.ones(5)
    assert float(bucket.reduce(per_position)) == pytest.approx(5 / (bucket.positions_per_epoch / len(b)))
    assert float(plain.reduce(per_position)) == 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_scoring_in_length_chunks_gives_the_same_vectors(family):
    model = _model(family)
    rng = np.random.default_rng(0)
    indptr, items = from_lists([rng.integers(0, 30, int(n)).tolist() for n in rng.integers(0, 12, 40)])
    with torch.no_grad():
        whole = model.encode_items(indptr, items)
        model.SCORE_CHUNK = 7
        chunked = model.encode_items(indptr, items)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_bce_negatives_are_never_a_training_item_of_the_user(tiny_seq):
    ds, split = tiny_seq
    train = split.part(ds, "train")
    obj = build_objective("seq-bce", train, ds.n_users, ds.n_items, max_len=10)
    mine = {u: set(train.item[train.user == u].tolist()) for u in range(ds.n_users)}
    for epoch in range(3):
        for batch in obj.batches(epoch, 0, 4):
            real = batch["targets"] > 0
            assert ((batch["negatives"] > 0) == real).all()
        negs = obj.epoch_draws(np.random.default_rng([0, epoch]), 4)["negatives"][1]
        for row, owner in zip(negs.tolist(), obj.windows.owners.tolist(), strict=True):
            assert not {n - 1 for n in row if n > 0} & mine[owner]


def test_model_crops_windows_longer_than_it_reads(tiny_seq):
    ds, split = tiny_seq
    obj = build_objective("seq-ce", split.part(ds, "train"), ds.n_users, ds.n_items, max_len=10)
    torch.manual_seed(0)
    model = build_model("sasrec", ds.n_users, ds.n_items, {"hidden": 8, "max_len": 2})
    batch = next(obj.batches(0, 0, 8))
    assert batch["inputs"].shape[1] > 2
    h, targets, real = obj.states(model, batch)
    assert real.shape[1] == 2 and len(h) == len(targets) == int((batch["targets"][:, -2:] > 0).sum())


def test_full_softmax_ce_equals_cross_entropy_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    h0, w0 = (
        torch.randn(20, 6, generator=g, dtype=torch.double),
        torch.randn(40, 6, generator=g, dtype=torch.double),
    )
    b0, t = torch.randn(40, generator=g, dtype=torch.double), torch.randint(0, 40, (20,), generator=g)
    for with_bias in (False, True):
        grads = []
        for fused in (True, False):
            h, w, b = (x.clone().requires_grad_() for x in (h0, w0, b0))
            if fused:
                loss = full_softmax_ce(h, w, b if with_bias else None, t)
            else:
                loss = F.cross_entropy(h @ w.T + (b if with_bias else 0.0), t)
            (2 * loss).backward()
            grads.append((loss.detach(), h.grad, w.grad, b.grad if with_bias else torch.zeros(())))
        for x, y in zip(*grads, strict=True):
            torch.testing.assert_close(x, y)


def test_evaluation_in_history_length_order_gives_the_same_metrics_and_per_user_values():
    """evaluate_full visits users by history length (less padding); the sums and each user's own
    values are those of visiting them in file order."""
    rng = np.random.default_rng(3)
    rows = [
        (u, int(i), t)
        for u in range(40)
        for t, i in enumerate(rng.permutation(30)[: int(rng.integers(4, 25))])
    ]
    frame = pl.DataFrame({k: [r[j] for r in rows] for j, k in enumerate(("user", "item", "timestamp"))})
    ds = build_dataset("uneven-seq", frame)
    split = leave_one_out(ds)
    model = _untrained(ds)
    sorted_run = evaluate_full(model, ds, split, "test", ks=(5, 10), batch_size=6, per_user=True)
    order = model.eval_order(split.eval_users(ds, "test"))
    assert not np.array_equal(order, np.arange(len(order)))  # the order did change
    model.eval_order = lambda users: np.arange(len(users))  # file order
    plain_run = evaluate_full(model, ds, split, "test", ks=(5, 10), batch_size=6, per_user=True)
    assert sorted_run.metrics == pytest.approx(plain_run.metrics, abs=1e-9)
    assert np.array_equal(sorted_run.users, plain_run.users)
    for k, v in plain_run.per_user.items():
        np.testing.assert_allclose(sorted_run.per_user[k], v, atol=1e-9)
        assert v.std() > 0  # users differ, so a misaligned vector would show


def test_encode_last_equals_the_last_position_of_the_full_encoding():
    torch.manual_seed(0)
    model = _model("sasrec", n_items=30, heads=2, blocks=3).eval()
    seq = torch.tensor([[0, 0, 0, 4, 7, 9], [3, 1, 4, 1, 5, 9], [0, 0, 0, 0, 0, 2]])
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_last(seq), model.encode(seq)[:, -1], atol=1e-5)
