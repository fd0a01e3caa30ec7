"""Out-of-core figures (issue 16): a generated Parquet dataset read, split, trained on with MF-BPR for
one epoch and evaluated with the full-ranking protocol on a sample of test users, with the peak
resident memory of each phase.

The generator runs in a subprocess of its own (``python -m recfunnel.bench.out_of_core generate
...``), then read -> split -> train -> evaluate run in one fresh process (``... measure ...``), so
that the memory measured is that of the work alone. That process resets the kernel's peak-RSS mark
(``VmHWM``, via ``/proc/self/clear_refs``) at the start of every phase and reads it at the end, so
each phase reports its own peak (``phases.<name>.peak_rss_mb``) beside the RSS it leaves held
(``rss_mb_after``); ``peak_rss_mb`` is the largest of them (and of the start-up, imports included).
Where the mark cannot be reset (not Linux), the phase peaks are the process's peak so far
(``phase_peaks: "cumulative"``). ``run()`` returns the row; its defaults are the issue's sizes
(20,000,000 interactions, 1,000,000 users, 200,000 items)::

    recfunnel bench out-of-core --json bench/results/out-of-core.json      # the issue's sizes
    python -m recfunnel.bench.out_of_core run --rows 2000000 --users 100000 --items 20000 \\
        --result ooc-2m.json                                                 # any sizes

Every generated row is kept as an event (``duplicates="keep"``; repeats of a (user, item) pair
are repeat plays). Validation is left out of training (the split handed to ``fit`` has an empty
valid part: full ranking of 1M validation users would dominate the run); the evaluation ranks
every item for ``eval_users`` sampled test users, ``eval_batch`` users at a time
(:func:`recfunnel.eval.protocols.evaluate_full` on a split whose test part holds only their rows;
seen items, those of the whole train and valid parts, are masked).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["QUICK", "run"]

#: the sizes of ``recfunnel bench out-of-core --quick`` (a CI-sized run, seconds)
QUICK = {"rows": 200_000, "users": 20_000, "items": 5_000, "eval_users": 1_000}
TARGET_PEAK_RSS_MB = 4096  # the bar: 4 GiB


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    """A ``VmHWM`` / ``VmRSS`` line of /proc/self/status in MB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, so that the next phase's peak
    is its own (Linux: ``echo 5 > /proc/self/clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def _generate(out: Path, rows: int, users: int, items: int, files: int, seed: int) -> dict:
    from recfunnel.data.synthetic import generate_synthetic

    stats = generate_synthetic(out, rows, users, items, files=files, seed=seed)
    stats["peak_rss_mb"] = round(_peak_mb(), 1)
    stats["rows_per_second"] = round(rows / max(stats["seconds"], 1e-9))
    return stats


class _Phases:
    """Seconds, own peak RSS and RSS held after, per named phase (see the module docstring)."""

    def __init__(self) -> None:
        self.startup_mb = _status_mb("VmHWM") or _peak_mb()
        self.own = _reset_peak()
        self.figures: dict[str, dict] = {}
        self.t0 = time.perf_counter()

    def start(self) -> None:
        _reset_peak()
        self.t0 = time.perf_counter()

    def end(self, name: str) -> float:
        seconds = time.perf_counter() - self.t0
        peak = _status_mb("VmHWM") if self.own else None
        self.figures[name] = {
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak if peak is not None else _peak_mb()),
            "rss_mb_after": round(_status_mb("VmRSS") or 0),
        }
        return seconds

    def peak_mb(self) -> int:
        return max([round(self.startup_mb)] + [f["peak_rss_mb"] for f in self.figures.values()])


def _measure(
    data: Path,
    split_method: str,
    eval_users: int,
    batch_size: int,
    factors: int,
    seed: int,
    threads: int,
    eval_batch: int,
) -> dict:
    import torch

    from recfunnel.data.readers import load_dataset
    from recfunnel.data.splits import Split, make_split
    from recfunnel.eval.protocols import evaluate_full
    from recfunnel.run.config import RunConfig
    from recfunnel.run.fit import fit

    if threads:
        torch.set_num_threads(threads)
    ph = _Phases()
    fig: dict = {}

    ph.start()
    ds = load_dataset(str(data), duplicates="keep")  # every generated row is an interaction
    read_s = ph.end("read")
    n = len(ds.interactions)
    fig |= {"rows": n, "users": ds.n_users, "items": ds.n_items, "read_rows_per_second": round(n / read_s)}

    ph.start()
    sp = make_split(ds, split_method, seed=seed)
    ph.end("split")
    fig["split"] = sp.describe()
    fig["split_rows"] = {"train": len(sp.train), "valid": len(sp.valid), "test": len(sp.test)}

    no_valid = Split(sp.method, sp.train, np.empty(0, np.int64), sp.test, sp.dataset_fingerprint, sp.params)
    cfg = RunConfig.model_validate(
        {
            "data": {"dataset": str(data), "duplicates": "keep"},
            "split": {"method": split_method, "seed": seed, "eval_negatives": 0},
            "model": {"name": "mf", "params": {"factors": factors}},
            "train": {"epochs": 1, "batch_size": batch_size, "progress": False, "seed": seed},
        }
    )
    ph.start()
    res = fit(cfg, ds, no_valid, evaluate=False)
    res.objective = None  # its epoch arrays and positive set are done with
    ph.end("train")
    epoch = res.report.history[0] if res.report and res.report.history else {}
    steps = int(np.ceil(len(sp.train) / batch_size))
    fig["train"] = {
        "rows": len(sp.train),
        "batch_size": batch_size,
        "steps": steps,
        "epoch_seconds": round(epoch.get("train_seconds", 0.0), 2),
        "rows_per_second": round(epoch.get("samples_per_second", 0.0)),
        "seconds_per_step": round(epoch.get("train_seconds", 0.0) / max(1, steps), 4),
        "compute_seconds": round(epoch.get("compute_seconds", 0.0), 2),
        "loss": round(epoch.get("loss", float("nan")), 4),
        "fit_seconds": round(res.seconds, 2),  # objective set-up (positive set, ...) included
        "sparse_tables": [name for name, m in res.model.named_modules() if getattr(m, "sparse", False)],
    }
    fig["params"] = sum(p.numel() for p in res.model.parameters())

    ph.start()
    test_users = np.unique(ds.interactions.user[sp.test])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(test_users, size=min(eval_users, len(test_users)), replace=False))
    test = sp.test[np.isin(ds.interactions.user[sp.test], sample)]
    sub = Split(sp.method, sp.train, sp.valid, test, sp.dataset_fingerprint, sp.params)
    result = evaluate_full(res.model, ds, sub, "test", ks=(10, 20), batch_size=eval_batch)
    ph.end("evaluate")
    fig["evaluate"] = {
        "protocol": "full (every item ranked; train and valid items masked)",
        "users": result.n_users,
        "batch_users": eval_batch,
        "seconds": round(result.seconds, 2),
        "users_per_second": round(result.n_users / max(result.seconds, 1e-9), 1),
        "metrics": {k: round(v, 5) for k, v in result.metrics.items()},
    }
    fig |= {
        "phases": ph.figures,
        "startup_rss_mb": round(ph.startup_mb),
        "phase_peaks": "own" if ph.own else "cumulative",
        "peak_rss_mb": ph.peak_mb(),
    }
    return fig


