"""Trainer: resuming equals an uninterrupted run, early stopping restores the best epoch, the epoch
log, optimiser assignment for sparse / dense parameters."""

import json

import numpy as np
import polars as pl
import pytest
import safetensors.torch
import torch

from recfunnel.data.dataset import build_dataset
from recfunnel.data.splits import leave_one_out
from recfunnel.eval.protocols import evaluate_sampled
from recfunnel.models.mf import MF, MFConfig
from recfunnel.models.ncf import GMF, MLP, GMFConfig, MLPConfig
from recfunnel.train.checkpoint import CheckpointError, data_identity, split_fingerprint
from recfunnel.train.objectives import PointwiseBCE
from recfunnel.train.trainer import TrainConfig, Trainer, build_optimizers, seed_everything


@pytest.fixture(scope="module")
def data():
    """60 users in 3 taste groups over 45 items (15 per group), 8..14 events each, timestamped;
    leave-one-out with 20 sampled negatives per eval user."""
    return _groups()


def _groups(time_seed=None):
    """The `data` fixture's dataset; `time_seed` reorders each user's timestamps: other data of the
    same shape (same users, items and interactions, another held-out item per user)."""
    rng = np.random.default_rng(1)
    users, items, ts = [], [], []
    for u in range(60):
        group = u % 3
        n = int(rng.integers(8, 15))
        liked = rng.choice(15, size=n - 2, replace=False) + 15 * group
        other = rng.choice(45, size=2, replace=False)
        chosen = list(dict.fromkeys(liked.tolist() + other.tolist()))
        users += [u] * len(chosen)
        items += chosen
        ts += rng.permutation(len(chosen)).tolist()
    if time_seed is not None:
        ts = np.random.default_rng(time_seed).permutation(ts).tolist()
    ds = build_dataset("groups", pl.DataFrame({"user": users, "item": items, "timestamp": ts}))
    split = leave_one_out(ds).with_negatives(ds, n=20, seed=0)
    return ds, split


def fit(data, make_model, cfg, ckpt=None, resume=False, max_epochs=None, validate=True, identity=None):
    ds, split = data
    seed_everything(cfg.seed)
    model = make_model(ds)
    objective = PointwiseBCE(split.part(ds, "train"), ds.n_users, ds.n_items, k=2)
    val = (lambda m: evaluate_sampled(m, ds, split, "valid", ks=(5, 10)).metrics) if validate else None
    report = Trainer(cfg).fit(
        model, objective, val, checkpoint_dir=ckpt, resume=resume, max_epochs=max_epochs, identity=identity
    )
    return model, report


def gmf(ds):
    """Sparse embedding tables: trained by SparseAdam beside Adam for the output layer."""
    return GMF(GMFConfig(factors=8, sparse=True), ds.n_users, ds.n_items)


def gmf_dense(ds):
    return GMF(GMFConfig(factors=8, sparse=False), ds.n_users, ds.n_items)


def mlp_with_dropout(ds):
    """Dropout draws from torch's global RNG, so resuming must restore it."""
    return MLP(MLPConfig(layers=(16, 8), dropout=0.5, sparse=False), ds.n_users, ds.n_items)


def assert_same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-6), k


def losses(report):
    return [h["loss"] for h in report.history]


# ------------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_model", "validate"),
    [(gmf, True), (mlp_with_dropout, False)],
    ids=["gmf-validated", "mlp-dropout"],
)
def test_resumed_run_ends_with_the_same_weights_and_history_as_an_uninterrupted_run(
    tmp_path, data, make_model, validate
):
    cfg = TrainConfig(epochs=4, batch_size=128, lr=0.01, patience=0, progress=False, seed=3)
    whole, whole_report = fit(data, make_model, cfg, tmp_path / "whole", validate=validate)
    half, half_report = fit(data, make_model, cfg, tmp_path / "parts", max_epochs=2, validate=validate)
    assert len(half_report.history) == 2
    resumed, resumed_report = fit(data, make_model, cfg, tmp_path / "parts", resume=True, validate=validate)

    assert_same_params(whole, resumed)
    assert len(resumed_report.history) == 4
    assert losses(resumed_report) == pytest.approx(losses(whole_report), abs=1e-7)
    assert [h["epoch"] for h in resumed_report.history] == [0, 1, 2, 3]
    assert resumed_report.best_epoch == whole_report.best_epoch
    if validate:
        assert [h["valid"] for h in resumed_report.history] == [h["valid"] for h in whole_report.history]
        assert resumed_report.best_metric == whole_report.best_metric
    # and training did happen: the halfway model is not the final one
    sh, sw = half.state_dict(), whole.state_dict()
    assert any(not torch.allclose(sh[k], sw[k]) for k in sw) or validate


