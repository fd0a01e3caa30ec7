"""Sparse vs dense optimiser steps for one ID embedding table, by table size.

Each step looks up 3 x batch rows (a BPR batch: user, positive, negative), backpropagates a sum of
squares and steps the optimiser. Four optimisers, timed back to back for each size: on a
``sparse=True`` table torch's ``SparseAdam`` and recfunnel's
:class:`~recfunnel.train.row_optim.RowAdam` (the same lazy update; what the Trainer gives sparse
tables), on a dense one ``torch.optim.Adam(foreach=True)`` and
:class:`~recfunnel.train.row_optim.TableAdam` (fused; what the Trainer gives the dense tables of the
ID-table families). Median milliseconds per step over ``repeats`` timed runs (the four optimisers
interleaved), one torch thread.
``table_over_row`` (dense fused / RowAdam) is the measurement behind ``sparse="auto"``: sparse
gradients only for tables where the row step is the cheaper one.

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

__all__ = ["DEFAULT_ROWS", "OPTIMISERS", "run", "run_optim_suite", "step_ms"]

DEFAULT_ROWS = (2_000, 10_000, 15_000, 20_000, 100_000, 500_000)


OPTIMISERS = ("sparse_adam", "row_adam", "dense_adam", "table_adam")


def step_ms(
    rows: int,
    sparse: bool | str,
    dim: int = 64,
    batch: int = 1024,
    steps: int = 40,
    seed: int = 0,
) -> float:
    """Mean milliseconds per optimiser step on one table of `rows` x `dim` (after 5 warm-up steps).
    `sparse`: one of :data:`OPTIMISERS` (True / False: the torch ones, SparseAdam / foreach Adam)."""
    from recfunnel.train.row_optim import RowAdam, TableAdam

    which = {True: "sparse_adam", False: "dense_adam"}.get(sparse, sparse)  # type: ignore[call-overload]
    torch.manual_seed(seed)
    emb = nn.Embedding(rows, dim, sparse=which in ("sparse_adam", "row_adam"))
    opt: torch.optim.Optimizer = {
        "sparse_adam": lambda: torch.optim.SparseAdam(emb.parameters(), lr=1e-3),
        "row_adam": lambda: RowAdam(emb.parameters(), lr=1e-3),
        "dense_adam": lambda: torch.optim.Adam(emb.parameters(), lr=1e-3, foreach=True),
        "table_adam": lambda: TableAdam(emb.parameters(), lr=1e-3),
    }[which]()
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
    """One row per table size: median ms/step of each optimiser and the ratios."""
    from recfunnel.bench.rows import machine_info

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for n in rows:
            runs: dict[str, list[float]] = {k: [] for k in OPTIMISERS}
            for _ in range(repeats):  # interleaved: the four see the same machine load
                for k in OPTIMISERS:
                    runs[k].append(step_ms(n, k, dim))
            ms = {k: statistics.median(v) for k, v in runs.items()}
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
                        **{f"{k}_ms": v for k, v in ms.items()},
                        "dense_over_sparse": ms["dense_adam"] / ms["sparse_adam"],
                        "row_over_sparse": ms["row_adam"] / ms["sparse_adam"],
                        "table_over_row": ms["table_adam"] / ms["row_adam"],
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
            f"{r['rows']:>9,} x {r['dim']}: SparseAdam {m['sparse_adam_ms']:.2f}, RowAdam "
            f"{m['row_adam_ms']:.2f}, Adam {m['dense_adam_ms']:.2f}, TableAdam {m['table_adam_ms']:.2f} "
            f"ms/step (dense fused / row {m['table_over_row']:.2f}x)"
        )
    if args.json:
        from recfunnel.bench.rows import write_json

        write_json(rows, args.json)


if __name__ == "__main__":
    main()
