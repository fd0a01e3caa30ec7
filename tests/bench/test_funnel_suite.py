"""The funnel-ml100k suite in quick mode on the real data: the row contract, metrics in [0, 1], the
candidates' recall bounding the final list's, and the retriever-alone row equal to full ranking."""

from __future__ import annotations

import json

import pytest

from recfunnel.bench.funnel import VARIANTS
from recfunnel.bench.suites import ROW_CONTRACT, SUITES, run_suite, write_json
from recfunnel.settings import has_dataset

needs_data = pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
RATES = {"ndcg@10", "recall@10", "hr@10", "mrr@10", "cand_recall@200", "cand_recall"}
STAGES = {"resolve", "retrieve.ann", "retrieve.popular", "merge", "rank", "filter", "order", "total"}
STAGES |= {"retrieve.ann.user_vector", "retrieve.ann.search"}  # the ANN retriever's own split


def test_the_suite_is_registered_and_refuses_unknown_variants():
    assert "funnel-ml100k" in SUITES
    with pytest.raises(ValueError, match="TwoTower\\+DeepFM-hard"):
        run_suite("funnel-ml100k", quick=True, models=["NoSuch"])


@pytest.fixture(scope="module")
def quick_rows():
    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root")
    return run_suite("funnel-ml100k", quick=True, progress=False, seeds=[0, 1])


@needs_data
def test_quick_rows_follow_the_contract(quick_rows, tmp_path):
    seeded = [r for r in quick_rows if not r.get("aggregate")]
    assert sorted((r["model"], r["seed"]) for r in seeded) == sorted((m, s) for m in VARIANTS for s in (0, 1))
    for r in quick_rows:
        assert ROW_CONTRACT <= set(r), (r["model"], ROW_CONTRACT - set(r))
        assert r["suite"] == "funnel-ml100k" and r["protocol"] == "funnel-loo" and r["quick"] is True
        assert r["dataset"].startswith("ml-100k") and r["split"].startswith("leave_one_out")
        m = r["metrics"]
        assert set(m) == RATES
        assert all(0.0 <= v <= 1.0 for v in m.values()), m
        # the final list is drawn from the merged candidates (the ANN's 200, then 50 popular ones)
        assert m["cand_recall"] >= m["cand_recall@200"] and m["cand_recall"] >= m["recall@10"]
        assert m["recall@10"] == pytest.approx(m["hr@10"])  # one held-out item per user
        assert set(r["stage_ms"]) == STAGES and all(v >= 0 for v in r["stage_ms"].values())
        assert r["train_seconds"] > 0 and r["eval_seconds"] > 0 and r["params"] > 0
        assert 200 < r["mean_candidates"] <= 250 and 0 < r["n_eval_users"] <= 300
    agg = [r for r in quick_rows if r.get("aggregate")]
    assert sorted(r["model"] for r in agg) == sorted(VARIANTS)
    for r in agg:
        assert r["seeds"] == [0, 1] and set(r["metrics_std"]) == RATES and set(r["stage_ms"]) == STAGES
    path = write_json(quick_rows, tmp_path / "rows.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(quick_rows))


@needs_data
def test_the_retriever_alone_is_its_full_ranking_and_ranked_rows_share_its_candidates(quick_rows):
    for seed in (0, 1):
        by = {r["model"]: r for r in quick_rows if r["seed"] == seed}
        alone = by["TwoTower"]
        # the ANN's top 10 among every unseen item: the two-tower's own full ranking, seen items masked
        assert alone["metrics"]["ndcg@10"] == pytest.approx(alone["config"]["reference_full"]["ndcg@10"])
        assert alone["metrics"]["recall@10"] == pytest.approx(alone["config"]["reference_full"]["recall@10"])
        assert alone["metrics"]["cand_recall@200"] >= alone["metrics"]["recall@10"]
        for label, row in by.items():
            # one retriever per seed: every variant ranks the same candidates
            for key in ("cand_recall@200", "cand_recall"):
                assert row["metrics"][key] == alone["metrics"][key], (label, key)
            if label != "TwoTower":
                assert set(row["paired"]) == set(VARIANTS) - {label}
                assert 0.5 <= row["ranker_valid"]["auc"] <= 1.0
