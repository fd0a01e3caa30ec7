"""`recfunnel index`: an ANN index over a saved model's item vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli.common import console, fail, parse_params


def build_index(
    artifact: Annotated[Path, typer.Argument(help="artifact folder of a factorised model (mf, gmf, ...)")],
    backend: Annotated[
        str,
        typer.Option(help="exact | hnsw | ivf | ivfpq | milvus (Milvus server or milvus-lite: -p uri=...)"),
    ] = "hnsw",
    param: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            help="backend parameter key=value (repeatable), e.g. -p ef_search=128 (default: the backend's)",
        ),
    ] = [],
    threads: Annotated[int | None, typer.Option(help="threads for building (default: FAISS's)")] = None,
) -> None:
    """Build an ANN index over a saved model's item vectors, saved in <artifact>/index/<backend>.

    The index returns the model's own score (an item bias becomes one extra dimension), so
    `recfunnel recommend --index BACKEND` ranks as the model does, up to the ANN's recall."""
    import time

    from recfunnel.index import index_dir, index_from_model
    from recfunnel.recommender import Recommender

    params = parse_params(param)
    rec = Recommender.load(artifact)
    t0 = time.perf_counter()
    try:
        idx = index_from_model(rec.model_, backend, threads=threads, **params)
    except TypeError as e:  # a model without item vectors
        fail(str(e))
    seconds = time.perf_counter() - t0
    path = index_dir(artifact, backend)
    idx.save(path)
    console.print(f"{backend} index over {rec.model_.n_items:,} items built in {seconds:.2f}s -> {path}")
