"""The out-of-core bench (recfunnel.bench.out_of_core): a generated Parquet folder read, split,
trained on (MF-BPR, one epoch) and evaluated (full ranking of a test-user sample) in a fresh
process, with seconds, own peak RSS and RSS held per phase, and rows per second."""

from __future__ import annotations

import pytest

from recfunnel.bench.out_of_core import TARGET_PEAK_RSS_MB, run
from recfunnel.bench.suites import SUITES


@pytest.fixture(scope="module")
def row(tmp_path_factory):
    data = tmp_path_factory.mktemp("ooc") / "data"
    (row,) = run(rows=20_000, users=2_000, items=500, files=2, data_dir=data, eval_users=200, eval_batch=64)
    assert any(data.glob("part-*.parquet"))  # generated into the folder named, kept for reuse
    return row


def test_row_reports_each_phase_with_its_own_peak_and_the_overall_peak(row):
    phases = row["phases"]
    assert list(phases) == ["read", "split", "train", "evaluate"]
    for fig in phases.values():
        assert fig["seconds"] >= 0 and fig["peak_rss_mb"] > 0 and fig["rss_mb_after"] > 0
    assert row["peak_rss_mb"] == max([row["startup_rss_mb"]] + [f["peak_rss_mb"] for f in phases.values()])
    assert row["target_peak_rss_mb"] == TARGET_PEAK_RSS_MB and row["under_target"] is True


def test_row_gives_rows_per_second_of_reading_and_training_and_the_full_ranking_figures(row):
    assert row["rows"] == 20_000 and row["generate"]["rows"] == 20_000
    assert row["read_rows_per_second"] > 0 and row["train"]["rows_per_second"] > 0
    split = row["split_rows"]
    assert split["train"] + split["valid"] + split["test"] == 20_000 and row["split"].startswith(
        "random_holdout"
    )
    assert row["train"]["rows"] == split["train"] and row["train"]["steps"] >= 1
    ev = row["evaluate"]
    assert ev["users"] == 200 and ev["batch_users"] == 64
    assert set(ev["metrics"]) >= {"ndcg@10", "recall@20"} and row["metrics"] == ev["metrics"]
    assert row["protocol"] == "full" and row["suite"] == "out-of-core" and not row["quick"]
    assert "--rows 20000" in row["command"]


def test_suite_is_registered_and_quick_takes_ci_sizes():
    import inspect

    assert "out-of-core" in SUITES
    assert inspect.signature(run).parameters["quick"].default is False
