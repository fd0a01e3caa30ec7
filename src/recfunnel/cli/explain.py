"""`recfunnel explain`: AutoInt's field-pair attention and FM's pairwise terms for one (user, item)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recfunnel.cli.common import DataRootOpt, console, fail


def explain(
    user: Annotated[str, typer.Option("--user", "-u", help="raw user id (MovieLens-100K)")],
    item: Annotated[str, typer.Option("--item", "-i", help="raw item id")],
    epochs: Annotated[int, typer.Option(help="max epochs for the AutoInt and FM it trains first")] = 20,
    top: Annotated[int, typer.Option(help="how many field pairs / FM terms to show")] = 10,
    timestamp: Annotated[
        int | None, typer.Option(help="unix time of the event (default: after the log)")
    ] = None,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="keep the trained rankers here and reuse them (default $RECFUNNEL_CACHE/explain "
            "or ~/.cache/recfunnel/explain)"
        ),
    ] = None,
    use_cache: Annotated[
        bool, typer.Option("--use-cache/--no-cache", help="reuse / keep trained rankers")
    ] = True,
    data_root: DataRootOpt = None,
) -> None:
    """Why would this user like this item? Trains AutoInt and FM on MovieLens-100K as a CTR task
    (temporal 80/10/10), then prints AutoInt's attention between field pairs and the largest FM
    pairwise terms for the (user, item) row. The trained pair is cached (same data, seed and
    epochs), so later calls answer in seconds."""
    from recfunnel.data.readers import load_dataset
    from recfunnel.data.splits import temporal
    from recfunnel.explain import default_cache_dir, explain_pair, format_explanation, train_explainers

    if top < 1:
        fail(f"--top is how many pairs to show: give 1 or more, got {top}")
    ds = load_dataset("ml-100k", data_root)
    if user not in ds.users or item not in ds.items:
        fail(f"unknown {'user ' + repr(user) if user not in ds.users else 'item ' + repr(item)} in ml-100k")
    split = temporal(ds)
    cache_dir = (cache or default_cache_dir()) if use_cache else None
    console.print(
        "AutoInt and FM on the temporal split's train part "
        + (f"(trained once, kept in {cache_dir}) ..." if cache_dir else "(training) ...")
    )
    schema, autoint, fm = train_explainers(ds, split, seed=seed, epochs=epochs, cache_dir=cache_dir)
    e = explain_pair(ds, schema, user, item, autoint=autoint, fm=fm, timestamp=timestamp, top=top)
    console.print(format_explanation(e), markup=False)
