"""EASE's peak memory: the float64 ``np.linalg.inv`` fit it had until issue 14 against the float32
in-place fit it has now, on a seeded synthetic catalogue (default 20,000 items).

Each measurement runs in a fresh Python subprocess, because peak RSS is per process: the child builds
the catalogue, records its peak RSS so far (imports + data: ``base_rss_mb``), constructs the EASE model
(whose ``n_items^2`` float32 weights buffer is allocated then) and fits it, and reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` as ``peak_rss_mb``. Variants:

* ``float64-inv``: the previous fit, verbatim (sparse float64 ``X^T X`` densified, ``np.linalg.inv``,
  ``-P / diag(P)``, cast to float32), run on the same model object;
* ``float32-inplace``: :meth:`recfunnel.models.baselines.EASE.fit_matrix` as it is now.

A variant whose estimated peak (``float64-inv``: 9 dense n x n float32 equivalents; ``float32-inplace``:
what :func:`~recfunnel.models.baselines.ease_memory_bytes` says) exceeds MemAvailable is not run (a row
with ``skipped`` says why) rather than risk the out-of-memory killer on a shared machine; and while a
child runs, its RSS is polled and it is stopped if MemAvailable falls under ``floor_mb`` (the row then
says ``aborted`` and gives ``peak_rss_mb_at_least``, the largest RSS seen).

Synthetic catalogue: ``n_users`` users (default as many as items), each with ~``per_user`` interactions
drawn from a Zipf-like item popularity (p ~ 1 / (rank + 10)^0.9), duplicates merged, binary.

Run: ``python -m recfunnel.bench.ease_memory [--items 20000] [--variants float64-inv float32-inplace]
[--out FILE]``; :func:`run` returns the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["VARIANTS", "synthetic_interactions", "legacy_fit", "run", "main"]

VARIANTS = ("float64-inv", "float32-inplace")
_MB = 2**20


def synthetic_interactions(n_users: int, n_items: int, per_user: int = 50, seed: int = 0) -> sp.csr_matrix:
    """Binary [n_users, n_items] CSR: ~`per_user` items per user from a Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    p /= p.sum()
    items = rng.permutation(n_items)[rng.choice(n_items, size=n_users * per_user, p=p)]
    users = np.repeat(np.arange(n_users), per_user)
    x = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def legacy_fit(model: Any, train: sp.csr_matrix) -> None:
    """EASE.fit_matrix as it was before issue 14 (float64 Gram, np.linalg.inv, a new weights tensor)."""
    import torch

    x = train.astype(np.float64)
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += model.config.l2
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    model.weights = torch.from_numpy(b.astype(np.float32))
    model.hist_indptr = torch.from_numpy(train.indptr.astype(np.int64))
    model.hist_indices = torch.from_numpy(train.indices.astype(np.int64))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _estimate(variant: str, n_items: int, nnz: int) -> int:
    from recfunnel.models.baselines import ease_memory_bytes

    if variant == "float64-inv":  # zeros buffer + g, inv's copy and result, b (float64), b as float32
        return 9 * 4 * n_items * n_items + 3 * 12 * nnz
    dense, working = ease_memory_bytes(n_items, nnz)
    return dense + working