def test_resume_without_a_checkpoint_is_a_clear_file_not_found_error(tmp_path, data):
    cfg = TrainConfig(epochs=2, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(data, gmf, cfg, tmp_path / "empty", resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(data, gmf, cfg, None, resume=True)


def test_resume_on_other_data_of_the_same_shape_is_refused_and_on_the_same_data_continues(tmp_path, data):
    ds, split = data
    other = _groups(time_seed=5)
    assert (other[0].n_users, other[0].n_items) == (ds.n_users, ds.n_items)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=0.01, patience=0, progress=False)
    ident = data_identity(ds, split, model="gmf")
    fit(data, gmf, cfg, tmp_path, max_epochs=1, identity=ident)
    with pytest.raises(CheckpointError) as err:
        fit(other, gmf, cfg, tmp_path, resume=True, identity=data_identity(*other, model="gmf"))
    msg = str(err.value)
    assert "saved with dataset" in msg and f"Delete {tmp_path}" in msg and "original dataset" in msg
    assert repr(ident["dataset"][:16] + "...") in msg
    # the same data under another split: the split is named
    resplit = leave_one_out(ds)  # no sampled negatives this time
    assert split_fingerprint(resplit) != ident["split"]
    with pytest.raises(CheckpointError, match="saved with split"):
        fit((ds, resplit), gmf, cfg, tmp_path, resume=True, identity=data_identity(ds, resplit, model="gmf"))
    _, report = fit(data, gmf, cfg, tmp_path, resume=True, identity=ident)
    assert [h["epoch"] for h in report.history] == [0, 1, 2]
    assert json.loads((tmp_path / "last" / "checkpoint.json").read_text())["identity"] == ident


def test_resume_after_a_model_shape_change_is_a_checkpoint_error_saying_what_to_do(tmp_path, data):
    cfg = TrainConfig(epochs=2, batch_size=128, progress=False, patience=0)
    fit(data, gmf, cfg, tmp_path, max_epochs=1)

    def wider(ds):
        return GMF(GMFConfig(factors=16, sparse=True), ds.n_users, ds.n_items)

    with pytest.raises(
        CheckpointError, match=r"does not fit this model: shape mismatch.*delete the checkpoint"
    ):
        fit(data, wider, cfg, tmp_path, resume=True)
    with pytest.raises(ValueError, match="was trained with"):  # CheckpointError is a ValueError too
        fit(data, gmf, cfg.model_copy(update={"lr": 0.5}), tmp_path, resume=True)


# ------------------------------------------------------------------------------------------
# Early stopping and best weights
# ------------------------------------------------------------------------------------------


class Scripted:
    """A validation callback returning a fixed metric sequence and recording the weights it saw."""

    def __init__(self, values):
        self.values = list(values)
        self.seen = []

    def __call__(self, model):
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"ndcg@10": self.values[len(self.seen) - 1]}


def test_early_stopping_stops_after_patience_epochs_without_gain_and_restores_the_best(tmp_path, data):
    ds, split = data
    cfg = TrainConfig(epochs=10, batch_size=256, lr=0.01, patience=2, progress=False)
    seed_everything(0)
    model = gmf_dense(ds)
    # best at epoch 1; epochs 2 and 3 do not beat it (3 ties epoch 0, still no gain) -> stop after 3
    validate = Scripted([0.2, 0.5, 0.4, 0.5, 0.9, 0.9])
    objective = PointwiseBCE(split.part(ds, "train"), ds.n_users, ds.n_items, k=2)
    report = Trainer(cfg).fit(model, objective, validate, checkpoint_dir=tmp_path)
    assert report.stopped_early
    assert len(report.history) == 4
    assert (report.best_epoch, report.best_metric) == (1, 0.5)
    best = validate.seen[1]
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k
    on_disk = safetensors.torch.load_file(str(tmp_path / "best.safetensors"))
    assert on_disk.keys() == best.keys()
    for k in best:
        assert torch.equal(on_disk[k], best[k]), k
    assert not torch.equal(validate.seen[3]["out.weight"], best["out.weight"])  # it did move on
    assert not model.training


def test_after_fit_the_model_reproduces_the_best_validation_metric(data):
    ds, split = data
    cfg = TrainConfig(epochs=5, batch_size=256, lr=0.02, patience=2, progress=False, monitor="ndcg@5")
    model, report = fit(data, gmf_dense, cfg)
    best = report.history[report.best_epoch]["valid"]["ndcg@5"]
    assert best == report.best_metric == max(h["valid"]["ndcg@5"] for h in report.history)
    again = evaluate_sampled(model, ds, split, "valid", ks=(5, 10)).metrics["ndcg@5"]
    assert again == pytest.approx(best, abs=1e-9)


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path, data):
    ds, split = data
    cfg = TrainConfig(epochs=10, batch_size=256, lr=0.01, patience=1, progress=False)
    objective = PointwiseBCE(split.part(ds, "train"), ds.n_users, ds.n_items, k=2)
    seed_everything(0)
    first = Trainer(cfg).fit(gmf_dense(ds), objective, Scripted([0.5, 0.1]), checkpoint_dir=tmp_path)
    assert first.stopped_early and len(first.history) == 2
    seed_everything(0)
    model = gmf_dense(ds)
    again = Trainer(cfg).fit(model, objective, Scripted([0.9]), checkpoint_dir=tmp_path, resume=True)
    assert len(again.history) == 2
    assert again.stopped_early
    assert (again.best_epoch, again.best_metric) == (0, 0.5)


