"""`recfunnel recommend` (stored users, every user into a file, or an ad-hoc item list) and
`recfunnel similar`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from recfunnel.cli.common import check_k, console, err, fail, item_table, print_top
from recfunnel.cli.funnel import is_bundle, recommend_bundle

#: output suffix -> format of `recommend --out`
OUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}


def recommend(
    artifact: Annotated[
        Path,
        typer.Argument(
            help="artifact folder (`recfunnel train`) or funnel bundle (`recfunnel build-funnel`)"
        ),
    ],
    user: Annotated[list[str], typer.Option("--user", "-u", help="raw user id (repeatable)")] = [],
    all_users: Annotated[
        bool, typer.Option("--all-users", help="every user the model knows (needs --out)")
    ] = False,
    item: Annotated[
        list[str],
        typer.Option(
            "--item",
            "-i",
            help="instead of a stored user: raw ids of recent items, oldest first (repeatable); "
            "sequence models (gru4rec, sasrec, item2vec) answer for this ad-hoc history",
        ),
    ] = [],
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
    include_seen: Annotated[bool, typer.Option(help="allow items the user already has")] = False,
    index: Annotated[
        str | None,
        typer.Option(
            help="search this index backend built by `recfunnel index` (e.g. hnsw) instead of "
            "scoring every item; factorised models only (default: exact scoring)"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="write rows (user, rank, item, score) to this .parquet, .csv or .tsv file instead of "
            "printing tables (default: print)",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="users scored at once with --out")] = 1024,
    progress: Annotated[bool, typer.Option(help="progress bar with --out")] = True,
    exclude: Annotated[
        list[str],
        typer.Option("--exclude", "-x", help="bundle: item ids never to return (repeatable) (default: none)"),
    ] = [],
    as_json: Annotated[
        bool, typer.Option("--json", help="bundle: print the answer as JSON (default: a table)")
    ] = False,
) -> None:
    """Top-k items for users of a saved model, with titles where the dataset has them.

    With --item (no --user) a sequence model recommends for an ad-hoc list of recent items, the
    way a request carrying the latest clicks would be answered; the listed items are excluded.
    With --all-users --out FILE every user's top-k is written as rows (user, rank, item, score).

    Given a funnel bundle, the funnel answers (retrieve -> rank -> filter): the top-k with the
    sources that proposed each item and the time of every stage; --item without --user is an
    anonymous visitor's recent items, neither is an anonymous visitor (popular items)."""
    from recfunnel.recommender import Recommender

    if is_bundle(artifact):
        if all_users or index is not None or out is not None or include_seen:
            fail("--all-users, --index, --out and --include-seen apply to model artifacts, not bundles")
        recommend_bundle(artifact, user, item, exclude, k, as_json)
        return
    if exclude or as_json:
        fail("--exclude and --json apply to funnel bundles (`recfunnel build-funnel`)")

    check_k(k)
    if batch_size < 1:
        fail(f"--batch-size must be 1 or more, got {batch_size}")
    if (user or all_users) and item:
        fail("give either --user (stored users) or --item (an ad-hoc list of recent items), not both")
    if not (user or all_users or item):
        fail("give --user or --item (one of them): --user for stored users (or --all-users with --out), "
             "--item for an ad-hoc list of recent items")  # fmt: skip
    if all_users and user:
        fail("--all-users already takes every user: drop --user")
    if all_users and out is None:
        fail("--all-users writes a file: add --out recs.parquet (or .csv, .tsv)")
    if out is not None and out.suffix.lower() not in OUT_FORMATS:
        fail(f"--out {out}: unknown format {out.suffix!r}; valid suffixes: {', '.join(OUT_FORMATS)}")
    if item and (index is not None or out is not None):
        fail("--index and --out apply to stored users; an ad-hoc --item list is scored exactly and printed")
    rec = Recommender.load(artifact)
    if item:
        try:
            ids, scores = rec.recommend_from_items([item], k=k)
        except TypeError as e:  # not a sequence model
            fail(str(e))
        print_top(rec, "recent items " + " > ".join(item), ids[0], scores[0], k, False, None)
        return
    for u in user:
        if u not in rec.users_:
            fail(
                f"unknown user {u!r}: the model knows {len(rec.users_)} users "
                f"(e.g. {', '.join(rec.users_.ids[:5])})"
            )
    ann = None
    if index is not None:
        from recfunnel.index import index_dir, load_index

        ann = load_index(index_dir(artifact, index))
    try:
        if out is not None:
            users = list(rec.users_.ids) if all_users else user
            n = write_recommendations(rec, users, out, k, not include_seen, ann, batch_size, progress)
            console.print(f"{n:,} rows for {len(users):,} users written to {out}")
            return
        for u in user:
            ids, scores = rec.recommend([u], k=k, exclude_seen=not include_seen, index=ann)
            print_top(rec, f"user {u}", ids[0], scores[0], k, include_seen, index)
    except TypeError as e:  # an index over a model without item vectors
        fail(str(e))


def write_recommendations(
    rec, users: list[str], out: Path, k: int, exclude_seen: bool, index, batch_size: int, progress: bool
) -> int:
    """Top-k of `users` in batches through Recommender.recommend, written atomically to `out` as rows
    (user, rank 1.., item, score); returns the number of rows."""
    import io

    import polars as pl
    from rich.progress import Progress

    from recfunnel.atomic import atomic_write_bytes

    schema = {"user": pl.String, "rank": pl.Int32, "item": pl.String, "score": pl.Float32}
    frames = []
    with Progress(console=err, transient=True, disable=not (progress and err.is_terminal)) as bar:
        task = bar.add_task("recommending", total=len(users))
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            ids, scores = rec.recommend(batch, k=k, exclude_seen=exclude_seen, index=index)
            lengths = np.fromiter((len(r) for r in ids), np.int64, len(ids))
            keep = np.arange(scores.shape[1])[None, :] < lengths[:, None]  # rows are best first
            firsts = np.repeat(np.cumsum(lengths) - lengths, lengths)
            frames.append(
                pl.DataFrame(
                    {
                        "user": np.repeat(np.asarray(batch, dtype=object), lengths).tolist(),
                        "rank": (np.arange(int(lengths.sum())) - firsts + 1).astype(np.int32),
                        "item": [i for row in ids for i in row],
                        "score": scores[keep].astype(np.float32),
                    },
                    schema=schema,
                )
            )
            bar.advance(task, len(batch))
    df = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    buf = io.BytesIO()
    fmt = OUT_FORMATS[out.suffix.lower()]
    if fmt == "parquet":
        df.write_parquet(buf)
    else:
        df.write_csv(buf, separator="\t" if fmt == "tsv" else ",")
    atomic_write_bytes(out, buf.getvalue())
    return df.height


def similar(
    artifact: Annotated[Path, typer.Argument(help="artifact folder of a factorised model (mf, gmf) or EASE")],
    item: Annotated[list[str], typer.Option("--item", "-i", help="raw item id (repeatable)")],
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
) -> None:
    """Items most similar to an item (cosine of item vectors), titles shown."""
    from recfunnel.recommender import Recommender

    check_k(k)
    rec = Recommender.load(artifact)
    try:
        ids, scores = rec.similar_items(item, k)
    except TypeError as e:  # no item vectors
        fail(str(e))
    for q, row, srow in zip(item, ids, scores, strict=True):
        item_table(rec, f"top-{k} like {q} ({rec.titles([q])[0]}), cosine", row, srow)
