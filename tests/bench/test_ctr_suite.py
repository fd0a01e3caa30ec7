"""Tests for the ctr-ml100k suite (quick mode) and its aggregation of seeds."""

from __future__ import annotations

import json

import pytest
import torch

from recfunnel.bench.ctr import aggregate, ctr_entries, run_ctr_suite
from recfunnel.bench.suites import ROW_CONTRACT
from recfunnel.settings import has_dataset

CONTRACT = ROW_CONTRACT


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the suite sets its own thread count


def test_the_line_up_is_every_ctr_model_and_lightgbm():
    labels = [e.label for e in ctr_entries()]
    assert labels == ["LR", "FM", "WideDeep", "DeepFM", "AutoInt", "DCNv2", "DLRM", "LightGBM"]
    for e in ctr_entries():
        if e.family != "lightgbm":
            assert e.train["monitor"] == "auc" and e.train["patience"] > 0  # early stopping on valid AUC


def test_unknown_model_lists_the_valid_labels():
    with pytest.raises(ValueError, match="NoSuch.*valid: LR, FM"):
        run_ctr_suite(quick=True, models=["NoSuch"])


@pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
def test_quick_run_gives_contract_rows_aggregates_and_the_throughput_comparison():
    rows = run_ctr_suite(
        quick=True, progress=False, models=["LR", "DeepFM", "LightGBM"], seeds=(0, 1), isolate=False
    )
    json.dumps(rows)  # serialisable as is
    per_seed = [r for r in rows if r["protocol"] == "pointwise" and not r.get("aggregate")]
    assert sorted((r["model"], r["seed"]) for r in per_seed) == [
        (m, s) for m in ("DeepFM", "LR", "LightGBM") for s in (0, 1)
    ]
    for r in per_seed:
        assert CONTRACT <= set(r), CONTRACT - set(r)
        assert r["suite"] == "ctr-ml100k" and r["quick"] is True and r["split"].startswith("temporal")
        assert {"auc", "logloss", "gauc"} <= set(r["metrics"]) and 0.5 < r["metrics"]["auc"] < 1
        assert r["params"] > 0 and r["samples_per_second"] > 0
    agg = {r["model"]: r for r in rows if r.get("aggregate")}
    assert set(agg) == {"LR", "DeepFM", "LightGBM"}
    assert agg["DeepFM"]["seeds"] == [0, 1] and "vs_lr" in agg["DeepFM"]
    assert "vs_lightgbm" in agg["DeepFM"]  # the only deep model here is the best one
    (tp,) = [r for r in rows if r["protocol"] == "throughput"]
    t = tp["throughput"]
    assert t["batch_size"] == 4096 and t["model"] == "deepfm"
    assert t["trainer_samples_per_second"] > 0 and t["plain_samples_per_second"] > 0
    assert t["overhead_percent"] == pytest.approx(
        100 * (t["trainer_median_cpu_seconds"] / t["plain_median_cpu_seconds"] - 1)
    )
    assert t["overhead_percent_wall"] == pytest.approx(
        100 * (t["trainer_median_seconds"] / t["plain_median_seconds"] - 1)
    )


def _row(model, family, seed, auc):
    return {
        "suite": "ctr-ml100k",
        "model": model,
        "family": family,
        "dataset": "d",
        "protocol": "pointwise",
        "split": "temporal",
        "part": "test",
        "seed": seed,
        "metrics": {"auc": auc, "logloss": 0.6, "gauc": auc},
        "train_seconds": 1.0,
        "eval_seconds": 0.1,
        "samples_per_second": 10.0,
        "peak_rss_mb": 100.0 + seed,
        "params": 5,
        "config": {},
        "epochs_run": 3,
        "best_epoch": 1,
        "pipeline_share": 0.1,
        "quick": False,
        "machine": {},
        "date": "",
    }


def test_aggregate_gives_mean_and_sample_std_and_checks_the_claims():
    rows = [_row("LR", "lr", s, a) for s, a in enumerate((0.69, 0.70, 0.71))]
    rows += [_row("DeepFM", "deepfm", s, a) for s, a in enumerate((0.72, 0.73, 0.74))]  # +0.03, std 0.01
    rows += [_row("AutoInt", "autoint", s, a) for s, a in enumerate((0.70, 0.71, 0.72))]  # +0.01
    rows += [_row("LightGBM", "lightgbm", s, a) for s, a in enumerate((0.735, 0.735, 0.735))]
    agg = {r["model"]: r for r in aggregate(rows)}
    d = agg["DeepFM"]
    assert d["metrics"]["auc"] == pytest.approx(0.73) and d["metrics_std"]["auc"] == pytest.approx(0.01)
    assert d["peak_rss_mb"] == 102.0 and d["seed"] is None and d["aggregate"] is True
    # a difference of 0.03 against a spread of sqrt(0.01^2 + 0.01^2) = 0.0141: more than 2 std
    assert d["vs_lr"]["diff_std"] == pytest.approx(0.01 * 2**0.5)
    assert d["vs_lr"]["beats_by_2_std"] is True
    assert agg["AutoInt"]["vs_lr"]["beats_by_2_std"] is False
    v = d["vs_lightgbm"]  # DeepFM is the best deep model
    assert v["auc_diff"] == pytest.approx(-0.005) and v["better"] is False
    assert v["not_significantly_worse"] is True
    assert "vs_lightgbm" not in agg["AutoInt"]