def test_a_monitor_missing_from_the_validation_metrics_is_named_in_the_error(data):
    cfg = TrainConfig(epochs=1, batch_size=256, progress=False, monitor="auc")
    with pytest.raises(KeyError, match="auc"):
        fit(data, gmf_dense, cfg)


# ------------------------------------------------------------------------------------------
# Epoch log
# ------------------------------------------------------------------------------------------


def test_log_json_has_one_entry_per_epoch_matching_the_report(tmp_path, data):
    cfg = TrainConfig(epochs=3, batch_size=256, lr=0.02, patience=0, progress=False)
    _, report = fit(data, gmf_dense, cfg, tmp_path)
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["epoch"] for e in log] == [0, 1, 2]
    assert [e["loss"] for e in log] == losses(report)
    ds, split = data
    assert all(e["samples"] == 3 * len(split.train) for e in log)  # BCE with k=2
    assert all("ndcg@10" in e["valid"] for e in log)
    assert report.samples_per_second > 0
    assert 0 <= report.pipeline_share <= 1
    assert (tmp_path / "last" / "checkpoint.json").is_file()
    assert log[-1]["loss"] < log[0]["loss"]  # and training lowers the loss


# ------------------------------------------------------------------------------------------
# Optimisers
# ------------------------------------------------------------------------------------------


def test_sparse_embeddings_go_to_row_adam_and_dense_params_to_fused_adam():
    """ID-table families (fused_optimizer): dense params to TableAdam (torch's fused Adam, lean),
    sparse tables to RowAdam (SparseAdam's update)."""
    model = GMF(GMFConfig(factors=4, sparse=True), 5, 7)
    opts = build_optimizers(model, TrainConfig(lr=0.1, weight_decay=0.01))
    by_class = {type(o).__name__: {id(p) for g in o.param_groups for p in g["params"]} for o in opts}
    assert set(by_class) == {"TableAdam", "RowAdam"}
    assert by_class["RowAdam"] == {id(model.user_emb.weight), id(model.item_emb.weight)}
    assert by_class["TableAdam"] == {id(model.out.weight), id(model.out.bias)}
    adam = next(o for o in opts if type(o).__name__ == "TableAdam")
    assert adam.param_groups[0]["weight_decay"] == 0.01 and adam.param_groups[0]["lr"] == 0.1


def test_models_without_fused_optimizer_keep_foreach_adam():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 2, sparse=True)
            self.lin = torch.nn.Linear(2, 1)

    opts = build_optimizers(Plain(), TrainConfig())
    assert [type(o).__name__ for o in opts] == ["Adam", "RowAdam"]
    assert opts[0].defaults["foreach"] and not opts[0].defaults["fused"]


def test_dense_embeddings_and_adamw_and_sgd_choices():
    dense = GMF(GMFConfig(factors=4, sparse=False), 5, 7)
    opts = build_optimizers(dense, TrainConfig(optimizer="adamw"))
    assert [type(o).__name__ for o in opts] == ["AdamW"]
    assert sum(len(g["params"]) for g in opts[0].param_groups) == len(list(dense.parameters()))
    sgd = build_optimizers(GMF(GMFConfig(factors=4), 5, 7), TrainConfig(optimizer="sgd"))
    assert [type(o).__name__ for o in sgd] == ["SGD"]
    only_sparse = build_optimizers(MF(MFConfig(factors=4, sparse=True), 5, 7), TrainConfig())
    assert [type(o).__name__ for o in only_sparse] == ["RowAdam"]


def test_frozen_parameters_get_no_optimiser():
    model = GMF(GMFConfig(factors=4, sparse=True), 5, 7)
    model.out.requires_grad_(False)
    opts = build_optimizers(model, TrainConfig())
    assert [type(o).__name__ for o in opts] == ["RowAdam"]


def test_training_threads_are_the_model_familys_unless_configured_and_restored_after(data):
    ds, split = data
    seen = []

    class Spy(PointwiseBCE):
        def loss(self, model, batch):
            seen.append(torch.get_num_threads())
            return super().loss(model, batch)

    before = torch.get_num_threads()
    for cfg, want in (
        (TrainConfig(epochs=1, progress=False), 1),
        (TrainConfig(epochs=1, threads=2, progress=False), 2),
    ):
        seen.clear()
        model = GMF(GMFConfig(factors=4), ds.n_users, ds.n_items)  # train_threads = 1
        Trainer(cfg).fit(model, Spy(split.part(ds, "train"), ds.n_users, ds.n_items, k=1))
        assert set(seen) == {want}
        assert torch.get_num_threads() == before
