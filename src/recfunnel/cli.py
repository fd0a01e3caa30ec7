"""The `recfunnel` command line: a thin shell over recfunnel.pipeline / recommender / bench."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="recfunnel: train, evaluate and serve recommenders (candidate retrieval, then ranking).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML run config (sections data, split, model, objective, train, eval); flags override it",
    ),
]
DataRootOpt = Annotated[
    Path | None, typer.Option(help="data root (default: $RECFUNNEL_DATA, else ../shared/data)")
]


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """key=value pairs; values parsed as JSON when they parse (numbers, lists, true/false)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            _fail(f"--param expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _results_table(results: list, title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "protocol", "split"):
        table.add_column(col)
    ks = results[0].ks if results else ()
    keys = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks] + ([f"mrr@{ks[-1]}"] if ks else [])
    for k in keys:
        table.add_column(k, justify="right")
    for r in results:
        table.add_row(
            r.model, r.protocol, f"{r.split.split('(')[0]}/{r.part}", *[f"{r.metrics[k]:.4f}" for k in keys]
        )
    return table


def _show_top(rec, user: str, k: int) -> None:
    ids, scores = rec.recommend([user], k=k)
    _print_top(rec, f"user {user}", ids[0], scores[0], k, False, None)


@app.command()
def train(
    config: ConfigOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="model family: popularity, ease, mf, gmf, mlp, neumf (see `recfunnel models`)",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="named dataset (ml-100k, ml-1m, amazon-video-seq, diginetica-sample) or a folder/file path"
        ),
    ] = None,
    data_root: DataRootOpt = None,
    table: Annotated[
        Path | None, typer.Option(help="your own CSV/TSV/Parquet file (use with --user-col and --item-col)")
    ] = None,
    user_col: Annotated[
        str | None, typer.Option(help="user column: a name, or a 0-based position with --no-header")
    ] = None,
    item_col: Annotated[str | None, typer.Option(help="item column")] = None,
    rating_col: Annotated[str | None, typer.Option(help="rating column (optional)")] = None,
    timestamp_col: Annotated[str | None, typer.Option(help="timestamp column (optional)")] = None,
    weight_col: Annotated[str | None, typer.Option(help="weight / play-count column (optional)")] = None,
    sep: Annotated[str | None, typer.Option(help="field separator (default by suffix: ',' or tab)")] = None,
    header: Annotated[
        bool, typer.Option("--header/--no-header", help="first line holds column names")
    ] = True,
    rating_threshold: Annotated[float | None, typer.Option(help="keep ratings >= this as positives")] = None,
    split: Annotated[
        str | None, typer.Option(help="leave_one_out | random_holdout | temporal | ratio")
    ] = None,
    split_file: Annotated[Path | None, typer.Option(help="reuse a saved split (.npz)")] = None,
    epochs: Annotated[int | None, typer.Option(help="maximum epochs (default 20)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="mini-batch size (default 256)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default 1e-3)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default 0)")] = None,
    param: Annotated[
        list[str],
        typer.Option(
            "--param", "-p", help="model hyper-parameter key=value (repeatable), e.g. -p factors=16"
        ),
    ] = [],
    pretrain: Annotated[bool, typer.Option(help="NeuMF: pre-train GMF and MLP first (alpha 0.5)")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="artifact folder to write (default artifacts/<model>-<dataset>)"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in <out>.ckpt")] = False,
    show_user: Annotated[
        str | None, typer.Option(help="print a top-10 for this raw user id (default: the first user)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write results as JSON")] = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Train one model, evaluate it on the test part (full ranking and sampled), save an artifact,
    and print a results table plus a top-10 for one user."""
    from recfunnel.data.errors import DataError
    from recfunnel.pipeline import (
        RunConfig,
        evaluate_all,
        load_data,
        load_split,
        pretrained_neumf,
        train_model,
    )
    from recfunnel.recommender import Recommender

    over: dict[str, Any] = {"data": {}, "split": {}, "model": {}, "train": {}}
    if dataset:
        over["data"]["dataset"] = dataset
    if data_root:
        over["data"]["data_root"] = str(data_root)
    if table:
        if not (user_col and item_col):
            _fail("--table needs --user-col and --item-col")

        def col(v: str | None) -> str | int | None:
            return None if v is None else (int(v) if not header and v.isdigit() else v)

        over["data"]["table"] = {
            k: v
            for k, v in {
                "path": str(table),
                "user": col(user_col),
                "item": col(item_col),
                "rating": col(rating_col),
                "timestamp": col(timestamp_col),
                "weight": col(weight_col),
                "sep": sep,
                "header": header,
            }.items()
            if v is not None
        }
    if rating_threshold is not None:
        over["data"]["rating_threshold"] = rating_threshold
    if split:
        over["split"]["method"] = split
    if split_file:
        over["split"]["path"] = str(split_file)
    if model:
        over["model"]["name"] = model
    if param:
        over["model"]["params"] = _parse_params(param)
    if pretrain:
        over["model"]["pretrain"] = True
    for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}.items():
        if v is not None:
            over["train"][k] = v
    over["train"]["progress"] = progress
    try:
        cfg = RunConfig.from_toml(config, over) if config else RunConfig().updated(over)
        from recfunnel.models.base import user_item_class

        user_item_class(cfg.model.name).Config(**cfg.model.params)  # before any data is read
    except (ValueError, OSError) as e:
        _fail(f"bad configuration: {e}")
    try:
        ds = load_data(cfg.data)
        sp = load_split(cfg.split, ds)
    except (DataError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    console.print(
        f"[bold]{ds.name}[/bold]: {ds.n_users:,} users, {ds.n_items:,} items, "
        f"{len(ds.interactions):,} interactions; split {sp.describe()} "
        f"({len(sp.train):,}/{len(sp.valid):,}/{len(sp.test):,})"
    )
    name = cfg.model.name
    out = out or Path("artifacts") / f"{name}-{ds.name}"
    try:
        if cfg.model.pretrain:
            init, _ = pretrained_neumf(cfg, ds, sp)
            fitted, report = train_model(
                name, cfg.model.params, ds, sp, cfg.train, cfg.objective, cfg.eval.valid_protocol, init=init
            )
        else:
            fitted, report = train_model(
                name,
                cfg.model.params,
                ds,
                sp,
                cfg.train,
                cfg.objective,
                cfg.eval.valid_protocol,
                checkpoint_dir=Path(f"{out}.ckpt"),
                resume=resume,
            )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    results = evaluate_all(fitted, ds, sp, cfg)
    console.print(_results_table(results, f"{name} on {ds.name} (test)"))
    if report is not None and report.history:
        console.print(
            f"trained {len(report.history)} epochs in {report.seconds:.1f}s "
            f"(best epoch {report.best_epoch + 1}), {report.samples_per_second:,.0f} samples/s, "
            f"{100 * report.pipeline_share:.1f}% of epoch time outside forward/backward"
        )
    rec = Recommender(name, cfg.model.params, cfg.train)._adopt(fitted, ds, sp, report)
    metrics = {f"{r.protocol}/{k}": v for r in results for k, v in r.metrics.items()}
    rec.save(
        out,
        metrics=metrics,
        extra={"run": cfg.model_dump(mode="json"), "dataset": ds.summary(), "split": sp.describe()},
    )
    sp.save(out / "split.npz")
    console.print(f"artifact written to {out}")
    _show_top(rec, show_user or ds.users.ids[0], 10)
    if json_out:
        json_out.write_text(json.dumps([r.to_dict() for r in results], indent=1))


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="artifact folder written by `recfunnel train`")],
    protocol: Annotated[
        list[str],
        typer.Option(help="full, full-unmasked (repeats count: session data) and/or sampled (repeatable)"),
    ] = [
        "full",
        "sampled",
    ],
    k: Annotated[list[int], typer.Option("-k", help="cut-offs (repeatable)")] = [5, 10, 20],
    part: Annotated[str, typer.Option(help="test or valid")] = "test",
    data_root: DataRootOpt = None,
) -> None:
    """Re-evaluate a saved model on the split saved with it (identical data to the training run)."""
    from recfunnel.artifacts import ArtifactError
    from recfunnel.data.errors import DataError
    from recfunnel.data.splits import Split
    from recfunnel.eval.protocols import evaluate as run_eval
    from recfunnel.pipeline import RunConfig, load_data
    from recfunnel.recommender import Recommender

    try:
        rec = Recommender.load(artifact)
        from recfunnel.artifacts import read_manifest

        run = RunConfig.model_validate((read_manifest(artifact).get("extra") or {}).get("run", {}))
        data_cfg = run.data.model_copy(update={"data_root": data_root}) if data_root else run.data
        ds = load_data(data_cfg)
        sp = Split.load(artifact / "split.npz")
        sp.check(ds)
    except (ArtifactError, DataError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    results = [
        run_eval(rec.model_, ds, sp, p, part, tuple(k), name=rec.family, seed=run.train.seed)
        for p in protocol
    ]
    console.print(_results_table(results, f"{rec.family} on {ds.name} ({part})"))


@app.command()
def recommend(
    artifact: Annotated[Path, typer.Argument(help="artifact folder written by `recfunnel train`")],
    user: Annotated[list[str], typer.Option("--user", "-u", help="raw user id (repeatable)")] = [],
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
            "scoring every item; factorised models only"
        ),
    ] = None,
) -> None:
    """Top-k items for users of a saved model, with titles where the dataset has them.

    With --item (no --user) a sequence model recommends for an ad-hoc list of recent items, the
    way a request carrying the latest clicks would be answered; the listed items are excluded."""
    from recfunnel.artifacts import ArtifactError
    from recfunnel.recommender import Recommender

    if bool(user) == bool(item):
        _fail("give either --user (stored users) or --item (an ad-hoc list of recent items), not both")
    try:
        rec = Recommender.load(artifact)
        if item:
            if index is not None:
                _fail("--index applies to stored users; ad-hoc --item lists are scored exactly")
            try:
                ids, scores = rec.recommend_from_items([item], k=k)
            except KeyError as e:
                _fail(str(e.args[0]) if e.args else str(e))
            _print_top(rec, "recent items " + " > ".join(item), ids[0], scores[0], k, False, None)
            return
        ann = None
        if index is not None:
            from recfunnel.index import index_dir, load_index

            ann = load_index(index_dir(artifact, index))
        for u in user:
            if u not in rec.users_:
                _fail(
                    f"unknown user {u!r}: the model knows {len(rec.users_)} users "
                    f"(e.g. {', '.join(rec.users_.ids[:5])})"
                )
            ids, scores = rec.recommend([u], k=k, exclude_seen=not include_seen, index=ann)
            _print_top(rec, f"user {u}", ids[0], scores[0], k, include_seen, index)
    except (ArtifactError, ValueError, TypeError) as e:
        _fail(str(e))


@app.command("index")
def build_index_cmd(
    artifact: Annotated[Path, typer.Argument(help="artifact folder of a factorised model (mf, gmf, ...)")],
    backend: Annotated[
        str,
        typer.Option(help="exact | hnsw | ivf | ivfpq | milvus (Milvus server or milvus-lite: -p uri=...)"),
    ] = "hnsw",
    param: Annotated[
        list[str], typer.Option("--param", "-p", help="backend parameter key=value, e.g. -p ef_search=128")
    ] = [],
    threads: Annotated[int | None, typer.Option(help="threads for building (default: FAISS's)")] = None,
) -> None:
    """Build an ANN index over a saved model's item vectors, saved in <artifact>/index/<backend>.

    The index returns the model's own score (an item bias becomes one extra dimension), so
    `recfunnel recommend --index BACKEND` ranks as the model does, up to the ANN's recall."""
    import time

    from recfunnel.artifacts import ArtifactError
    from recfunnel.index import index_dir, index_from_model
    from recfunnel.recommender import Recommender

    try:
        rec = Recommender.load(artifact)
        t0 = time.perf_counter()
        idx = index_from_model(rec.model_, backend, threads=threads, **_parse_params(param))
        seconds = time.perf_counter() - t0
        path = index_dir(artifact, backend)
        idx.save(path)
    except (ArtifactError, ValueError, TypeError) as e:
        _fail(str(e))
    console.print(f"{backend} index over {rec.model_.n_items:,} items built in {seconds:.2f}s -> {path}")


def _print_top(rec, who: str, ids: list[str], scores, k: int, include_seen: bool, index: str | None) -> None:
    how = f"via {index} index" if index else "exact"
    seen = "seen items allowed" if include_seen else "seen excluded"
    _item_table(rec, f"top-{k} for {who} ({seen}, {how})", ids, scores)


def _item_table(rec, title: str, ids: list[str], scores) -> None:
    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    for n, (i, t, s) in enumerate(zip(ids, rec.titles(ids), scores, strict=False), 1):
        table.add_row(str(n), i, t, f"{s:.4f}")
    console.print(table)


@app.command()
def similar(
    artifact: Annotated[Path, typer.Argument(help="artifact folder of a factorised model (mf, gmf) or EASE")],
    item: Annotated[list[str], typer.Option("--item", "-i", help="raw item id (repeatable)")],
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
) -> None:
    """Items most similar to an item (cosine of item vectors), titles shown."""
    from recfunnel.artifacts import ArtifactError
    from recfunnel.recommender import Recommender

    try:
        rec = Recommender.load(artifact)
        ids, scores = rec.similar_items(item, k)
    except (ArtifactError, KeyError, TypeError) as e:
        _fail(str(e))
    for q, row, srow in zip(item, ids, scores, strict=True):
        _item_table(rec, f"top-{k} like {q} ({rec.titles([q])[0]}), cosine", row, srow)


@app.command()
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
    from recfunnel.data.errors import DataError
    from recfunnel.data.readers import load_dataset
    from recfunnel.data.splits import temporal
    from recfunnel.explain import default_cache_dir, explain_pair, format_explanation, train_explainers

    try:
        ds = load_dataset("ml-100k", data_root)
        if user not in ds.users or item not in ds.items:
            _fail(
                f"unknown {'user ' + repr(user) if user not in ds.users else 'item ' + repr(item)} in ml-100k"
            )
        split = temporal(ds)
        cache_dir = (cache or default_cache_dir()) if use_cache else None
        console.print(
            "AutoInt and FM on the temporal split's train part "
            + (f"(trained once, kept in {cache_dir}) ..." if cache_dir else "(training) ...")
        )
        schema, autoint, fm = train_explainers(ds, split, seed=seed, epochs=epochs, cache_dir=cache_dir)
        e = explain_pair(ds, schema, user, item, autoint=autoint, fm=fm, timestamp=timestamp, top=top)
    except (DataError, FileNotFoundError, KeyError) as e:
        _fail(str(e))
    console.print(format_explanation(e), markup=False)


@app.command()
def models() -> None:
    """List model families with their hyper-parameters and defaults."""
    from recfunnel.models import MODELS

    for name, cls in sorted(MODELS.items()):
        console.print(
            f"[bold]{name}[/bold] ({'trained' if cls.trainable else 'closed form'}; "
            f"objective {cls.objective if cls.trainable else '-'}): {cls.__doc__.splitlines()[0]}"
        )
        for field, info in cls.Config.model_fields.items():
            console.print(f"    {field} = {info.default!r}  {info.description or ''}")


@app.command()
def datasets(data_root: DataRootOpt = None) -> None:
    """List the named datasets and whether they are present under the data root."""
    from recfunnel.data.readers import DATASETS
    from recfunnel.settings import data_root as root_of

    root = root_of(data_root)
    console.print(f"data root: {root}")
    for name in DATASETS:
        console.print(f"  {name:<20} {'present' if (root / name).exists() else 'absent'}")


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="suite name, e.g. ncf-ml100k")],
    quick: Annotated[bool, typer.Option(help="reduced CI-sized run")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write result rows here")] = None,
    data_root: DataRootOpt = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    models: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="run only this model of the suite (repeatable; ann: a backend); with --json, the "
            "file's rows of other models are kept and those of the models run are replaced",
        ),
    ] = [],
    seed: Annotated[
        list[int],
        typer.Option(
            "--seed", help="training seed (repeatable; retrieval-ml100k: mean +- std rows over them)"
        ),
    ] = [],
) -> None:
    """Run a named benchmark suite; rows {suite, model, dataset, protocol, split, seed, metrics,
    train_seconds, eval_seconds, peak_rss_mb, params}."""
    from recfunnel.bench.suites import SUITES, merged_with_file, run_suite, write_json

    if suite not in SUITES:
        _fail(f"unknown suite {suite!r}; valid: {', '.join(sorted(SUITES))}")
    try:
        rows = run_suite(
            suite,
            quick=quick,
            data_root=data_root,
            progress=progress,
            models=models or None,
            seeds=seed or None,
        )
    except ValueError as e:
        _fail(str(e))
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


@app.command("bench-report")
def bench_report(
    results: Annotated[list[Path], typer.Argument(help="JSON files written by `recfunnel bench --json`")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write markdown here (default stdout)")
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(help="also draw figures (ANN recall vs speed, validation curves) into this folder"),
    ] = None,
    preamble: Annotated[
        Path | None, typer.Option(help="markdown file put before the sections (a title, how to read them)")
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


if __name__ == "__main__":
    app()
