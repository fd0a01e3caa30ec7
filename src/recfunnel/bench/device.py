"""The device check (issue 16, item 4): on a GPU machine, the suites that matter with the device named.

    python -m recfunnel.bench.device --out bench/results/device [--quick] [--device auto] [--data-root DIR]
    bench/device_check.sh OUT_DIR                       # the same, one command, the full check

What it runs, each part timed and its failure recorded rather than fatal:

* **training** on MovieLens-100K through the run layer (:func:`recfunnel.run.fit.fit`) at reduced
  epochs: MF-BPR, NeuMF, two-tower, DeepFM, SASRec, in fp32 and (on CUDA) bf16 autocast; per run
  the epochs, training seconds, samples per second, the best epoch and the test metrics;
* **exact search** of 1,000 queries against 1M x 64 vectors (top-100) on the CPU and on the GPU
  (:class:`~recfunnel.index.ExactIndex` with ``device``), queries per second and the overlap of
  the GPU's top-100 with the CPU's; the FAISS IVF index on a GPU too where ``faiss-gpu`` is there.

It writes ``device-<cuda|cpu>[-quick].json`` under ``--out`` (atomically) with the device's name
(``torch.cuda.get_device_name``), torch / CUDA / FAISS versions and every figure. The full check
takes a few minutes on one GPU (budget: under 8); ``--quick`` (one epoch of two families, 100k
vectors) is the CPU smoke run that shows the script works on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.atomic import atomic_write_text
from recfunnel.nn.device import device_name, resolve_device

__all__ = ["FAMILIES", "main", "run_check"]

#: family -> (RunConfig sections over its tuned defaults, epochs of the full check)
FAMILIES: dict[str, tuple[dict[str, Any], int]] = {
    "mf": ({"model": {"name": "mf"}}, 10),
    "neumf": ({"model": {"name": "neumf"}}, 3),
    "two-tower": ({"model": {"name": "two-tower"}}, 5),
    "deepfm": ({"model": {"name": "deepfm"}, "split": {"method": "temporal"}}, 2),
    "sasrec": ({"model": {"name": "sasrec"}}, 5),
}
QUICK_FAMILIES = ("mf", "neumf")


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`fn()`'s figures with its seconds, or the error that stopped it (the check goes on)."""
    t0 = time.perf_counter()
    try:
        out = fn()
        out["status"] = "ok"
    except Exception as exc:  # a failing part is a finding, not the end of the check
        out = {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "where": traceback.format_exc(limit=-3),
        }
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def train_one(
    family: str, device: str, precision: str, epochs: int, data_root: Path | None
) -> dict[str, Any]:
    """Fit `family` on ml-100k for `epochs` on `device` in `precision`; -> its figures."""
    from recfunnel.run.config import RunConfig, deep_merge
    from recfunnel.run.fit import fit

    sections, _ = FAMILIES[family]
    train = {"epochs": epochs, "device": device, "precision": precision, "progress": False, "patience": 0}
    data = {"data_root": str(data_root)} if data_root is not None else {}
    cfg = RunConfig.tuned(deep_merge(sections, {"train": train, "data": data, "eval": {"ks": [10]}}))
    res = fit(cfg)
    report = res.report
    return {
        "family": family,
        "precision": precision,
        "epochs": len(report.history) if report else 0,
        "train_seconds": round(sum(h["train_seconds"] for h in report.history), 3) if report else None,
        "samples_per_second": round(report.samples_per_second, 1) if report else None,
        "final_loss": report.history[-1]["loss"] if report and report.history else None,
        "test": {
            r.protocol: {k: round(v, 5) for k, v in r.metrics.items() if "@10" in k or k == "auc"}
            for r in res.results
        },
    }


