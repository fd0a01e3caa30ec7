"""Shared pieces of the command-line tests: the runner, a small play-count CSV written per test,
and one EASE artifact trained on it once per session (closed form: well under a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recfunnel.cli import app

runner = CliRunner()


def invoke(*args, env: dict[str, str] | None = None):
    """`recfunnel ARGS` in-process; exceptions the CLI lets through reach the test."""
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env=env)


def write_plays(path: Path, n_users: int = 24, seed: int = 0) -> Path:
    """user_id,artist,plays rows over 120 artists (enough for 99 distinct sampled negatives): user u
    plays artists 5u..5u+4 (so every artist is played) and 2 of their cluster's 30."""
    rng = np.random.default_rng(seed)
    rows = ["user_id,artist,plays"]
    for u in range(n_users):
        cluster = 30 * (u % 4) + rng.choice(30, size=2, replace=False)
        items = {*((5 * u + np.arange(5)) % 120).tolist(), *cluster.tolist()}
        rows += [f"u{u},a{i},{int(rng.integers(1, 30))}" for i in sorted(items)]
    path.write_text("\n".join(rows) + "\n")
    return path


def train_args(csv: Path, out: Path, model: str = "ease", *extra) -> list:
    """`train` on a plays CSV (no timestamps: random holdout) writing the artifact `out`."""
    return [
        "train", "--table", csv, "--user-col", "user_id", "--item-col", "artist",
        "--split", "random_holdout", "-m", model, "--no-progress", "-o", out, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def plays_artifact(tmp_path_factory) -> tuple[Path, Path]:
    """(plays CSV, EASE artifact trained on it)."""
    root = tmp_path_factory.mktemp("plays")
    csv = write_plays(root / "plays.csv")
    res = invoke(*train_args(csv, root / "ease"))
    assert res.exit_code == 0, res.output
    return csv, root / "ease"
