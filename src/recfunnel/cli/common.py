"""What the command modules share: the consoles, `fail`, shared options, key=value parsing and the
result / item tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML run config (sections data, split, model, features, ctr, objective, train, eval); "
        "flags override it (default: none, the built-in defaults)",
    ),
]
DataRootOpt = Annotated[
    Path | None, typer.Option(help="data root (default: $RECFUNNEL_DATA, else ../shared/data)")
]
ArtifactArg = Annotated[Path, typer.Argument(help="artifact folder written by `recfunnel train`")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` (one line, on stderr) and exit with `code`."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def one_line(e: BaseException) -> str:
    """The message of an error as one line for `error: ...` (pydantic's list of problems joined,
    a KeyError's quotes dropped, an OSError as 'reason: file')."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        parts = []
        for d in e.errors():
            loc = ".".join(str(x) for x in d["loc"])
            msg = d["msg"].removeprefix("Value error, ")
            scalar = "input" in d and not isinstance(d["input"], (dict, list, tuple))
            parts.append((f"{loc}: " if loc else "") + msg + (f" (got {d['input']!r})" if scalar else ""))
        text = "; ".join(parts)
    elif isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    elif isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.strerror}: {e.filename}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """key=value pairs; values parsed as JSON when they parse (numbers, lists, true/false)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            fail(f"--param expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def check_k(k: int, flag: str = "-k") -> None:
    """Reject a cut-off / list length below 1 with a sentence."""
    if k < 1:
        fail(f"{flag} is how many items to list: give 1 or more, got {k}")


def results_table(results: list, title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "protocol", "split"):
        table.add_column(col)
    ks = results[0].ks if results else ()
    keys = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks] + ([f"mrr@{ks[-1]}"] if ks else [])
    if results and not ks:  # pointwise (CTR) results: AUC, logloss, GAUC
        keys = [k for k, v in results[0].metrics.items() if isinstance(v, (int, float))]
    for k in keys:
        table.add_column(k, justify="right")
    for r in results:
        table.add_row(
            r.model, r.protocol, f"{r.split.split('(')[0]}/{r.part}", *[f"{r.metrics[k]:.4f}" for k in keys]
        )
    return table


def item_table(rec, title: str, ids: list[str], scores) -> None:
    """Print a numbered table of raw item ids, their titles and scores."""
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    for n, (i, t, s) in enumerate(zip(ids, rec.titles(ids), scores, strict=False), 1):
        table.add_row(str(n), i, t, f"{s:.4f}")
    console.print(table)


def print_top(rec, who: str, ids: list[str], scores, k: int, include_seen: bool, index: str | None) -> None:
    how = f"via {index} index" if index else "exact"
    seen = "seen items allowed" if include_seen else "seen excluded"
    item_table(rec, f"top-{k} for {who} ({seen}, {how})", ids, scores)
