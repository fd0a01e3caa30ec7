"""`recfunnel build-funnel` (train retrievers and ranker, write a bundle) and the bundle half of
`recfunnel recommend` (top-k with sources and stage timings)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from recfunnel.cli.common import DataRootOpt, check_k, console, err, fail

__all__ = ["build_funnel", "is_bundle", "recommend_bundle"]


def is_bundle(path: Path) -> bool:
    from recfunnel.funnel.bundle import BUNDLE_MANIFEST

    return (path / BUNDLE_MANIFEST).is_file()


def build_funnel(
    config: Annotated[
        Path,
        typer.Argument(
            help="funnel TOML: [data], [split], [models.<name>], [[retrievers]], [ranker], [filters]"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle folder to write (replaced atomically)")],
    data_root: DataRootOpt = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            help="evaluate on the test part: each trained model alone, then the whole funnel against "
            "its ANN retriever alone (NDCG@10, Recall@10, candidate recall@200, ms per stage); "
            "stored in the bundle"
        ),
    ] = True,
    progress: Annotated[bool, typer.Option(help="training progress bars")] = True,
) -> None:
    """Train the funnel's retrievers and ranker (through the run layer), build the indexes, and
    write one bundle folder that `recfunnel recommend` and `recfunnel serve` load.

    The ranker is trained for this funnel: positives from the train part, negatives mined from the
    retriever's own top candidates (hard) and drawn at random, in the mix
    [ranker.negatives].hard_fraction sets. See examples/funnel-ml100k.toml."""
    from recfunnel.funnel.build import build_funnel as build
    from recfunnel.funnel.bundle import save_bundle
    from recfunnel.funnel.config import FunnelConfig

    if not config.is_file():
        fail(f"no funnel config at {config}")
    over: dict = {}
    if data_root is not None:
        over["data"] = {"data_root": str(data_root)}
    cfg = FunnelConfig.from_toml(config, over)
    if not progress:
        cfg = cfg.without_progress()
    t0 = time.perf_counter()
    built = build(cfg, evaluate=evaluate, log=lambda m: err.print(escape(m)))
    if evaluate:
        from recfunnel.funnel.build import evaluate_built

        ev = evaluate_built(built)
        for name in ("retriever", "funnel"):
            if name in ev:
                figures = ", ".join(f"{k} {v:.4f}" for k, v in ev[name].items() if "@" in k)
                what = "funnel" if name == "funnel" else "retriever alone"
                console.print(f"{what} (test, {ev['users']} users): {figures}")
        console.print("ms per request: " + ", ".join(f"{k} {v:.2f}" for k, v in ev["stage_ms"].items()))
    path = save_bundle(built, out)
    from recfunnel.funnel.bundle import read_bundle_manifest

    manifest = read_bundle_manifest(path, verify=False)
    console.print(
        f"bundle {manifest['bundle_id']} written to {path} in {time.perf_counter() - t0:.1f} s: sources "
        f"{', '.join(manifest['sources'])}; ranker {manifest['ranker']}"
    )


def recommend_bundle(
    path: Path, users: list[str], items: list[str], exclude: list[str], k: int, as_json: bool
) -> None:
    """Answer one request per --user (or one anonymous request with the --item history)."""
    from recfunnel.funnel import Funnel

    check_k(k)
    if users and items:
        fail("give --user (stored users; add recent items with the service) or --item, not both")
    funnel = Funnel.load(path)
    if users:
        res = funnel.recommend(users=users, k=k, exclude=[exclude] * len(users))
        who = [f"user {u}" for u in users]
    else:
        res = funnel.recommend(users=[None], recent_items=[items], k=k, exclude=[exclude])
        who = ["recent items " + " > ".join(items) if items else "anonymous (popular)"]
    proposed = res.proposed_by()
    if as_json:
        out = [
            {
                "request": w,
                "unknown_user": res.unknown_users[b],
                "unknown_items": list(res.unknown_items[b]),
                "items": [
                    {"item": i, "score": float(s), "sources": p}
                    for i, s, p in zip(res.item_ids[b], res.scores[b], proposed[b], strict=False)
                ],
            }
            for b, w in enumerate(who)
        ]
        print(json.dumps({"bundle_id": funnel.bundle_id, "results": out, "timings_ms": res.timings_ms}))
        return
    for b, w in enumerate(who):
        if res.unknown_users[b] is not None:
            err.print(f"unknown user {res.unknown_users[b]!r}: answered as an anonymous visitor")
        if res.unknown_items[b]:
            err.print(f"unknown item ids ignored: {', '.join(res.unknown_items[b])}")
        table = Table(title=f"top {k} for {escape(w)} (bundle {funnel.bundle_id})")
        for col in ("rank", "item", "score", "sources"):
            table.add_column(col)
        for r, (i, s, p) in enumerate(zip(res.item_ids[b], res.scores[b], proposed[b], strict=False), 1):
            table.add_row(str(r), escape(i), f"{float(s):.4f}", ", ".join(p))
        console.print(table)
    console.print("stage timings (ms): " + ", ".join(f"{n} {v:.1f}" for n, v in res.timings_ms.items()))
