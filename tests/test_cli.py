"""The command line, driven as a user would: own files, TOML configs, bad input, artifacts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recfunnel.cli import app
from recfunnel.settings import has_dataset

runner = CliRunner()


def _plays_csv(path: Path, n_users: int = 60, seed: int = 0) -> Path:
    """Implicit feedback with play counts and no timestamps; users like items of their own cluster
    (6 of its 10 artists) and play 2 artists of their own beyond the 40, so the catalogue holds
    enough never-played artists per user for 99 distinct sampled negatives."""
    rng = np.random.default_rng(seed)
    rows = ["user_id,artist,plays"]
    for u in range(n_users):
        cluster = u % 4
        items = rng.choice(np.arange(cluster * 10, cluster * 10 + 10), size=6, replace=False)
        own = 40 + 2 * u + np.arange(2)
        for i in sorted(set(items.tolist()) | set(own.tolist())):
            rows.append(f"u{u},a{i},{int(rng.integers(1, 50))}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _train_plays(tmp_path: Path, model: str, out: Path, *extra, split: str = "random_holdout"):
    """`recfunnel train` on the plays CSV (user_id, artist) with `model`, writing `out`."""
    csv = _plays_csv(tmp_path / "plays.csv")
    return _invoke(
        "train", "--table", csv, "--user-col", "user_id", "--item-col", "artist", "--split", split,
        "-m", model, "--no-progress", "-o", out, *extra,
    )  # fmt: skip


def test_every_command_has_help_that_explains_options():
    commands = ("train", "evaluate", "recommend", "similar", "index", "explain", "models", "datasets")
    for cmd in (*commands, "bench", "bench-report"):
        res = _invoke(cmd, "--help")
        assert res.exit_code == 0, res.output
        assert "Usage" in res.output


def test_train_on_own_csv_with_play_counts_and_no_timestamps(tmp_path):
    csv = _plays_csv(tmp_path / "plays.csv")
    out = tmp_path / "art"
    res = _invoke(
        "train",
        "--table",
        csv,
        "--user-col",
        "user_id",
        "--item-col",
        "artist",
        "--weight-col",
        "plays",
        "--split",
        "random_holdout",
        "-m",
        "ease",
        "-o",
        out,
        "--no-progress",
        "--json",
        tmp_path / "r.json",
    )
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").is_file() and (out / "split.npz").is_file()
    results = json.loads((tmp_path / "r.json").read_text())
    assert {r["protocol"] for r in results} == {"full", "sampled-99"}
    assert all(r["split"].startswith("random_holdout") for r in results)
    # evaluating the saved artifact reproduces the training run's figures exactly (same saved split)
    res = _invoke("evaluate", out, "-k", "5", "-k", "10", "-k", "20")
    assert res.exit_code == 0, res.output
    full = next(r for r in results if r["protocol"] == "full")
    assert f"{full['metrics']['ndcg@10']:.4f}" in res.output
    # and recommends with raw ids, never an item the user already played
    res = _invoke("recommend", out, "-u", "u0", "-k", "5")
    assert res.exit_code == 0, res.output
    seen = {line.split(",")[1] for line in csv.read_text().splitlines()[1:] if line.startswith("u0,")}
    shown = set(re.findall(r"\ba\d+\b", res.output))
    assert shown and not (shown & seen)


def test_time_based_split_on_data_without_time_says_so(tmp_path):
    res = _train_plays(tmp_path, "popularity", tmp_path / "a", split="leave_one_out")
    assert res.exit_code == 2
    assert "no timestamp" in res.output and "random_holdout" in res.output


def test_toml_config_with_rating_threshold(tmp_path):
    tsv = tmp_path / "ratings.tsv"
    rng = np.random.default_rng(1)
    lines = [
        f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{1000 + 7 * k}"
        for k, (u, i) in enumerate((u, (4 * u + j) % 120) for u in range(30) for j in range(8))
    ]
    tsv.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[data]
rating_threshold = 3
[data.table]
path = "{tsv}"
header = false
user = 0
item = 1
rating = 2
timestamp = 3
[split]
method = "leave_one_out"
[model]
name = "popularity"
""")
    res = _invoke("train", "-c", cfg, "-o", tmp_path / "a", "--no-progress", "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    kept = sum(int(line.split("\t")[2]) >= 3 for line in lines)
    assert manifest["extra"]["dataset"]["interactions"] == kept


def test_unknown_model_lists_valid_names(tmp_path):
    res = _invoke("train", "-m", "nosuchmodel", "-o", tmp_path / "a", "--no-progress")
    assert res.exit_code == 2
    assert "nosuchmodel" in res.output and "neumf" in res.output and "ease" in res.output


def test_unknown_suite_lists_valid_names():
    res = _invoke("bench", "nosuchsuite")
    assert res.exit_code == 2
    assert "ncf-ml100k" in res.output


def test_bad_param_value_is_rejected_with_reason(tmp_path):
    res = _train_plays(tmp_path, "ease", tmp_path / "a", "-p", "l2=-1")
    assert res.exit_code == 2
    assert "l2" in res.output


def test_half_written_artifact_is_refused_with_a_clear_error(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "weights.safetensors").write_bytes(b"partial")
    res = _invoke("recommend", broken, "-u", "1")
    assert res.exit_code == 2
    assert "manifest" in res.output.lower()


def test_train_resume_continues_from_checkpoint(tmp_path):
    common = ("--batch-size", "64")
    res = _train_plays(tmp_path, "gmf", tmp_path / "a", *common, "--epochs", "2")
    assert res.exit_code == 0, res.output
    log = json.loads((tmp_path / "a.ckpt" / "log.json").read_text())
    assert len(log) == 2
    res = _train_plays(tmp_path, "gmf", tmp_path / "a", *common, "--epochs", "3", "--resume")
    assert res.exit_code == 0, res.output
    log = json.loads((tmp_path / "a.ckpt" / "log.json").read_text())
    assert [e["epoch"] for e in log] == [0, 1, 2]


def test_missing_table_file_names_it(tmp_path):
    res = _invoke(
        "train",
        "--table",
        tmp_path / "absent.csv",
        "--user-col",
        "u",
        "--item-col",
        "i",
        "-m",
        "popularity",
        "-o",
        tmp_path / "a",
        "--no-progress",
    )
    assert res.exit_code == 2
    assert "absent.csv" in res.output


@pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
def test_main_job_prints_results_and_titled_top10_on_movielens(tmp_path):
    res = _invoke(
        "train",
        "-m",
        "ease",
        "--dataset",
        "ml-100k",
        "-o",
        tmp_path / "a",
        "--no-progress",
        "--show-user",
        "1",
    )
    assert res.exit_code == 0, res.output
    assert "sampled-99" in res.output and "full" in res.output
    assert "top-10 for user 1" in res.output and "(19" in res.output  # titles carry a year


def test_recommend_through_an_ann_index_matches_exact(tmp_path):
    out = tmp_path / "mf"
    res = _train_plays(tmp_path, "mf", out, "--epochs", "2", "--batch-size", "64")
    assert res.exit_code == 0, res.output
    res = _invoke("index", out, "--backend", "hnsw", "-p", "ef_search=64")
    assert res.exit_code == 0, res.output
    assert (out / "index" / "hnsw" / "meta.json").is_file()
    exact = _invoke("recommend", out, "-u", "u3", "-k", "5")
    via = _invoke("recommend", out, "-u", "u3", "-k", "5", "--index", "hnsw")
    assert via.exit_code == 0, via.output
    rows = lambda text: [line for line in text.splitlines() if re.search(r"│\s+\d+\s+│", line)]  # noqa: E731
    assert rows(exact.output) == rows(via.output) and len(rows(via.output)) == 5


def test_index_of_a_model_without_item_vectors_is_refused(tmp_path):
    out = tmp_path / "ease"
    assert _train_plays(tmp_path, "ease", out).exit_code == 0
    res = _invoke("index", out)
    assert res.exit_code == 2 and "item vectors" in res.output


@pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")
def test_explain_rejects_an_unknown_user_before_training():
    res = _invoke("explain", "-u", "no-such-user", "-i", "50")
    assert res.exit_code == 2 and "no-such-user" in res.output


def test_recommend_for_an_ad_hoc_list_of_recent_items(tmp_path):
    # sequences: user u walks items 3u, 3u+1, 3u+2, ... (mod 120), one step per time unit
    rows = ["user,item,ts"]
    for u in range(40):
        for t in range(8):
            rows.append(f"u{u},i{(3 * u + t) % 120},{t}")
    csv = tmp_path / "walks.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "sas"
    res = _invoke(
        "train",
        "--table",
        csv,
        "--user-col",
        "user",
        "--item-col",
        "item",
        "--timestamp-col",
        "ts",
        "-m",
        "sasrec",
        "--epochs",
        "1",
        "--no-progress",
        "-o",
        out,
    )
    assert res.exit_code == 0, res.output
    res = _invoke("recommend", out, "-i", "i3", "-i", "i4", "-k", "5")
    assert res.exit_code == 0, res.output
    assert "recent items i3 > i4" in " ".join(res.output.split())
    listed = re.findall(r"│\s+\d+\s+│\s+(i\d+)\s+│", res.output)
    assert len(listed) == 5 and not {"i3", "i4"} & set(listed)  # the given items are excluded
    bad = _invoke("recommend", out, "-i", "nope")
    assert bad.exit_code != 0 and "nope" in bad.output
    both = _invoke("recommend", out, "-i", "i3", "-u", "u1")
    assert both.exit_code != 0 and "either --user" in both.output
    not_seq = tmp_path / "mf"
    csv2 = _plays_csv(tmp_path / "plays.csv")
    args = ("--user-col", "user_id", "--item-col", "artist", "--split", "random_holdout", "-m", "mf")
    assert (
        _invoke("train", "--table", csv2, *args, "--epochs", "1", "--no-progress", "-o", not_seq).exit_code
        == 0
    )
    res = _invoke("recommend", not_seq, "-i", "a1")
    assert res.exit_code != 0 and "sequence model" in res.output


@pytest.mark.skipif(not has_dataset("diginetica-sample"), reason="diginetica-sample not under the data root")
def test_bench_for_some_models_replaces_only_their_rows(tmp_path):
    out = tmp_path / "rows.json"
    other = {"model": "GRU4Rec", "protocol": "full", "dataset": "diginetica-sample", "kept": True}
    stale = {"model": "Popularity", "protocol": "full", "dataset": "diginetica-sample", "stale": True}
    out.write_text(json.dumps([other, stale]))
    res = _invoke(
        "bench", "session-diginetica", "--quick", "-m", "Popularity", "--json", out, "--no-progress"
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert rows[0] == other and not any(r.get("stale") for r in rows)
    assert {(r["model"], r["protocol"]) for r in rows[1:]} == {
        ("Popularity", "full"),
        ("Popularity", "full-unmasked"),
    }
    bad = _invoke("bench", "session-diginetica", "--quick", "-m", "NoSuch", "--no-progress")
    assert bad.exit_code != 0 and "NoSuch" in bad.output
