"""`recfunnel report`: bench JSON as one self-contained HTML page (tables with confidence intervals and
significance marks, charts), optionally checked in headless Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli.common import console, fail


def report(
    results: Annotated[list[Path], typer.Argument(help="JSON files written by `recfunnel bench --json`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML page to write")] = Path("report.html"),
    baseline: Annotated[
        str | None,
        typer.Option(help="model every other one is tested against (default: the first model of each table)"),
    ] = None,
    png_dir: Annotated[
        Path | None, typer.Option(help="also write each chart as a PNG into this folder (default: none)")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="open the page in headless Chromium: fail on a broken image or a chart without alt text, "
            "and save a screenshot (default: no check)",
        ),
    ] = False,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            help="where the browser check saves its screenshot; implies --check (default: the page's path "
            "with .png)"
        ),
    ] = None,
) -> None:
    """Render benchmark rows as an HTML report: model x metric tables with 95% intervals and marks
    against a baseline (paired Wilcoxon, Holm), bar charts, accuracy vs training time, recall@K
    curves, accuracy vs guardrails. Images are embedded; the page loads nothing from the network."""
    from recfunnel.bench.html_report import build_report, check_in_browser, write_report
    from recfunnel.bench.report import load_rows

    command = " ".join(
        ["recfunnel report", *map(str, results), f"--out {out}"]
        + ([f"--baseline {baseline}"] if baseline else [])
        + ([f"--png-dir {png_dir}"] if png_dir else [])
        + (["--check"] if check else [])
        + ([f"--screenshot {screenshot}"] if screenshot else [])
    )
    rows = load_rows(results)
    page = build_report(rows, baseline=baseline, sources=[str(p) for p in results], command=command)
    written = write_report(page, out, png_dir)
    console.print(
        f"{out}: {len(page.tables)} tables, {len(page.charts)} charts (each with a title and axis labels)"
        + (f"; {len(written) - 1} PNGs in {png_dir}" if png_dir else "")
    )
    if not (check or screenshot):
        return
    shot = screenshot or out.with_suffix(".png")
    try:
        seen = check_in_browser(out, shot)
    except (FileNotFoundError, RuntimeError) as e:
        fail(f"browser check: {e}")
    if len(seen.images) != len(page.charts):
        fail(f"browser check: the page shows {len(seen.images)} images, {len(page.charts)} charts were drawn")
    if not seen.ok:
        fail(
            f"browser check: {len(seen.broken)} broken images ({', '.join(seen.broken[:3])}), "
            f"{seen.missing_alt} without alt text"
        )
    console.print(f"{seen.browser}: {len(seen.images)} images decoded, each with alt text; screenshot {shot}")
