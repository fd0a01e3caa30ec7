import json

import pytest

from recfunnel.bench.suites import ROW_CONTRACT, SUITES, run_suite, write_json
from recfunnel.settings import has_dataset

CONTRACT = ROW_CONTRACT
MODELS = {"Popularity", "EASE", "MF-BPR", "GMF", "MLP", "NeuMF", "NeuMF-pretrain"}


needs_data = pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")


def test_unknown_suite_lists_valid_names():
    with pytest.raises(ValueError) as e:
        run_suite("no-such-suite", quick=True)
    assert "no-such-suite" in str(e.value)
    for name in SUITES:
        assert name in str(e.value)


@needs_data
def test_unknown_model_lists_valid_models():
    with pytest.raises(ValueError, match="NeuMF-pretrain"):
        run_suite("ncf-ml100k", quick=True, models=["nope"])


@pytest.fixture(scope="module")
def quick_rows():
    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root")
    return run_suite("ncf-ml100k", quick=True, progress=False)


@needs_data
@pytest.mark.slow
def test_quick_suite_rows_follow_the_contract(quick_rows, tmp_path):
    rows = quick_rows
    try:
        import implicit  # noqa: F401

        expected = MODELS | {"implicit-bpr"}
    except ImportError:
        expected = MODELS
    assert {r["model"] for r in rows} == expected
    for model in expected:
        got = sorted(r["protocol"] for r in rows if r["model"] == model)
        assert got == ["full", "sampled-99"], model
    for r in rows:
        assert CONTRACT <= set(r), (r["model"], CONTRACT - set(r))
        assert r["suite"] == "ncf-ml100k" and r["dataset"] == "ml-100k" and r["quick"] is True
        for k in (5, 10, 20):
            for m in ("hr", "ndcg"):
                assert 0.0 <= r["metrics"][f"{m}@{k}"] <= 1.0
        assert isinstance(r["params"], int) and r["params"] > 0
        assert r["train_seconds"] >= 0 and r["eval_seconds"] > 0 and r["peak_rss_mb"] > 0
        assert r["machine"]["torch_threads"] >= 1 and r["date"].endswith("+00:00")
    by = {(r["model"], r["protocol"]): r for r in rows}
    # the popularity baseline is deterministic and training-free: same numbers in quick and full runs
    # (99 distinct fixed negatives per user, seed 0)
    assert by[("Popularity", "sampled-99")]["metrics"]["hr@10"] == pytest.approx(0.4093, abs=1e-4)
    neumf = by[("NeuMF", "sampled-99")]
    assert neumf["samples_per_second"] > 0 and 0 <= neumf["pipeline_share"] < 1
    assert neumf["config"]["model"]["params"]["layers"] == [64, 32, 16, 8]
    pre = by[("NeuMF-pretrain", "full")]
    assert pre["pretrain_seconds"] > 0 and pre["train_seconds"] >= pre["pretrain_seconds"]
    assert pre["config"]["model"]["pretrain"] and pre["config"]["model"]["finetune"]["epochs"] == 1
    if "implicit-bpr" in expected:
        comp = by[("MF-BPR", "full")]["comparison"]
        assert comp["same_epochs"] == by[("implicit-bpr", "full")]["epochs_run"]
        assert comp["ratio_ours_over_implicit"] > 0
    # rows are JSON-serialisable as they are
    path = write_json(rows, tmp_path / "rows.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(rows))


@needs_data
def test_isolated_run_measures_its_own_process():
    rows = run_suite("ncf-ml100k", quick=True, progress=False, models=["Popularity"], isolate=True)
    assert [r["protocol"] for r in rows] == ["full", "sampled-99"]
    assert rows[0]["peak_rss_scope"].startswith("model")
    assert rows[1]["metrics"]["hr@10"] == pytest.approx(0.4093, abs=1e-4)


def test_factor_scorer_scores_are_dot_products_including_the_bias_column():
    import numpy as np
    import torch

    from recfunnel.bench.ncf import _FactorScorer

    rng = np.random.default_rng(0)
    uf = rng.normal(size=(5, 4)).astype(np.float32)
    uf[:, -1] = 1.0  # implicit's layout: users carry a 1 against the items' bias column
    itf = rng.normal(size=(7, 4)).astype(np.float32)
    s = _FactorScorer(uf, itf)
    users = torch.tensor([0, 3])
    full = s.score_all(users)
    assert full.shape == (2, 7)
    assert torch.allclose(full, torch.from_numpy(uf[[0, 3]] @ itf.T), atol=1e-6)
    items = torch.tensor([[1, 6, 2], [0, 0, 5]])
    assert torch.allclose(s.score(users, items), torch.gather(full, 1, items), atol=1e-6)


def test_merged_with_file_replaces_only_the_rerun_rows(tmp_path):
    from recfunnel.bench.suites import merged_with_file

    path = tmp_path / "rows.json"
    assert merged_with_file([{"model": "A"}], path, lambda r: True) == [{"model": "A"}]  # no file yet
    path.write_text(json.dumps([{"model": "A", "v": 1}, {"model": "B", "v": 1}]))
    got = merged_with_file([{"model": "B", "v": 2}], path, lambda r: r["model"] == "B")
    assert got == [{"model": "A", "v": 1}, {"model": "B", "v": 2}]


def test_optimiser_step_bench_reports_both_optimisers_per_size():
    from recfunnel.bench.optim import run

    rows = run([500], dim=8, repeats=1)
    assert len(rows) == 1 and rows[0]["params"] == 4000 and rows[0]["suite"] == "optim"
    m = rows[0]["metrics"]
    assert m["sparse_adam_ms"] > 0 and m["dense_adam_ms"] > 0
    assert m["dense_over_sparse"] == pytest.approx(m["dense_adam_ms"] / m["sparse_adam_ms"])


def test_aggregate_seeds_gives_mean_and_sample_std_per_model_and_protocol():
    from recfunnel.bench.suites import aggregate_seeds

    rows = [
        {
            "model": "A",
            "protocol": "full",
            "dataset": "d",
            "seed": s,
            "metrics": {"ndcg@10": v},
            "train_seconds": t,
        }
        for s, v, t in [(0, 0.1, 1.0), (1, 0.2, 3.0), (2, 0.3, 5.0)]
    ] + [{"model": "B", "protocol": "full", "dataset": "d", "seed": 0, "metrics": {"ndcg@10": 0.5}}]
    (agg,) = aggregate_seeds(rows)  # B has one seed: no aggregate
    assert agg["model"] == "A" and agg["aggregate"] and agg["seeds"] == [0, 1, 2] and agg["seed"] is None
    assert agg["metrics"]["ndcg@10"] == pytest.approx(0.2)
    assert agg["metrics_std"]["ndcg@10"] == pytest.approx(0.1)  # ddof=1
    assert agg["train_seconds"] == pytest.approx(3.0)


def test_seeds_are_refused_by_suites_that_run_one():
    from recfunnel.bench.suites import run_suite

    with pytest.raises(ValueError, match="does not take seeds"):
        run_suite("ncf-ml100k", quick=True, seeds=[0, 1])
    with pytest.raises(ValueError, match="does not take seeds"):
        run_suite("ann", quick=True, seeds=[0, 1])


def test_report_states_the_side_by_side_median_ratio():
    from recfunnel.bench.report import _comparison

    side = {"rounds": 3, "epochs": 60, "ratios": [2.5, 2.0, 3.0], "median_ratio": 2.5}
    rows = [
        {"model": "implicit-bpr", "protocol": "full", "metrics": {}},
        {
            "model": "MF-BPR",
            "protocol": "full",
            "metrics": {},
            "comparison": {
                "against": "implicit-bpr",
                "ratio_ours_over_implicit": 2.7,
                "same_epochs": 60,
                "side_by_side": side,
            },
        },
    ]
    (line,) = _comparison(rows)
    assert "ratio ours/implicit = 2.70x" in line
    assert "3 alternating rounds of 60 epochs" in line and "median ratio ours/implicit = 2.50x" in line
    assert "2.50, 2.00, 3.00" in line
