"""Sequence bench suites: names, the row contract on a quick run, per-model filtering."""

import inspect
import json

import pytest

from recfunnel.bench.seq import SEQ_SUITES, run_seq_suite, write_rows
from recfunnel.bench.suites import ROW_CONTRACT, SUITES
from recfunnel.eval.guardrails import metric_bounds
from recfunnel.settings import has_dataset

CONTRACT = ROW_CONTRACT | {"seconds_per_epoch", "positions_per_second", "seconds_to_best_epoch"}


def test_suite_names_and_signature_match_the_bench_registry():
    assert set(SEQ_SUITES) == {"seq-video", "seq-ml100k", "session-diginetica"}
    reference = next(iter(SUITES.values()))
    want = set(inspect.signature(reference).parameters)
    for fn in SEQ_SUITES.values():
        assert want <= set(inspect.signature(fn).parameters)


def test_unknown_suite_and_unknown_model_are_named():
    with pytest.raises(ValueError, match="no-such-suite"):
        run_seq_suite("no-such-suite", quick=True)
    with pytest.raises(ValueError, match="NoSuchModel"):
        run_seq_suite("session-diginetica", quick=True, models=["NoSuchModel"])
    with pytest.raises(ValueError, match="at least one training seed"):
        run_seq_suite("session-diginetica", quick=True, seeds=())


@pytest.mark.skipif(not has_dataset("diginetica-sample"), reason="diginetica-sample not under the data root")
def test_quick_session_suite_rows_follow_the_contract(tmp_path):
    rows = run_seq_suite("session-diginetica", quick=True, progress=False, isolate=False, threads=1)
    assert {r["model"] for r in rows} == {"Popularity", "GRU4Rec", "SASRec"}
    for r in rows:
        assert CONTRACT <= set(r), CONTRACT - set(r)
        assert r["suite"] == "session-diginetica" and r["quick"] is True
        assert {"recall@20", "mrr@20"} <= set(r["metrics"])
        for k, v in r["metrics"].items():
            lo, hi = metric_bounds(k)
            assert lo <= v <= hi, (k, v)
    assert [r["protocol"] for r in rows if r["model"] == "SASRec"] == ["full-unmasked", "full"]
    assert rows[0]["data"]["n_items"] < 7139  # SR-GNN's cleaning dropped rare items
    for r in rows:
        if r["model"] != "Popularity":
            assert r["epochs_run"] == 2 and r["seconds_per_epoch"] > 0 and r["positions_per_second"] > 0
            assert r["config"]["objective"]["name"] == "seq-ce"
    path = write_rows(rows, tmp_path / "rows.json")
    assert json.loads(path.read_text()) == json.loads(json.dumps(rows))


def test_an_entry_chooses_its_epoch_on_its_own_valid_protocol():
    """seq-video validates on the sampled protocol unless an entry names another: the tuned
    SASRec-SCE is early-stopped on full ranking (the protocol its bar is set on)."""
    from recfunnel.bench.seq import SPECS, _Job, _run_config

    spec = SPECS["seq-video"]
    by_label = {e.label: e for e in spec.entries}

    def valid(label: str) -> str:
        job = _Job(spec, by_label[label], False, None, False, False, 1)
        return _run_config(job).eval.valid_protocol

    assert valid("SASRec-SCE") == "sampled"
    assert valid("SASRec-SCE-tuned") == "full"
    assert by_label["SASRec-SCE-tuned"].objective == by_label["SASRec-SCE"].objective
    session = SPECS["session-diginetica"]  # no fixed negatives: the suite's first protocol
    job = _Job(session, session.entries[-1], False, None, False, False, 1)
    assert _run_config(job).eval.valid_protocol == "full-unmasked"


@pytest.mark.skipif(not has_dataset("diginetica-sample"), reason="diginetica-sample not under the data root")
def test_seeds_give_one_row_each_then_mean_and_std_rows():
    rows = run_seq_suite(
        "session-diginetica", quick=True, progress=False, isolate=False, models=["GRU4Rec"], seeds=(0, 1)
    )
    runs = [r for r in rows if not r.get("aggregate")]
    agg = [r for r in rows if r.get("aggregate")]
    assert sorted((r["seed"], r["protocol"]) for r in runs) == sorted(
        (s, p) for s in (0, 1) for p in ("full-unmasked", "full")
    )
    assert [r["config"]["train"]["seed"] for r in runs] == [0, 0, 1, 1]  # the training seed moved
    by_seed = {r["seed"]: r for r in runs if r["protocol"] == "full"}
    assert by_seed[0]["metrics"] != by_seed[1]["metrics"]  # another initialisation, other figures
    assert {r["protocol"] for r in agg} == {"full-unmasked", "full"}
    a = next(r for r in agg if r["protocol"] == "full")
    assert a["seeds"] == [0, 1] and a["best_epochs"] == [by_seed[0]["best_epoch"], by_seed[1]["best_epoch"]]
    want = (by_seed[0]["metrics"]["recall@20"] + by_seed[1]["metrics"]["recall@20"]) / 2
    assert a["metrics"]["recall@20"] == pytest.approx(want)
    spe = [by_seed[s]["seconds_per_epoch"] for s in (0, 1)]
    assert a["seconds_per_epoch"] == pytest.approx(sum(spe) / 2) and a["seconds_per_epoch_std"] >= 0
