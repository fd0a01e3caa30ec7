"""The CLI's top level: a library error, ValueError, KeyError or missing file becomes one line
`error: ...` (exit 2); --debug or RECFUNNEL_DEBUG=1 lets the traceback through."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import invoke, train_args, write_plays

from recfunnel.errors import RecfunnelError


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def test_resume_after_a_shape_change_is_one_line_not_a_traceback(tmp_path):
    csv, out = write_plays(tmp_path / "plays.csv"), tmp_path / "gmf"
    first = invoke(*train_args(csv, out, "gmf", "-p", "factors=4", "--epochs", "1"))
    assert first.exit_code == 0, first.output
    res = invoke(*train_args(csv, out, "gmf", "-p", "factors=8", "--epochs", "1", "--resume"))
    assert res.exit_code == 2
    lines = _error_lines(res.output)
    assert lines[-1].startswith("error:") and "Traceback" not in res.output
    assert "checkpoint" in lines[-1].lower()


def test_debug_option_and_environment_let_the_traceback_through(plays_artifact):
    _, art = plays_artifact
    missing = art.parent / "no-such-split.npz"
    plain = invoke("evaluate", art, "--split-file", missing)
    assert plain.exit_code == 2 and "error:" in plain.output and "no-such-split.npz" in plain.output
    with pytest.raises(RecfunnelError):
        invoke("--debug", "evaluate", art, "--split-file", missing)
    with pytest.raises(RecfunnelError):
        invoke("evaluate", art, "--split-file", missing, env={"RECFUNNEL_DEBUG": "1"})


def test_unknown_raw_item_is_one_line(plays_artifact):
    _, art = plays_artifact
    res = invoke("similar", art, "-i", "no-such-item")
    assert res.exit_code == 2 and "no-such-item" in res.output and "Traceback" not in res.output


def test_python_dash_m_runs_the_same_program_and_errors_in_one_line(plays_artifact):
    _, art = plays_artifact
    proc = subprocess.run(
        [sys.executable, "-m", "recfunnel.cli", "recommend", str(art), "-u", "u0", "-k", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _error_lines(proc.stderr) == ["error: -k is how many items to list: give 1 or more, got -1"]
