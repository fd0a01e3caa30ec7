"""Sparse vs dense optimiser steps for one ID embedding table, by table size.

Each step looks up 3 x batch rows (a BPR batch: user, positive, negative), backpropagates a sum of
squares and steps the optimiser: SparseAdam on a ``sparse=True`` table vs ``torch.optim.Adam``
(``foreach=True``) on a dense one. Median milliseconds per step over ``repeats`` timed runs, one
torch thread, the two timed back to back for each size (ratio dense / sparse). This is the
measurement behind choosing sparse gradients only for large tables.

Run: ``recfunnel bench optim --json OUT``, or ``python -m recfunnel.bench.optim`` with
``--rows 2000 20000 ... --dim 64 --json OUT``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_ROWS", "run", "run_optim_suite", "step_ms"]

DEFAULT_ROWS = (2_000, 10_000, 15_000, 20_000, 100_000, 500_000)


def step_ms(
    rows: int, sparse: bool, dim: int = 64, batch: int = 1024, steps: int = 40, seed: int = 0
) -> float:
    """Mean milliseconds per optimiser step on one table of `rows` x `dim` (after 5 warm-up steps)."""
    torch.manual_seed(seed)
    emb = nn.Embedding(rows, dim, sparse=sparse)
    opt = (
        torch.optim.SparseAdam(emb.parameters(), lr=1e-3)
        if sparse
        else torch.optim.Adam(emb.parameters(), lr=1e-3, foreach=True)
    )
    idx = torch.randint(0, rows, (steps + 5, 3 * batch), generator=torch.Generator().manual_seed(seed))
    t0 = 0.0
    for s in range(steps + 5):
        if s == 5:
            t0 = time.perf_counter()
        opt.zero_grad()
        emb(idx[s]).pow(2).sum().backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1e3


def run(rows: Sequence[int], dim: int = 64, repeats: int = 3) -> list[dict]:
    """One row per table size: median ms/step sparse and dense, and their ratio."""
    from recfunnel.bench.rows import machine_info

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for n in rows:
            sparse = statistics.median(step_ms(n, True, dim) for _ in range(repeats))
            dense = statistics.median(step_ms(n, False, dim) for _ in range(repeats))
            out.append(
                {
                    "suite": "optim",
                    "model": f"{n:,} x {dim} table",
                    "dataset": "synthetic ids (uniform)",
                    "protocol": "optimiser step, 3 x 1024 lookups",
                    "rows": n,
                    "dim": dim,
                    "params": n * dim,
                    "metrics": {
                        "sparse_adam_ms": sparse,
                        "dense_adam_ms": dense,
                        "dense_over_sparse": dense / sparse,
                    },
                    "repeats": repeats,
                    "machine": machine_info(),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        return out
    finally:
        torch.set_num_threads(before)


def run_optim_suite(quick: bool = False) -> list[dict]:
    """The ``optim`` suite of ``recfunnel bench``: DEFAULT_ROWS (quick: two small tables, 1 run)."""
    rows = run((500, 5_000), repeats=1) if quick else run(DEFAULT_ROWS)
    for r in rows:
        r["quick"] = quick
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recfunnel.bench.optim", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, nargs="*", default=list(DEFAULT_ROWS))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.rows, args.dim, args.repeats)
    for r in rows:
        m = r["metrics"]
        print(
            f"{r['rows']:>9,} x {r['dim']}: SparseAdam {m['sparse_adam_ms']:.2f} ms/step, "
            f"dense Adam {m['dense_adam_ms']:.2f} ms/step (dense/sparse {m['dense_over_sparse']:.2f}x)"
        )
    if args.json:
        from recfunnel.bench.rows import write_json

        write_json(rows, args.json)


if __name__ == "__main__":
    main()
