"""The ann suite in quick mode on a small synthetic set: row contract, recall against exact, JSON out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recfunnel.bench.ann import QUICK_SWEEPS, VectorSet, run_ann_suite, synthetic_clusters

ROW_KEYS = {
    "suite",
    "model",
    "backend",
    "dataset",
    "params",
    "search_param",
    "default",
    "metrics",
    "speedup_1t",
    "speedup_2t",
    "build_seconds",
    "build_threads",
    "index_mb",
    "n_items",
    "dim",
    "n_queries",
    "machine",
    "date",
    "quick",
}
METRICS = {"recall@10", "recall@100", "qps_1t", "qps_2t", "qps_1t_k100"}


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory):
    rng = np.random.default_rng(3)
    model_like = VectorSet(
        "model-like",
        rng.standard_normal((400, 8)).astype(np.float32),
        rng.standard_normal((30, 8)).astype(np.float32),
        bias=rng.standard_normal(400).astype(np.float32),
        normalize=False,
    )
    out = tmp_path_factory.mktemp("ann") / "ann.json"
    rows = run_ann_suite(
        quick=True,
        progress=False,
        vectors={"model-like": model_like},
        models=["hnsw", "ivf"],
        synthetic_size=3000,
        out=out,
    )
    return rows, out


def test_quick_rows_follow_the_contract(quick_rows):
    rows, _ = quick_rows
    assert {r["dataset"] for r in rows} == {"synthetic-3k-64d", "model-like"}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert set(r["metrics"]) == METRICS and r["suite"] == "ann" and r["quick"] is True
        assert 0.0 <= r["metrics"]["recall@10"] <= 1.0 and r["metrics"]["qps_1t"] > 0
    for dataset in ("synthetic-3k-64d", "model-like"):
        got = [r for r in rows if r["dataset"] == dataset]
        assert [r["backend"] for r in got] == ["exact"] + ["hnsw"] * 2 + ["ivf"] * 2
        assert [r["search_param"] for r in got if r["backend"] == "hnsw"] == [
            {"ef_search": v} for v in QUICK_SWEEPS["hnsw"][1]
        ]


def test_exact_is_the_reference_and_hnsw_is_close(quick_rows):
    rows, _ = quick_rows
    for r in rows:
        if r["backend"] == "exact":
            assert r["metrics"]["recall@10"] == 1.0 and r["speedup_1t"] == 1.0
        if r["backend"] == "hnsw" and r["search_param"]["ef_search"] >= 128:
            assert r["metrics"]["recall@10"] >= 0.95 and r["metrics"]["recall@100"] >= 0.95
    model_rows = [r for r in rows if r["dataset"] == "model-like"]
    assert all(r["item_bias"] and not r["normalize"] for r in model_rows)


def test_rows_are_written_as_json(quick_rows):
    rows, out = quick_rows
    assert json.loads(out.read_text()) == json.loads(json.dumps(rows))


def test_synthetic_set_is_seeded():
    a, b = synthetic_clusters(500, n_queries=5, seed=1), synthetic_clusters(500, n_queries=5, seed=1)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.queries, b.queries)
    assert a.items.shape == (500, 64) and a.name == "synthetic-500-64d"


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: exact, hnsw, ivf, ivfpq"):
        run_ann_suite(quick=True, progress=False, models=["annoy"], vectors={})


def test_a_subset_of_sets_keeps_the_other_sets_rows_in_out(tmp_path):
    out = tmp_path / "ann.json"
    old = [{"dataset": "ml-100k MF-BPR", "backend": "exact"}, {"dataset": "synthetic-2k-64d", "stale": 1}]
    out.write_text(json.dumps(old))
    rows = run_ann_suite(
        quick=True, progress=False, models=["hnsw"], synthetic_size=2000, out=out, sets=["synthetic"]
    )
    saved = json.loads(out.read_text())
    assert saved[0] == old[0] and not any(r.get("stale") for r in saved)
    assert saved[1:] == json.loads(json.dumps(rows)) and {r["dataset"] for r in rows} == {"synthetic-2k-64d"}
    with pytest.raises(ValueError, match="valid: synthetic, mf, two-tower"):
        run_ann_suite(quick=True, progress=False, vectors={}, sets=["glove"])
