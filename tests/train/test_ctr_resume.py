"""`--resume` for the CTR rankers (issue 16 item 1), in one process, through ``recfunnel.run.fit``.

A run is killed after epoch 1 (its validator raises at epoch 2, after epoch 1's checkpoint was
written) and resumed from ``<checkpoint_dir>/last``: it must end exactly as an uninterrupted run of
the same seed does. Tolerance: none, bit-identical weights, epoch losses, validation and test
metrics, as for the user x item families (tests/train/test_trainer.py), dropout included (the torch
RNG is in the checkpoint). DeepFM runs with sparse tables, so its RowAdam moments and step counts
travel through the checkpoint too (without them the resumed weights would differ). The data: the
earliest 10% of MovieLens-100K's events, temporal 80/10/10 (8,000 labelled train rows).

The 2-process kill-and-resume of DeepFM is in tests/train/test_ddp.py.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import Split, temporal
from recfunnel.errors import ConfigError
from recfunnel.run.config import RunConfig
from recfunnel.run.fit import FitResult, fit
from recfunnel.settings import has_dataset
from recfunnel.train.checkpoint import CheckpointError

run_fit = importlib.import_module("recfunnel.run.fit")  # the module (recfunnel.run.fit is also the function)
EPOCHS = 3
#: family -> hyper-parameters (small: the test is about the checkpoint, not the model)
FAMILIES: dict[str, dict] = {
    "deepfm": {"sparse": True, "dropout": 0.2, "embedding_dim": 8, "hidden": [32, 32]},
    "lr": {"sparse": True},
    "fm": {"embedding_dim": 8},
    "widedeep": {"embedding_dim": 8, "hidden": [16]},
    "dcnv2": {"embedding_dim": 8, "hidden": [16], "cross_layers": 2},
    "autoint": {"embedding_dim": 8, "layers": 1, "attention_dim": 8},
    "dlrm": {"embedding_dim": 8, "bottom": [16], "top": [16]},
}


class Killed(RuntimeError):
    """What the patched validator raises: the process dying mid-run."""


@pytest.fixture(scope="module")
def data() -> tuple:
    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root (RECFUNNEL_DATA)")
    full = load_dataset("ml-100k")
    ints = full.interactions
    order = np.lexsort((ints.order, ints.timestamp))
    ds = replace(full, interactions=ints.take(np.sort(order[: len(order) // 10])))
    return ds, temporal(ds)


def _cfg(family: str, **ctr) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name": family, "params": FAMILIES.get(family, {})},
            "split": {"method": "temporal"},
            "ctr": ctr,
            "train": {"epochs": EPOCHS, "batch_size": 256, "progress": False, "threads": 1},
        }
    )


def _killed_after(epochs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next fit die in the validation of epoch `epochs` (0-based), once `epochs` epochs
    have been checkpointed."""
    real = run_fit.ctr_validator

    def validator(part):  # noqa: ANN001, ANN202
        inner, calls = real(part), [0]

        def validate(model: torch.nn.Module) -> dict[str, float]:
            calls[0] += 1
            if calls[0] > epochs:
                raise Killed(f"killed in epoch {calls[0] - 1}")
            return inner(model)

        return validate

    monkeypatch.setattr(run_fit, "ctr_validator", validator)


def _interrupted_then_resumed(
    cfg: RunConfig,
    ds,
    sp: Split,
    ckpt: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> FitResult:
    with monkeypatch.context() as m:
        _killed_after(1, m)
        with pytest.raises(Killed):
            fit(cfg, ds, sp, checkpoint_dir=ckpt)
    assert [h["epoch"] for h in json.loads((ckpt / "log.json").read_text())] == [0]
    return fit(cfg, ds, sp, checkpoint_dir=ckpt, resume=True)


def _no_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.endswith(("seconds", "per_second"))} for h in history]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_killed_ctr_run_resumes_to_the_weights_and_metrics_of_an_uninterrupted_one(
    data, tmp_path, monkeypatch, family
):
    ds, sp = data
    cfg = _cfg(family)
    whole = fit(cfg, ds, sp, checkpoint_dir=tmp_path / "whole")
    resumed = _interrupted_then_resumed(cfg, ds, sp, tmp_path / "parts", monkeypatch)
    want, got = whole.model.state_dict(), resumed.model.state_dict()
    assert want.keys() == got.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    assert _no_times(resumed.report.history) == _no_times(whole.report.history)
    assert [h["epoch"] for h in resumed.report.history] == list(range(EPOCHS))
    assert (resumed.report.best_epoch, resumed.report.best_metric) == (
        whole.report.best_epoch,
        whole.report.best_metric,
    )
    assert [r.metrics for r in resumed.results] == [r.metrics for r in whole.results]


def test_a_sparse_rankers_row_optimiser_state_is_in_its_checkpoint(data, tmp_path):
    ds, sp = data
    cfg = _cfg("deepfm").updated({"train": {"epochs": 1}})
    res = fit(cfg, ds, sp, evaluate=False, checkpoint_dir=tmp_path)
    meta = json.loads((tmp_path / "last" / "checkpoint.json").read_text())
    classes = [o["class"] for o in meta["optimizers"]]
    assert "RowAdam" in classes, classes
    row = classes.index("RowAdam")
    steps = meta["optimizers"][row]["scalars"]
    n_tables = sum(1 for m in res.model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse)
    assert len(steps) == n_tables and all(s["step"] > 0 for s in steps.values())
    with safe_open(str(tmp_path / "last" / "train.safetensors"), "pt") as f:
        keys = set(f.keys())
    for pid in steps:
        assert {f"opt.{row}.{pid}.exp_avg", f"opt.{row}.{pid}.exp_avg_sq"} <= keys


def test_resuming_a_ranker_with_other_labels_is_refused_before_training(data, tmp_path):
    ds, sp = data
    cfg = _cfg("lr").updated({"train": {"epochs": 1}})
    fit(cfg, ds, sp, evaluate=False, checkpoint_dir=tmp_path)
    other = cfg.updated({"ctr": {"threshold": 3.0}, "train": {"epochs": 2}})
    with pytest.raises(CheckpointError, match="settings"):
        fit(other, ds, sp, evaluate=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="model 'lr'.*model 'fm'"):
        fit(
            cfg.updated({"model": {"name": "fm", "params": {}}}), ds, sp, checkpoint_dir=tmp_path, resume=True
        )
    done = fit(
        cfg.updated({"train": {"epochs": 2}}), ds, sp, evaluate=False, checkpoint_dir=tmp_path, resume=True
    )
    assert [h["epoch"] for h in done.report.history] == [0, 1]


def test_lightgbm_says_it_has_no_resume(data, tmp_path):
    ds, sp = data
    with pytest.raises(ConfigError, match="lightgbm has no --resume"):
        fit(_cfg("lightgbm"), ds, sp, checkpoint_dir=tmp_path, resume=True)
