"""Bench rows: the epoch log and fit figures every suite writes the same way, and every suite
fitting through recfunnel.run (none assembles data -> model -> objective -> Trainer itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

import recfunnel.bench
from recfunnel.bench.rows import ROW_CONTRACT, fit_figures, valid_history
from recfunnel.settings import has_dataset
from recfunnel.train.trainer import TrainReport

HISTORY = [
    {"epoch": 0, "loss": 0.7, "train_seconds": 1.0, "valid_seconds": 0.2, "valid": {"auc": 0.6}},
    {"epoch": 1, "loss": 0.6, "train_seconds": 1.5, "valid_seconds": 0.3, "valid": {"auc": 0.65}},
]


def test_valid_history_keeps_loss_and_prefixes_validation_metrics():
    report = TrainReport(history=HISTORY, best_epoch=1)
    assert valid_history(report) == [
        {"epoch": 0, "loss": 0.7, "valid_auc": 0.6},
        {"epoch": 1, "loss": 0.6, "valid_auc": 0.65},
    ]
    timed = valid_history(report, timings=True)
    want = {"epoch": 1, "loss": 0.6, "train_seconds": 1.5, "valid_seconds": 0.3, "valid_auc": 0.65}
    assert timed[1] == want
    assert valid_history(None) == [] and valid_history(TrainReport()) == []


@pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
def test_fit_figures_of_a_closed_form_fit_have_no_epochs_and_print_the_run_config():
    from recfunnel.run import ModelSection, RunConfig, fit

    res = fit(RunConfig(model=ModelSection(name="popularity")), evaluate=False)
    fig = fit_figures(res)
    assert fig["family"] == "popularity" and fig["params"] == res.dataset.n_items  # the item counts
    assert fig["train_seconds"] == res.seconds and fig["epochs_run"] is None and fig["valid_history"] == []
    assert "progress" not in fig["config"]["train"] and fig["config"]["split"]["method"] == "leave_one_out"
    assert ROW_CONTRACT & {"params", "config", "epochs_run", "best_epoch", "pipeline_share"} <= set(fig)


def test_no_bench_module_assembles_a_fit_itself():
    folder = Path(recfunnel.bench.__file__).parent
    for path in folder.glob("*.py"):
        src = path.read_text(encoding="utf-8")
        assert "recfunnel.pipeline" not in src, path.name
        assert "build_objective" not in src and "_register(" not in src, path.name
        if path.name != "ease_memory.py":  # measures EASE.fit_matrix's peak memory on a bare matrix
            assert "build_model(" not in src, path.name
        # ctr.py times the Trainer against a plain loop, ctr_peer.py against deepctr-torch's fit,
        # both on rows encoded once (a run's fit would time the encoding too)
        if path.name not in ("ctr.py", "ctr_peer.py"):
            assert "Trainer(" not in src, path.name
