"""`recfunnel train`: flags (or a TOML config) -> RunConfig -> train, evaluate, save an artifact."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from recfunnel.atomic import atomic_write_text
from recfunnel.cli.common import (
    ConfigOpt,
    DataRootOpt,
    console,
    fail,
    one_line,
    parse_params,
    print_top,
    results_table,
)
from recfunnel.data.schema import ColumnMapping
from recfunnel.models import MODELS
from recfunnel.run import DataConfig, ModelSection, RunConfig, SplitConfig, TrainConfig
from recfunnel.run.config import deep_merge
from recfunnel.train import distributed

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = get_args(TrainConfig.model_fields["precision"].annotation)
ENCODINGS = get_args(ColumnMapping.model_fields["encoding"].annotation)
SPLITS = get_args(SplitConfig.model_fields["method"].annotation)
DEVICE_FORM = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _default(section: type, field: str) -> Any:
    return section.model_fields[field].default


def _train_default(field: str) -> str:
    return f"the model family's tuned setting where it has one, else {_default(TrainConfig, field)}"


def run_config(config: Path | None, over: dict[str, Any]) -> RunConfig:
    """The run's config: the model family's tuned defaults
    (:func:`recfunnel.run.config.family_defaults`), under the TOML file's values (when given),
    under the flags in `over`."""
    raw: dict[str, Any] = {}
    if config:
        with open(config, "rb") as f:
            raw = tomllib.load(f)
    return RunConfig.tuned(deep_merge(raw, over))


MODEL_HELP = (
    f"model family (default {_default(ModelSection, 'name')}): {', '.join(sorted(MODELS))}; "
    "hyper-parameters and defaults: `recfunnel models`"
)


def train(
    config: ConfigOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="named dataset (ml-100k, ml-1m, amazon-video-seq, diginetica-sample) or a folder/file "
            f"path (default {_default(DataConfig, 'dataset')})"
        ),
    ] = None,
    data_root: DataRootOpt = None,
    table: Annotated[
        Path | None,
        typer.Option(
            help="your own CSV/TSV/Parquet file, with --user-col and --item-col (default: use --dataset)"
        ),
    ] = None,
    user_col: Annotated[
        str | None, typer.Option(help="user column: a name, or a 0-based position with --no-header")
    ] = None,
    item_col: Annotated[str | None, typer.Option(help="item column")] = None,
    rating_col: Annotated[str | None, typer.Option(help="rating column (default: none)")] = None,
    timestamp_col: Annotated[str | None, typer.Option(help="timestamp column (default: none)")] = None,
    weight_col: Annotated[str | None, typer.Option(help="weight / play-count column (default: none)")] = None,
    sep: Annotated[str | None, typer.Option(help="field separator (default by suffix: ',' or tab)")] = None,
    header: Annotated[
        bool, typer.Option("--header/--no-header", help="first line holds column names")
    ] = True,
    encoding: Annotated[
        str | None,
        typer.Option(
            help=f"text encoding of --table: {' or '.join(ENCODINGS)} "
            f"(default {_default(ColumnMapping, 'encoding')})"
        ),
    ] = None,
    timestamp_format: Annotated[
        str | None,
        typer.Option(
            help="strptime format of the timestamp column, e.g. '%Y-%m-%d %H:%M:%S' (zone-less times "
            "are UTC; default: integer unix seconds)"
        ),
    ] = None,
    rating_threshold: Annotated[
        float | None, typer.Option(help="keep ratings >= this as positives (default: keep all)")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help=f"{' | '.join(SPLITS)} (default {_default(SplitConfig, 'method')})"),
    ] = None,
    eval_negatives: Annotated[
        int | None,
        typer.Option(
            help="fixed negatives per held-out user for the sampled protocol; 0: none (default "
            f"{_default(SplitConfig, 'eval_negatives')})"
        ),
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="reuse a saved split (.npz) (default: make one)")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help=f"maximum epochs (default: {_train_default('epochs')})")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"mini-batch size (default: {_train_default('batch_size')})")
    ] = None,
    lr: Annotated[float | None, typer.Option(help=f"learning rate (default: {_train_default('lr')})")] = None,
    seed: Annotated[int | None, typer.Option(help=f"seed (default {_default(TrainConfig, 'seed')})")] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="where the model trains: auto (cuda when torch sees a GPU, else cpu), cpu, cuda or "
            "cuda:N (default: the config's train.device, else auto)"
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help=f"{' | '.join(PRECISIONS)}: bf16 runs forward and loss under bf16 autocast, weights stay "
            "fp32 (default: the config's train.precision, else fp32)"
        ),
    ] = None,
    param: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            help="model hyper-parameter key=value (repeatable), e.g. -p factors=16 (default: the "
            "family's, see `recfunnel models`)",
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
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write results as JSON (default: no)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="training processes on this machine (data-parallel, torch DDP: gloo on CPU, nccl on "
            "CUDA); >1 launches them with torch's launcher (default 1: this process)",
        ),
    ] = 1,
    dist_timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds a process waits for a peer before failing the run (default "
            f"${distributed.TIMEOUT_ENV} or {distributed.DEFAULT_TIMEOUT_S:g})"
        ),
    ] = None,
    sparse_allreduce: Annotated[
        str | None,
        typer.Option(
            help="how sparse ID-table gradients travel between processes: "
            f"{' | '.join(distributed.SPARSE_MODES)} (default ${distributed.SPARSE_ENV} or rows)"
        ),
    ] = None,
) -> None:
    """Train one model, evaluate it on the test part (full ranking and sampled), save an artifact,
    and print a results table plus a top-10 for one user."""
    from recfunnel.models.base import model_class
    from recfunnel.recommender import Recommender
    from recfunnel.run.fit import data_notes, fit, load_data, load_split

    if encoding is not None and encoding not in ENCODINGS:
        fail(f"--encoding {encoding!r} is not supported; valid: {', '.join(ENCODINGS)}")
    if device is not None and not DEVICE_FORM.match(device):
        fail(f"--device {device!r} is not a device; valid: {', '.join(DEVICES)}")
    if precision is not None and precision not in PRECISIONS:
        fail(f"--precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if sparse_allreduce is not None and sparse_allreduce not in distributed.SPARSE_MODES:
        fail(f"--sparse-allreduce {sparse_allreduce!r}; valid: {', '.join(distributed.SPARSE_MODES)}")
    if dist_timeout is not None and not dist_timeout > 0:
        fail(f"--dist-timeout {dist_timeout}: valid: a positive number of seconds")
    over: dict[str, Any] = {"data": {}, "split": {}, "model": {}, "train": {}}
    if dataset:
        over["data"]["dataset"] = dataset
    if data_root:
        over["data"]["data_root"] = str(data_root)
    if table:
        if not (user_col and item_col):
            fail("--table needs --user-col and --item-col")

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
    if eval_negatives is not None:
        over["split"]["eval_negatives"] = eval_negatives
    if model:
        over["model"]["name"] = model
    if param:
        over["model"]["params"] = parse_params(param)
    if pretrain:
        over["model"]["pretrain"] = True
    for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}.items():
        if v is not None:
            over["train"][k] = v
    over["train"]["progress"] = progress
    if device is not None:
        over["train"]["device"] = device
    if precision is not None:
        over["train"]["precision"] = precision
    try:
        cfg = run_config(config, over)
        cfg = _with_text_format(cfg, encoding, timestamp_format)
        model_class(cfg.model.name).Config(**cfg.model.params)  # before any data is read
    except (ValueError, OSError) as e:
        fail(f"bad configuration: {one_line(e)}")
    device = _device(cfg.train.device)  # an absent GPU is refused before any data is read
    if nproc > 1:
        out = out or Path("artifacts") / f"{cfg.model.name}-{cfg.data.dataset or 'table'}"
        _launch(cfg, nproc, out, resume, device, dist_timeout, sparse_allreduce)
        _show(out, Path(f"{out}.ckpt") / "results.json", show_user, json_out)
        return
    worker = distributed.launched()  # one process of `torchrun -m recfunnel.cli train ...`
    if worker and os.environ.get("RANK", "0") != "0":
        console.quiet = True
    ds = load_data(cfg.data)
    sp = load_split(cfg.split, ds)
    console.print(
        f"[bold]{ds.name}[/bold]: {ds.n_users:,} users, {ds.n_items:,} items, "
        f"{len(ds.interactions):,} interactions; split {sp.describe()} "
        f"({len(sp.train):,}/{len(sp.valid):,}/{len(sp.test):,})"
    )
    for note in data_notes(cfg, ds):
        console.print(f"note: {note}")
    name = cfg.model.name
    out = out or Path("artifacts") / f"{name}-{ds.name}"
    with distributed.session(device, dist_timeout) if worker else contextlib.nullcontext():
        res = fit(cfg, ds, sp, checkpoint_dir=Path(f"{out}.ckpt"), resume=resume, out=out)
    if console.quiet:
        return
    console.print(results_table(res.results, f"{name} on {ds.name} (test)"))
    report = res.report
    if report is not None and report.history:
        console.print(
            f"trained {len(report.history)} epochs in {report.seconds:.1f}s "
            f"(best epoch {report.best_epoch + 1}), {report.samples_per_second:,.0f} samples/s, "
            f"{100 * report.pipeline_share:.1f}% of epoch time outside forward/backward"
        )
    console.print(f"artifact written to {res.path}")
    rec = Recommender(name, cfg.model.params, cfg.train, run=cfg)._adopt(res)
    user = show_user or ds.users.ids[0]
    ids, scores = rec.recommend([user], k=10)
    print_top(rec, f"user {user}", ids[0], scores[0], 10, False, None)
    if json_out:
        json_out.write_text(json.dumps([r.to_dict() for r in res.results], indent=1))


def _launch(
    cfg: RunConfig,
    nproc: int,
    out: Path,
    resume: bool,
    device: str,
    timeout: float | None,
    sparse: str | None,
) -> None:
    """Train `cfg` in `nproc` local processes started by torch's launcher (``python -m
    torch.distributed.run ... -m recfunnel.run``), with the resolved config written beside the
    checkpoints; exit 1 naming the status when any process fails (the launcher stops the others)."""
    ckpt = Path(f"{out}.ckpt")
    ckpt.mkdir(parents=True, exist_ok=True)
    config, results = ckpt / "run.json", ckpt / "results.json"
    atomic_write_text(config, cfg.model_dump_json(indent=1))
    results.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if timeout is not None:
        env[distributed.TIMEOUT_ENV] = str(timeout)
    if sparse is not None:
        env[distributed.SPARSE_ENV] = sparse
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
        "--max-restarts", "0", "-m", "recfunnel.run", "--config", str(config), "--out", str(out),
        "--checkpoint-dir", str(ckpt), "--json", str(results), "--device", device,
        *(["--resume"] if resume else []),
    ]  # fmt: skip
    backend = "nccl" if device == "cuda" else "gloo"
    console.print(f"training in {nproc} processes (torch.distributed.run, {backend})")
    status = subprocess.run(cmd, env=env, check=False).returncode
    if status != 0 or not results.exists():
        fail(
            f"distributed training failed (the launcher exited with status {status}); the messages "
            f"of the failed process are above. Continue from the last checkpoint in {ckpt} with --resume "
            "(any --nproc)",
            code=1,
        )


def _show(out: Path, results: Path, show_user: str | None, json_out: Path | None) -> None:
    """What `train` prints after a distributed run: rank 0's results and report, and a top-10."""
    from recfunnel.eval.result import Result
    from recfunnel.recommender import Recommender

    body = json.loads(results.read_text())
    rows = [Result(**{**r, "ks": tuple(r["ks"])}) for r in body["results"]]
    rec = Recommender.load(out)
    console.print(results_table(rows, f"{rec.family} (test)"))
    report = body.get("report")
    if report and report["epochs"]:
        console.print(
            f"trained {report['epochs']} epochs in {report['seconds']:.1f}s (best epoch "
            f"{report['best_epoch'] + 1}), {report['samples_per_second']:,.0f} samples/s"
        )
    console.print(f"artifact written to {body['path']}")
    user = show_user or rec.users_.ids[0]
    ids, scores = rec.recommend([user], k=10)
    print_top(rec, f"user {user}", ids[0], scores[0], 10, False, None)
    if json_out:
        json_out.write_text(json.dumps(body["results"], indent=1))


def _device(choice: str) -> str:
    """The run's device setting resolved to the kind the process group needs (cpu or cuda); a
    device that is not here exits 2 naming the valid ones."""
    from recfunnel.nn.device import DeviceError, resolve_device

    try:
        return resolve_device(choice).type
    except DeviceError as e:
        fail(f"--device: {one_line(e)}")


def _with_text_format(cfg: RunConfig, encoding: str | None, timestamp_format: str | None) -> RunConfig:
    """--encoding / --timestamp-format applied to the run's own table (from --table or the TOML)."""
    given = {k: v for k, v in {"encoding": encoding, "timestamp_format": timestamp_format}.items() if v}
    if not given:
        return cfg
    if cfg.data.table is None:
        flags = " and ".join("--" + k.replace("_", "-") for k in given)
        verb = "describe" if len(given) > 1 else "describes"
        fail(f"{flags} {verb} your own file: use with --table (or [data.table] in --config)")
    return cfg.updated({"data": {"table": given}})
