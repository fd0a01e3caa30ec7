"""`recfunnel train` options that used to need a TOML file (--encoding, --timestamp-format),
--device, and --resume for a family without checkpoints (LightGBM)."""

from __future__ import annotations

import pytest
import torch
from conftest import invoke, train_args, write_plays

from recfunnel.recommender import Recommender


def _latin1_csv(path):
    rows = ["user_id,artist"] + [f"u{u},{a}" for u in range(12) for a in ("Beyoncé", "Björk", f"a{u % 3}")]
    path.write_bytes(("\n".join(rows) + "\n").encode("latin1"))
    return path


def _args(csv, out, *extra):
    """`train` popularity on a small catalogue: too few items for sampled negatives, so none."""
    return ("train", "--table", csv, "--user-col", "user_id", "--item-col", "artist", "-m", "popularity",
            "--eval-negatives", "0", "--no-progress", "-o", out, *extra)  # fmt: skip


def test_encoding_flag_reads_a_latin1_file(tmp_path):
    csv, out = _latin1_csv(tmp_path / "plays.csv"), tmp_path / "pop"
    res = invoke(*_args(csv, out, "--split", "random_holdout", "--encoding", "latin1", "--device", "cpu"))
    assert res.exit_code == 0, res.output
    assert {"Beyoncé", "Björk"} <= set(Recommender.load(out).items_.ids)


def test_timestamp_format_flag_parses_dates_for_a_time_split(tmp_path):
    rows = ["user_id,artist,when"] + [
        f"u{u},a{(u + t) % 9},2024-03-{t + 1:02d} 12:{u:02d}:00" for u in range(12) for t in range(5)
    ]
    csv = tmp_path / "dated.csv"
    csv.write_text("\n".join(rows) + "\n")
    res = invoke(
        *_args(csv, tmp_path / "pop", "--timestamp-col", "when", "--timestamp-format", "%Y-%m-%d %H:%M:%S"),
        "--split", "leave_one_out",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "leave_one_out" in res.output


def test_text_format_flags_need_a_table_and_a_known_encoding(tmp_path):
    res = invoke("train", "-m", "popularity", "--encoding", "latin1", "-o", tmp_path / "a", "--no-progress")
    assert res.exit_code == 2 and "--table" in res.output
    res = invoke(*_args(_latin1_csv(tmp_path / "p.csv"), tmp_path / "a", "--encoding", "cp1252"))
    assert res.exit_code == 2 and "utf8, latin1" in res.output


def test_device_is_validated(tmp_path):
    csv = _latin1_csv(tmp_path / "p.csv")
    res = invoke(*_args(csv, tmp_path / "a", "--device", "tpu"))
    assert res.exit_code == 2 and "auto, cpu, cuda" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_cuda_device_is_refused(tmp_path):
    res = invoke(*_args(_latin1_csv(tmp_path / "p.csv"), tmp_path / "a", "--device", "cuda"))
    assert res.exit_code == 2 and "no CUDA device" in res.output


def test_resume_of_lightgbm_says_it_has_none_in_one_line(tmp_path):
    csv = write_plays(tmp_path / "plays.csv")
    res = invoke(*train_args(csv, tmp_path / "gbdt", "lightgbm", "--resume"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "lightgbm has no --resume" in res.output