def _child(variant: str, n_users: int, n_items: int, per_user: int, seed: int, l2: float) -> dict:
    import torch

    from recfunnel.models.base import build_model

    x = synthetic_interactions(n_users, n_items, per_user, seed)
    base = _peak_mb()
    t0 = time.perf_counter()
    model = build_model("ease", n_users, n_items, {"l2": l2})
    (legacy_fit if variant == "float64-inv" else type(model).fit_matrix)(model, x)
    seconds = time.perf_counter() - t0
    w = model.weights
    return {
        "peak_rss_mb": _peak_mb(),
        "base_rss_mb": base,
        "fit_seconds": seconds,
        "nnz": int(x.nnz),
        "weights_checksum": float(w[:: max(1, n_items // 97), :: max(1, n_items // 89)].double().sum()),
        "weights_finite": bool(torch.isfinite(w).all()),
        "torch_threads": torch.get_num_threads(),
    }


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _watched(cmd: list[str], floor_mb: float) -> tuple[int, str, str, float, str | None]:
    """Run `cmd`, polling its RSS; stop it if MemAvailable falls under `floor_mb`.
    Returns (returncode, stdout, stderr, largest RSS seen in MB, why it was stopped or None)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        seen, aborted = 0.0, None
        while child.poll() is None:
            seen = max(seen, _rss_mb(child.pid))
            avail = _mem_available()
            if avail is not None and avail / _MB < floor_mb:
                aborted = (
                    f"stopped: MemAvailable {avail / _MB:,.0f} MB fell under {floor_mb:,.0f} MB "
                    f"with the child at {seen:,.0f} MB RSS"
                )
                child.kill()
                child.wait()
                break
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        return child.returncode, out.read(), err.read(), seen, aborted


def run(
    n_items: int = 20_000,
    n_users: int | None = None,
    per_user: int = 50,
    seed: int = 0,
    l2: float = 250.0,
    variants: Sequence[str] = VARIANTS,
    progress: bool = True,
    floor_mb: float = 1024.0,
) -> list[dict]:
    """One row per variant, each measured in its own subprocess (see the module docstring)."""
    n_users = n_users or n_items
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {sorted(unknown)}; valid: {', '.join(VARIANTS)}")
    rows = []
    nnz_guess = n_users * per_user
    for variant in variants:
        row: dict[str, Any] = {
            "suite": "ease-memory",
            "model": "EASE",
            "variant": variant,
            "n_items": n_items,
            "n_users": n_users,
            "per_user": per_user,
            "seed": seed,
            "l2": l2,
            "dense_mb": 4 * n_items * n_items / _MB,
            "estimated_peak_mb": _estimate(variant, n_items, nnz_guess) / _MB,
            "mem_available_mb": (_mem_available() or 0) / _MB,
            "load_average_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        avail = _mem_available()
        if avail is not None and row["estimated_peak_mb"] * _MB * 1.1 > avail:
            row["skipped"] = (
                f"estimated peak {row['estimated_peak_mb']:,.0f} MB (+10%) above MemAvailable "
                f"{avail / _MB:,.0f} MB: not run"
            )
            rows.append(row)
            continue
        args = [variant, str(n_users), str(n_items), str(per_user), str(seed), str(l2)]
        cmd = [sys.executable, "-m", "recfunnel.bench.ease_memory", "--child", *args]
        if progress:
            print(f"[ease-memory] {variant}: {n_items:,} items, {n_users:,} users ...", file=sys.stderr)
        rc, stdout, stderr, seen_mb, aborted = _watched(cmd, floor_mb)
        if aborted:
            row["aborted"] = aborted
            row["peak_rss_mb_at_least"] = seen_mb
        elif rc != 0:
            row["error"] = (stderr or stdout).strip().splitlines()[-1:] or [f"rc {rc}"]
        else:
            row.update(json.loads(stdout.strip().splitlines()[-1]))
        row["load_average_end"] = os.getloadavg()[0]
        if progress:
            keys = ("peak_rss_mb", "base_rss_mb", "fit_seconds", "error", "aborted")
            shown = {k: row[k] for k in keys if k in row}
            print(f"[ease-memory] {variant}: {shown}", file=sys.stderr)
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        variant, n_users, n_items, per_user, seed, l2 = argv[1:7]
        out = _child(variant, int(n_users), int(n_items), int(per_user), int(seed), float(l2))
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(
        prog="python -m recfunnel.bench.ease_memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=None, help="default: as many as items")
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--floor-mb", type=float, default=1024.0, help="stop a child when MemAvailable falls under this"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the rows here as JSON")
    args = parser.parse_args(argv)
    rows = run(
        args.items, args.users, args.per_user, args.seed, variants=args.variants, floor_mb=args.floor_mb
    )
    text = json.dumps(rows, indent=1)
    if args.out:
        from recfunnel.bench.rows import write_json

        write_json(rows, args.out)
    print(text)


if __name__ == "__main__":
    main()
