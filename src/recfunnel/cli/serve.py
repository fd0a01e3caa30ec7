"""`recfunnel serve`: the HTTP service over a funnel bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli.common import err, fail

__all__ = ["serve"]


def serve(
    bundle: Annotated[Path, typer.Argument(help="funnel bundle folder (`recfunnel build-funnel`)")],
    host: Annotated[
        str, typer.Option(help="address to bind (0.0.0.0 exposes the service to the network)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[
        int, typer.Option(help="server processes, each with its own SO_REUSEPORT socket (about one per core)")
    ] = 1,
    threads: Annotated[int, typer.Option(help="torch threads per process")] = 1,
    events: Annotated[
        str,
        typer.Option(
            help="event store: a SQLite file (path.db or sqlite:///abs/path.db), redis://host:port/0, or "
            "'none' (POST /events disabled)"
        ),
    ] = "recfunnel-events.db",
    max_k: Annotated[int, typer.Option(help="largest k a request may ask")] = 200,
    fresh_events: Annotated[int, typer.Option(help="newest stored events read per user and request")] = 50,
    ranker_precision: Annotated[
        str,
        typer.Option(
            help="precision of the ranker's MLP layers: auto (bf16 on CPUs with AMX, else fp32), fp32, "
            "bf16; /ready reports what was applied"
        ),
    ] = "auto",
    max_batch: Annotated[
        int,
        typer.Option(
            help="most /recommend requests answered by one funnel call when several wait at once "
            "(never waits for more to arrive); 1 answers each alone"
        ),
    ] = 16,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve recommendations over HTTP: /recommend, /similar-items, /events, /health, /ready,
    /metrics, /admin/reload (needs $RECFUNNEL_ADMIN_KEY) and OpenAPI docs at /docs.

    Binds 127.0.0.1 by default. The bundle is checked whole and warmed before the port opens."""
    from recfunnel.serve.app import ADMIN_KEY_ENV, ServiceSettings
    from recfunnel.serve.schemas import MAX_K, Limits
    from recfunnel.serve.server import serve as run

    if not 1 <= max_k <= MAX_K:
        fail(f"--max-k must be between 1 and {MAX_K}, got {max_k}")
    if workers < 1 or threads < 1 or max_batch < 1:
        fail("--workers, --threads and --max-batch must be 1 or more")
    from recfunnel.funnel.ranker import RANKER_PRECISIONS

    if ranker_precision not in RANKER_PRECISIONS:
        fail(f"--ranker-precision must be one of {', '.join(RANKER_PRECISIONS)}, got {ranker_precision!r}")
    import os

    if not os.environ.get(ADMIN_KEY_ENV):
        err.print(f"note: ${ADMIN_KEY_ENV} is not set: /admin/reload is refused")
    settings = ServiceSettings(
        bundle=bundle,
        events=None if events.lower() == "none" else events,
        limits=Limits(max_k=max_k),
        fresh_events=fresh_events,
        ranker_precision=ranker_precision,
        max_batch=max_batch,
    )
    err.print(f"serving {bundle} on http://{host}:{port} with {workers} process(es); docs at /docs")
    run(settings, host=host, port=port, workers=workers, threads=threads, log_level=log_level)
