"""`recfunnel datasets`: list the named datasets; `recfunnel datasets generate-synthetic`: write a
synthetic heavy-tailed Parquet dataset (a folder of part files) for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli import info
from recfunnel.cli.common import DataRootOpt, console, fail

__all__ = ["datasets_app"]

datasets_app = typer.Typer(
    help="List the named datasets and whether they are present under the data root "
    "(`generate-synthetic`: write a synthetic Parquet dataset).",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)


@datasets_app.callback(invoke_without_command=True)
def datasets(ctx: typer.Context, data_root: DataRootOpt = None) -> None:
    """List the named datasets and whether they are present under the data root; the command
    `generate-synthetic` writes a synthetic heavy-tailed Parquet dataset."""
    if ctx.invoked_subcommand is None:
        info.datasets(data_root)


@datasets_app.command("generate-synthetic")
def generate_synthetic(
    rows: Annotated[int, typer.Option("--rows", min=1, help="interactions to write")],
    users: Annotated[int, typer.Option("--users", min=1, help="user ids to draw from (1..U)")],
    items: Annotated[int, typer.Option("--items", min=1, help="item ids to draw from (1..I)")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the part files and SOURCE.md into")],
    seed: Annotated[int, typer.Option("--seed", help="seed: the same options give the same files")] = 0,
    files: Annotated[int, typer.Option("--files", min=1, help="number of Parquet part files")] = 4,
    clusters: Annotated[int, typer.Option("--clusters", min=1, help="latent user/item clusters")] = 50,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", min=1, help="rows per record batch (and row group)")
    ] = 1_000_000,
) -> None:
    """Write a seeded, heavy-tailed interaction dataset as Parquet part files (columns user, item,
    timestamp, weight), batch by batch, plus a SOURCE.md saying how it was generated. Read it back
    with `data.dataset = "<out>"` (see recfunnel.data.synthetic for the generative model)."""
    from recfunnel.data.synthetic import generate_synthetic as generate

    try:
        stats = generate(
            out, rows, users, items, files=files, seed=seed, clusters=clusters, batch_rows=batch_rows
        )
    except FileExistsError as e:  # not written over: a dataset's files are never mixed with another's
        fail(str(e))
    console.print(
        f"wrote {stats['rows']:,} rows in {stats['files']} files to {out} in {stats['seconds']} s: "
        f"{stats['distinct_users']:,} users and {stats['distinct_items']:,} items seen; the top 1% of "
        f"items hold {stats['top_1pct_items_share']:.1%} of the rows"
    )