def exact_search(n: int, dim: int, queries: int, k: int, gpu: bool) -> dict[str, Any]:
    """Exact top-`k` of `queries` random queries against `n` x `dim` random vectors, on the CPU and
    (when `gpu`) the GPU; FAISS IVF on the GPU too where faiss-gpu is installed."""
    from recfunnel.index import build_index
    from recfunnel.index.faiss_gpu import faiss_gpus

    rng = np.random.default_rng(0)
    items = rng.standard_normal((n, dim), dtype=np.float32)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    out: dict[str, Any] = {"n": n, "dim": dim, "queries": queries, "k": k}
    tops = {}
    for where in ["cpu", "cuda"] if gpu else ["cpu"]:
        t0 = time.perf_counter()
        index = build_index("exact", items, normalize=False, device=where)
        build = time.perf_counter() - t0
        index.search(q[:10], k)  # warm-up (CUDA context, kernels)
        t0 = time.perf_counter()
        ids, _ = index.search(q, k)
        s = time.perf_counter() - t0
        tops[where] = ids
        out[f"exact_{where}"] = {
            "build_seconds": round(build, 3),
            "search_seconds": round(s, 4),
            "qps": round(queries / s, 1),
        }
        del index
    if gpu:
        same = [len(np.intersect1d(a, b)) / k for a, b in zip(tops["cpu"], tops["cuda"], strict=True)]
        out["gpu_top_k_overlap_with_cpu"] = float(np.mean(same))
    out["faiss_gpus"] = faiss_gpus()
    if out["faiss_gpus"]:
        for where in ("cpu", "cuda"):
            t0 = time.perf_counter()
            ivf = build_index("ivf", items, normalize=False, device=where, nprobe=32)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            ids, _ = ivf.search(q, k)
            s = time.perf_counter() - t0
            recall = float(
                np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ids, tops["cpu"], strict=True)])
            )
            out[f"ivf_{where}"] = {
                "on_gpu": ivf.on_gpu, "build_seconds": round(build, 3), "qps": round(queries / s, 1),
                "recall_at_k_vs_exact": round(recall, 4),
            }  # fmt: skip
    return out


def run_check(out_dir: Path, *, quick: bool, device: str = "auto", data_root: Path | None = None) -> Path:
    """Run the check on `device` and write its JSON under `out_dir`; -> the file written."""
    t_all = time.perf_counter()
    dev = resolve_device(device)
    gpu = dev.type == "cuda"
    families = QUICK_FAMILIES if quick else tuple(FAMILIES)
    precisions = ["fp32", "bf16"] if gpu else ["fp32"]
    body: dict[str, Any] = {
        "suite": "device",
        "device": str(dev),
        "device_name": device_name(dev),
        "kind": "cuda" if gpu else "cpu",
        "quick": quick,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "command": " ".join(["python -m recfunnel.bench.device", *sys.argv[1:]]),
        "training": [],
    }
    try:
        import faiss

        body["faiss"] = faiss.__version__
    except ImportError:
        body["faiss"] = None
    for family in families:
        epochs = 1 if quick else FAMILIES[family][1]
        for precision in precisions:
            row = _timed(lambda f=family, p=precision, e=epochs: train_one(f, str(dev), p, e, data_root))
            row.setdefault("family", family)
            row.setdefault("precision", precision)
            body["training"].append(row)
            print(
                json.dumps(
                    {
                        k: row.get(k)
                        for k in ("family", "precision", "status", "seconds", "samples_per_second")
                    }
                )
            )
    n, queries = (100_000, 200) if quick else (1_000_000, 1000)
    body["exact_search"] = _timed(lambda: exact_search(n, 64, queries, 100, gpu))
    print(
        json.dumps(
            {"exact_search": body["exact_search"].get("status"), "seconds": body["exact_search"]["seconds"]}
        )
    )
    body["seconds"] = round(time.perf_counter() - t_all, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"device-{body['kind']}{'-quick' if quick else ''}.json"
    atomic_write_text(path, json.dumps(body, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recfunnel.bench.device", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for device-<kind>.json")
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 epoch of MF-BPR and NeuMF, 100k vectors"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--data-root", type=Path, default=None, help="data root holding ml-100k (default: recfunnel's)"
    )
    args = p.parse_args(argv)
    from recfunnel.errors import RecfunnelError

    try:
        path = run_check(args.out, quick=args.quick, device=args.device, data_root=args.data_root)
    except RecfunnelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    body = json.loads(path.read_text())
    failed = [f"{r['family']}/{r['precision']}" for r in body["training"] if r["status"] != "ok"]
    if body["exact_search"]["status"] != "ok":
        failed.append("exact_search")
    print(
        f"{path}: {body['device_name']}, {body['seconds']} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
