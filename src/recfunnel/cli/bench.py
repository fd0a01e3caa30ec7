"""`recfunnel bench` (run a named suite) and `recfunnel bench-report` (its JSON as markdown)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli.common import DataRootOpt, console, fail


def bench(
    suite: Annotated[str, typer.Argument(help="suite name, e.g. ncf-ml100k")],
    quick: Annotated[bool, typer.Option(help="reduced CI-sized run")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write result rows here (default: print only)")
    ] = None,
    data_root: DataRootOpt = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    models: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="run only this model of the suite (repeatable; ann: a backend); with --json, the "
            "file's rows of other models are kept and those of the models run are replaced (default: every "
            "model of the suite)",
        ),
    ] = [],
    seed: Annotated[
        list[int],
        typer.Option(
            "--seed",
            help="training seed (repeatable; two or more: mean +- std rows over them, in the suites "
            "that take seeds) (default: the suite's)",
        ),
    ] = [],
) -> None:
    """Run a named benchmark suite; rows {suite, model, dataset, protocol, split, seed, metrics,
    train_seconds, eval_seconds, peak_rss_mb, params}."""
    from recfunnel.bench.suites import SUITES, merged_with_file, run_suite, write_json

    if suite not in SUITES:
        fail(f"unknown suite {suite!r}; valid: {', '.join(sorted(SUITES))}")
    rows = run_suite(
        suite, quick=quick, data_root=data_root, progress=progress, models=models or None, seeds=seed or None
    )
    command = " ".join(
        ["recfunnel", "bench", suite]
        + (["--quick"] if quick else [])
        + [f"-m {m}" for m in models]
        + [f"--seed {x}" for x in seed]
        + ([f"--json {json_out}"] if json_out else [])
    )
    for r in rows:
        r["command"] = command
    for r in rows:
        metrics = r.get("metrics") or {}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in list(metrics.items())[:4] if isinstance(v, (int, float)))
        seconds = r.get("train_seconds") or r.get("build_seconds") or 0.0
        console.print(f"{r.get('model', '?'):<18} {r.get('protocol', ''):<11} {shown}  ({seconds:.1f}s)")
    if json_out:
        out_rows = rows
        if models:
            ran = {(r.get("model"), r.get("protocol"), r.get("dataset")) for r in rows}
            out_rows = merged_with_file(
                rows, json_out, lambda r: (r.get("model"), r.get("protocol"), r.get("dataset")) in ran
            )
        write_json(out_rows, json_out)
        console.print(
            f"{len(rows)} rows written to {json_out}" + (f" ({len(out_rows)} in all)" if models else "")
        )


def bench_report(
    results: Annotated[list[Path], typer.Argument(help="JSON files written by `recfunnel bench --json`")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write markdown here (default stdout)")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="also draw figures (ANN recall vs speed, validation curves) into this folder (default: none)"
        ),
    ] = None,
    preamble: Annotated[
        Path | None,
        typer.Option(
            help="markdown file put before the sections (a title, how to read them) (default: none)"
        ),
    ] = None,
) -> None:
    """Render benchmark JSON as the markdown of BENCHMARKS.md (every number from the rows)."""
    import os

    from recfunnel.atomic import atomic_write_text
    from recfunnel.bench.report import load_rows, render_markdown

    cmd = (
        "recfunnel bench-report "
        + " ".join(str(p) for p in results)
        + (f" --plots {plots}" if plots else "")
        + (f" --preamble {preamble}" if preamble else "")
        + (f" -o {out}" if out else "")
    )
    rows = load_rows(results)
    images: dict[str, list[str]] = {}
    if plots:
        from recfunnel.bench.plots import render_plots

        base = out.parent if out else Path.cwd()
        images = {s: [os.path.relpath(p, base) for p in ps] for s, ps in render_plots(rows, plots).items()}
    text = render_markdown(rows, command=cmd, plots=images)
    if preamble:
        text = preamble.read_text("utf-8").rstrip() + "\n\n" + text
    if out:
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)
