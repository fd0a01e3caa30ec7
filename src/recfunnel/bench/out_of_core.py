"""Out-of-core figures (issue 16): a generated Parquet dataset read, split, trained on with MF-BPR for
one epoch and evaluated with the full-ranking protocol on a sample of test users, with the peak RSS.

Each phase runs in a fresh subprocess so that the peak resident memory is that of the work itself:
the generator first (``python -m recfunnel.bench.out_of_core generate ...``), then read -> split ->
train -> evaluate in one process (``... measure ...``), whose peak is read by the parent from
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` and which also reports its own peak after each
phase. ``run()`` returns the rows; the defaults are the issue's sizes (20,000,000 interactions,
1,000,000 users, 200,000 items)::

    python -m recfunnel.bench.out_of_core run --rows 20000000 --users 1000000 --items 200000 \
        --result ooc.json

Validation is left out of training (the split handed to ``fit`` has an empty valid part; full
ranking of 1M validation users would dominate the run); the evaluation ranks every item for
``eval_users`` sampled test users in batches (:func:`recfunnel.eval.protocols.evaluate_full` on a
split whose test part holds only their rows; seen items are masked with the whole train part).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["run"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _generate(out: Path, rows: int, users: int, items: int, files: int, seed: int) -> dict:
    from recfunnel.data.synthetic import generate_synthetic

    stats = generate_synthetic(out, rows, users, items, files=files, seed=seed)
    stats["peak_rss_mb"] = round(_peak_mb(), 1)
    return stats


def _measure(
    data: Path, split_method: str, eval_users: int, batch_size: int, factors: int, seed: int, threads: int
) -> dict:
    import torch

    from recfunnel.data.readers import load_dataset
    from recfunnel.data.splits import Split, make_split
    from recfunnel.eval.protocols import evaluate_full
    from recfunnel.run.config import RunConfig
    from recfunnel.run.fit import fit

    if threads:
        torch.set_num_threads(threads)
    fig: dict = {"phases": {}}

    def phase(name: str, t0: float) -> float:
        fig["phases"][name] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": round(_peak_mb()),
        }
        return fig["phases"][name]["seconds"]

    t0 = time.perf_counter()
    ds = load_dataset(str(data), duplicates="keep")  # every generated row is an interaction
    read_s = phase("read", t0)
    n = len(ds.interactions)
    fig |= {"rows": n, "users": ds.n_users, "items": ds.n_items, "read_rows_per_second": round(n / read_s)}

    t0 = time.perf_counter()
    sp = make_split(ds, split_method, seed=seed)
    phase("split", t0)
    fig["split"] = {
        "method": split_method,
        "train": len(sp.train),
        "valid": len(sp.valid),
        "test": len(sp.test),
    }

    no_valid = Split(sp.method, sp.train, np.empty(0, np.int64), sp.test, sp.dataset_fingerprint, sp.params)
    cfg = RunConfig.model_validate(
        {
            "data": {"dataset": str(data), "duplicates": "keep"},
            "split": {"method": split_method, "seed": seed, "eval_negatives": 0},
            "model": {"name": "mf", "params": {"factors": factors}},
            "train": {"epochs": 1, "batch_size": batch_size, "progress": False, "seed": seed},
        }
    )
    t0 = time.perf_counter()
    res = fit(cfg, ds, no_valid, evaluate=False)
    phase("train", t0)
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
    }

    res.objective = None  # its train arrays and positive set (about 1 GB at 20M rows) are done with
    t0 = time.perf_counter()
    test_users = np.unique(ds.interactions.user[sp.test])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(test_users, size=min(eval_users, len(test_users)), replace=False))
    test = sp.test[np.isin(ds.interactions.user[sp.test], sample)]
    sub = Split(sp.method, sp.train, sp.valid, test, sp.dataset_fingerprint, sp.params)
    result = evaluate_full(res.model, ds, sub, "test", ks=(10, 20), batch_size=1024)
    phase("evaluate", t0)
    fig["evaluate"] = {
        "protocol": "full (every item ranked, train+valid items masked)",
        "users": result.n_users,
        "seconds": round(result.seconds, 2),
        "metrics": {k: round(v, 5) for k, v in result.metrics.items()},
    }
    fig["peak_rss_mb_self"] = round(_peak_mb())
    return fig


def _child(args: list[str], out: Path) -> tuple[dict, float]:
    """Run `python -m recfunnel.bench.out_of_core <args> --result out` -> (its JSON, peak RSS MB of
    the children waited for so far)."""
    cmd = [sys.executable, "-m", "recfunnel.bench.out_of_core", *args, "--result", str(out)]
    subprocess.run(cmd, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return json.loads(out.read_text()), peak


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
    threads: int = 0,
) -> list[dict]:
    """Generate (unless `data_dir` already holds part files), then measure in a fresh process;
    -> one row with the figures (peak RSS in MB of the measuring process, rows/s, s/step, ...)."""
    with tempfile.TemporaryDirectory(prefix="recfunnel-ooc-") as tmp:
        folder = Path(data_dir) if data_dir is not None else Path(tmp) / "data"
        gen: dict = {}
        if not any(folder.glob("part-*.parquet")):
            gen, _ = _child(
                ["generate", str(folder), str(rows), str(users), str(items), str(files), str(seed)],
                Path(tmp) / "gen.json",
            )
        args = ["measure", str(folder), split, str(eval_users), str(batch_size), str(factors), str(seed)]
        fig, peak_children = _child([*args, str(threads)], Path(tmp) / "measure.json")
    row = {
        "suite": "out-of-core",
        "model": "mf",
        "objective": "bpr",
        "dataset": f"synthetic-{rows}",
        "generate": gen,
        **fig,
        "peak_rss_mb": fig["peak_rss_mb_self"],
        "peak_rss_mb_children": round(peak_children),
        "peak_rss_scope": "read + split + train + evaluate (fresh subprocess)",
        "target_peak_rss_mb": 4096,
        "cpu_count": os.cpu_count(),
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
        data, split, eval_users, batch, factors, seed, threads = rest
        fig = _measure(Path(data), split, int(eval_users), int(batch), int(factors), int(seed), int(threads))
    elif what == "run":
        opts = dict(zip(rest[::2], rest[1::2], strict=True))
        kw = {k.lstrip("-").replace("-", "_"): v for k, v in opts.items()}
        ints = {"rows", "users", "items", "files", "seed", "eval_users", "batch_size", "factors", "threads"}
        fig = run(**{k: int(v) if k in ints else v for k, v in kw.items()})[0]  # type: ignore[arg-type]
    else:
        raise SystemExit(f"unknown step {what!r}; valid: generate, measure, run")
    result.write_text(json.dumps(fig, indent=1))
    print(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
