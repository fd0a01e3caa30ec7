"""Distributed data-parallel training (issue 16 item 1): 2 processes, gloo on CPU, MovieLens-100K.

* the shard arithmetic and gradient averaging, in process and in 2 spawned processes;
* one launch of ``torch.distributed.run --nproc-per-node 2`` trains MF-BPR, NeuMF, SASRec and DeepFM
  through ``recfunnel.run.fit``, and each run matches the one-process run with the same global batch;
* ``recfunnel train --nproc 2`` of MF-BPR and of DeepFM: killing rank 1 mid-run fails the job
  within 60 s, and ``--resume`` with one process (a change of world size) completes it as an
  uninterrupted one-process run would (the tolerances below).

Tolerance: a 2-process step applies the gradient of the same global batch as one process, summed
in another order, so the runs differ by float rounding only (measured: losses equal to ~1e-7
relative). Rounding can still swap two items of nearly equal score in a top-10, so ranking metrics
are compared to 0.01 absolute (about two of ~940 users' hits) and losses to 1e-4 relative. SASRec
and DeepFM run without dropout: with dropout each rank draws the masks of its own rows, equal to
one process in distribution only (measured: DeepFM's loss then differs by 1e-3 relative). MF runs
with sparse tables, so its closed-form backward's row gradients go through the row all-gather.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recfunnel.data.fields import FieldBatch
from recfunnel.run.config import RunConfig
from recfunnel.run.fit import fit
from recfunnel.settings import data_root
from recfunnel.train.distributed import GradientSync, shard_batch, shard_bounds

DATA = data_root().resolve()  # $RECFUNNEL_DATA, else ../shared/data: the real MovieLens-100K
METRIC_TOL, LOSS_RTOL = 0.01, 1e-4


# --------------------------------------------------------------------------------------------------
# shard arithmetic


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_a_batch_in_contiguous_slices_of_near_equal_size(world):
    for n in range(0, 23):
        bounds = [shard_bounds(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= 1


def test_shard_bounds_refuse_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        shard_bounds(10, 2, 2)


def test_shard_batch_slices_per_row_values_and_keeps_per_batch_draws():
    seq = {"inputs": torch.zeros(4, 7), "targets": torch.ones(4, 7), "negatives": torch.arange(4)}
    part = shard_batch(seq, 1, 3)
    assert part["inputs"].shape == (2, 7) and torch.equal(part["negatives"], torch.arange(4))
    pairs = {"users": torch.arange(6), "negatives": torch.arange(6) + 10, "beta": torch.tensor(0.5)}
    part = shard_batch(pairs, 3, 6)
    assert part["negatives"].tolist() == [13, 14, 15] and float(part["beta"]) == 0.5
    rows = {"labels": torch.arange(5.0), "fields": FieldBatch({"user": torch.arange(5)})}
    part = shard_batch(rows, 0, 2)
    assert part["fields"].tensors["user"].tolist() == [0, 1]


# --------------------------------------------------------------------------------------------------
# gradient averaging in 2 processes (spawned, gloo over a file store)


def _sparse_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.ModuleDict(
        {"table": torch.nn.Embedding(50, 4, sparse=True), "head": torch.nn.Linear(4, 1)}
    )


def _loss(model: torch.nn.Module, ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = model["head"](model["table"](ids)).squeeze(1)
    return torch.nn.functional.binary_cross_entropy_with_logits(x, y)


def _average_worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(1)
    ids, y = torch.randint(0, 50, (13,), generator=g), torch.randint(0, 2, (13,), generator=g).float()
    reference = _sparse_model()
    _loss(reference, ids, y).backward()  # the one-process gradient of the whole batch
    want = {k: (p.grad.to_dense() if p.grad.is_sparse else p.grad) for k, p in reference.named_parameters()}
    errors = {}
    for mode in ("rows", "dense"):
        model = _sparse_model()
        params = list(model.parameters())
        sync = GradientSync(params, [model["table"].weight], mode)
        lo, hi = shard_bounds(len(ids), rank, 2)
        loss = _loss(model, ids[lo:hi], y[lo:hi])
        loss.backward()
        global_loss = sync((hi - lo) / len(ids), loss)
        for k, p in model.named_parameters():
            got = p.grad.to_dense() if p.grad.is_sparse else p.grad
            errors[f"{mode}:{k}"] = float((got - want[k]).abs().max())
        errors[f"{mode}:loss"] = abs(global_loss - float(_loss(reference, ids, y)))
        errors[f"{mode}:sparse"] = float(model["table"].weight.grad.is_sparse) - 1.0
    if rank == 0:
        Path(out).write_text(json.dumps(errors))
    dist.destroy_process_group()


def test_gradient_all_reduce_equals_the_one_process_gradient_of_the_global_batch(tmp_path):
    out = tmp_path / "errors.json"
    mp.spawn(_average_worker, args=(str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    errors = json.loads(out.read_text())
    assert set(errors) >= {"rows:table.weight", "dense:head.weight", "rows:loss"}
    assert max(abs(e) for e in errors.values()) < 1e-6, errors


# --------------------------------------------------------------------------------------------------
# 2-process training of four families vs one process


def _configs() -> dict[str, dict]:
    base = {"data": {"dataset": "ml-100k", "data_root": str(DATA)}}
    train = {"progress": False, "patience": 0, "threads": 1}
    runs = {
        "mf": ({"name": "mf", "params": {"sparse": True}}, {"epochs": 2, "batch_size": 8192, "lr": 0.01}),
        "neumf": ({"name": "neumf", "params": {"factors": 8}}, {"epochs": 1, "batch_size": 4096, "lr": 2e-3}),
        "sasrec": (
            {"name": "sasrec", "params": {"dropout": 0.0, "blocks": 1, "hidden": 32}},
            {"epochs": 2, "batch_size": 128, "lr": 0.001},
        ),
        "deepfm": (
            {"name": "deepfm", "params": {"dropout": 0.0, "hidden": [128, 128]}},
            {"epochs": 1, "batch_size": 2048, "lr": 0.001},
        ),
    }  # fmt: skip
    return {k: {**base, "model": m, "train": {**train, **t}} for k, (m, t) in runs.items()}


def _summary(res) -> dict:
    hist = res.report.history
    return {
        "loss": [h["loss"] for h in hist],
        "valid": [h["valid"] for h in hist],
        "test": {
            f"{r.protocol}/{k}": v for r in res.results for k, v in r.metrics.items() if isinstance(v, float)
        },
        "processes": hist[-1].get("processes", 1),
    }


WORKER = """
import json, sys
from recfunnel.run.config import RunConfig
from recfunnel.run.fit import fit
from recfunnel.train import distributed
sys.path.insert(0, sys.argv[3])
from test_ddp import _summary
configs, out = json.loads(open(sys.argv[1]).read()), {}
with distributed.session("cpu"):
    for name, raw in configs.items():
        res = fit(RunConfig.model_validate(raw))
        if distributed.is_main():
            out[name] = _summary(res)
