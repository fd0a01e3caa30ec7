"""The `recfunnel` command line: one small module per command that parses options and calls the
library. Errors meant for the user (any RecfunnelError, ValueError, KeyError, a missing file) print
as one line `error: ...` with exit status 2; `--debug` (or RECFUNNEL_DEBUG=1) shows the traceback."""

from __future__ import annotations

from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from recfunnel.cli import bench, evaluate, explain, funnel, index, info, recommend, report, serve, train
from recfunnel.cli.common import fail, one_line
from recfunnel.cli.synthetic import datasets_app
from recfunnel.errors import RecfunnelError

__all__ = ["app"]

#: errors whose message is written for the user: one line, no traceback
USER_ERRORS = (
    RecfunnelError,
    ValueError,
    KeyError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


class Commands(TyperGroup):
    """The command group: runs a command and turns a user error into `error: <message>`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            if ctx.params.get("debug"):
                raise
            fail(one_line(e))


app = typer.Typer(
    cls=Commands,
    help="recfunnel: train, evaluate and serve recommenders (candidate retrieval, then ranking).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="RECFUNNEL_DEBUG", help="show an error's traceback instead of one line"
        ),
    ] = False,
) -> None:
    # options of the whole program; --debug is read by Commands.invoke
    pass


app.command()(train.train)
app.command()(evaluate.evaluate)
app.command("build-funnel")(funnel.build_funnel)
app.command()(recommend.recommend)
app.command()(recommend.similar)
app.command()(serve.serve)
app.command("index")(index.build_index)
app.command()(explain.explain)
app.command()(info.models)
app.add_typer(datasets_app, name="datasets")
app.command()(bench.bench)
app.command("bench-report")(bench.bench_report)
app.command()(report.report)