def _child(args: list[str], out: Path) -> dict:
    """Run `python -m recfunnel.bench.out_of_core <args> --result out` -> its JSON."""
    cmd = [sys.executable, "-m", "recfunnel.bench.out_of_core", *args, "--result", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def run(
    rows: int = 20_000_000,
    users: int = 1_000_000,
    items: int = 200_000,
    files: int = 8,
    seed: int = 0,
    data_dir: str | Path | None = None,
    split: str = "random_holdout",
    eval_users: int = 10_000,
    batch_size: int = 8192,
    factors: int = 32,
    threads: int = 1,
    eval_batch: int = 256,
    quick: bool = False,
) -> list[dict]:
    """Generate (unless `data_dir` already holds part files), then measure in a fresh process;
    -> one row: rows/s of reading and of training, the evaluation's metrics, seconds and peak
    RSS (MB) per phase and overall. `quick`: the :data:`QUICK` sizes. `threads`: torch threads
    of the measuring process (0: torch's default)."""
    from recfunnel.bench.rows import machine_info, utc_now

    if quick:
        rows, users, items, eval_users = (QUICK[k] for k in ("rows", "users", "items", "eval_users"))
    with tempfile.TemporaryDirectory(prefix="recfunnel-ooc-") as tmp:
        folder = Path(data_dir) if data_dir is not None else Path(tmp) / "data"
        gen: dict = {}
        if not any(folder.glob("part-*.parquet")):
            gen = _child(
                ["generate", str(folder), str(rows), str(users), str(items), str(files), str(seed)],
                Path(tmp) / "gen.json",
            )
        args = [str(folder), split, str(eval_users), str(batch_size), str(factors), str(seed)]
        fig = _child(["measure", *args, str(threads), str(eval_batch)], Path(tmp) / "measure.json")
    row = {
        "suite": "out-of-core",
        "model": "mf",
        "objective": "bpr",
        "dataset": f"synthetic-{rows}",
        "protocol": "full",
        "seed": seed,
        "generate": gen,
        **fig,
        "metrics": fig["evaluate"]["metrics"],
        "train_seconds": fig["train"]["fit_seconds"],
        "epochs_run": 1,
        "samples_per_second": fig["train"]["rows_per_second"],
        "eval_seconds": fig["evaluate"]["seconds"],
        "peak_rss_scope": "read + split + train + evaluate (one fresh subprocess; generation apart)",
        "target_peak_rss_mb": TARGET_PEAK_RSS_MB,
        "under_target": fig["peak_rss_mb"] < TARGET_PEAK_RSS_MB,
        "command": f"python -m recfunnel.bench.out_of_core run --rows {rows} --users {users} --items {items} "
        f"--files {files} --seed {seed} --eval-users {eval_users} --threads {threads}",
        "machine": machine_info(),
        "date": utc_now(),
        "quick": quick,
    }
    return [row]


def main(argv: list[str]) -> None:
    what, rest = argv[0], argv[1:]
    result = Path(rest[rest.index("--result") + 1])
    rest = rest[: rest.index("--result")]
    if what == "generate":
        out, rows, users, items, files, seed = rest
        fig = _generate(Path(out), int(rows), int(users), int(items), int(files), int(seed))
    elif what == "measure":
        data, split, eval_users, batch, factors, seed, threads, eval_batch = rest
        fig = _measure(
            Path(data),
            split,
            int(eval_users),
            int(batch),
            int(factors),
            int(seed),
            int(threads),
            int(eval_batch),
        )
    elif what == "run":
        opts = dict(zip(rest[::2], rest[1::2], strict=True))
        kw = {k.lstrip("-").replace("-", "_"): v for k, v in opts.items()}
        ints = {"rows", "users", "items", "files", "seed", "eval_users", "batch_size", "factors", "threads"}
        ints.add("eval_batch")
        fig = run(**{k: int(v) if k in ints else v for k, v in kw.items()})[0]  # type: ignore[arg-type]
    else:
        raise SystemExit(f"unknown step {what!r}; valid: generate, measure, run")
    result.write_text(json.dumps(fig, indent=1))
    print(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