if out:
    open(sys.argv[2], "w").write(json.dumps(out))
"""


def _launch(*args: str, env: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "--max-restarts", "0", *args]  # fmt: skip


def _close(a: dict, b: dict, where: str) -> None:
    for k, v in a.items():
        if math.isnan(v) and math.isnan(b[k]):  # GAUC: no user with both labels under leave-one-out
            continue
        assert abs(v - b[k]) <= METRIC_TOL, f"{where} {k}: {v} vs {b[k]}"


def test_two_processes_train_four_families_as_one_process_does(tmp_path):
    configs = _configs()
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = _launch(str(tmp_path / "worker.py"), str(tmp_path / "configs.json"), str(tmp_path / "out.json"),
                  str(Path(__file__).parent))  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((tmp_path / "out.json").read_text())
    for name, raw in configs.items():
        one = _summary(fit(RunConfig.model_validate(raw)))
        got = two[name]
        assert got["processes"] == 2 and one["processes"] == 1
        assert got["loss"] == pytest.approx(one["loss"], rel=LOSS_RTOL), name
        for epoch, (a, b) in enumerate(zip(got["valid"], one["valid"], strict=True)):
            _close(a, b, f"{name} valid epoch {epoch}")
        assert got["test"].keys() == one["test"].keys()
        _close(got["test"], one["test"], f"{name} test")


# --------------------------------------------------------------------------------------------------
# a dead rank fails the job; --resume completes it with another number of processes


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: ppid is the 4th field of /proc/<pid>/stat)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)


#: family -> (its `recfunnel train` flags, epochs): MF-BPR with sparse tables (row all-gather) and
#: the DeepFM ranker (labelled rows, field batches) without dropout, as in the comparison above
KILLED_RUNS = {
    "mf": (["--batch-size", "512", "--lr", "0.005"], 8),
    "deepfm": (["--batch-size", "2048", "--lr", "0.001", "-p", "dropout=0", "-p", "hidden=[64,64]"], 4),
}


def _train_args(out: Path, *extra: str, family: str = "mf") -> list[str]:
    flags, epochs = KILLED_RUNS[family]
    return ["train", "-m", family, "--dataset", "ml-100k", "--data-root", str(DATA), "--epochs", str(epochs),
            *flags, "--no-progress", "-o", str(out), *extra]  # fmt: skip


@pytest.mark.parametrize("family", list(KILLED_RUNS))
def test_killing_rank_1_fails_the_job_quickly_and_resume_completes_it(tmp_path, family):
    from typer.testing import CliRunner

    from recfunnel.cli import app

    out, epochs = tmp_path / family, KILLED_RUNS[family][1]
    ckpt = out.parent / f"{family}.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "recfunnel.cli", *_train_args(out, "--nproc", "2", family=family)]
    job = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        last = ckpt / "last"
        deadline = time.monotonic() + 120
        while not last.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # mid-run: after the first epoch's checkpoint
        assert job.poll() is None, job.stdout.read().decode()[-3000:]
        rank1 = [p for p in _descendants(job.pid) if _rank_of(p) == "1"]
        assert len(rank1) == 1, rank1
        killed_at = time.monotonic()
        os.kill(rank1[0], signal.SIGKILL)
        status = job.wait(timeout=60)
        assert time.monotonic() - killed_at < 60
    finally:
        if job.poll() is None:
            job.kill()
    output = job.stdout.read().decode()
    assert status != 0, output[-3000:]
    assert "--resume" in output
    epochs_done = len(json.loads((ckpt / "log.json").read_text()))
    assert 1 <= epochs_done < epochs

    runner = CliRunner()
    res = runner.invoke(app, _train_args(out, "--resume", "--json", str(tmp_path / "r.json"), family=family),
                        catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    log = json.loads((ckpt / "log.json").read_text())
    assert [h["epoch"] for h in log] == list(range(epochs))
    assert {h.get("processes", 1) for h in log[:epochs_done]} == {2}
    assert all("processes" not in h for h in log[epochs_done:])
    # the same as an uninterrupted one-process run
    ref = tmp_path / "ref"
    res = runner.invoke(app, _train_args(ref, "--json", str(tmp_path / "ref.json"), family=family),
                        catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    ref_log = json.loads((tmp_path / "ref.ckpt" / "log.json").read_text())
    assert [h["loss"] for h in log] == pytest.approx([h["loss"] for h in ref_log], rel=LOSS_RTOL)
    got, want = json.loads((tmp_path / "r.json").read_text()), json.loads((tmp_path / "ref.json").read_text())
    for a, b in zip(got, want, strict=True):
        _close(a["metrics"], b["metrics"], f"resumed {a['protocol']}")
