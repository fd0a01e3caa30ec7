"""Benchmark suite ``ctr-ml100k``: the CTR rankers and a LightGBM baseline on MovieLens-100K.

Task: label = rating >= 4, the MovieLens fields (:func:`recfunnel.run.features.ctr_fields`), global
temporal split 80/10/10, early stopping on validation AUC (LightGBM: its own early stopping on
the same validation AUC), test AUC / logloss / GAUC, 3 seeds; every ranker is fitted by
:func:`recfunnel.run.fit` with the settings of :data:`recfunnel.run.presets.CTR_PRESETS`
(``train_seconds``: the whole fit, fitting the fields and encoding the rows included). One row per
(model, seed) following :data:`recfunnel.bench.rows.ROW_CONTRACT`, then one aggregate row per
model (mean and standard deviation over seeds, ``"aggregate": true``, ``"seed": null``).

The throughput comparison trains DeepFM at batch 4096 for the same epochs through the Trainer and
through the plain PyTorch loop written below (:func:`plain_loop`), alternating which goes first,
and reports median wall and CPU times, samples per second and the Trainer's overhead in percent.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.bench.rows import fit_figures, machine_info, peak_rss_mb, per_user_keys, utc_now
from recfunnel.data.fields import CTRPart, FieldSchema, ctr_parts
from recfunnel.models.ctr.base import CTRModel, build_ctr
from recfunnel.run import (
    DataConfig,
    ModelSection,
    RunConfig,
    SplitConfig,
    evaluate_run,
    fit,
    load_data,
    load_split,
)
from recfunnel.run.features import ctr_fields
from recfunnel.run.presets import CTR_PRESETS
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.trainer import TrainConfig, Trainer, build_optimizers, seed_everything

if TYPE_CHECKING:
    from recfunnel.data.dataset import Dataset
    from recfunnel.data.splits import Split
    from recfunnel.run import FitResult

__all__ = [
    "CTREntry",
    "aggregate",
    "ctr_config",
    "ctr_entries",
    "fit_ctr",
    "plain_loop",
    "run_ctr_suite",
    "throughput",
]

SUITE = "ctr-ml100k"
DATASET = "ml-100k"
SEEDS = (0, 1, 2)
METRICS = ("auc", "logloss", "gauc")
DEEP = ("DeepFM", "AutoInt", "DCNv2")  # the models the issue asks to beat LR by > 2 std
#: label -> family of the line-up (settings: :data:`recfunnel.run.presets.CTR_PRESETS`)
LINE_UP = {"LR": "lr", "FM": "fm", "WideDeep": "widedeep", "DeepFM": "deepfm", "AutoInt": "autoint"}
LINE_UP |= {"DCNv2": "dcnv2", "DLRM": "dlrm", "LightGBM": "lightgbm"}
_SPLIT = SplitConfig(method="temporal", eval_negatives=0)


@dataclass(frozen=True)
class CTREntry:
    """One model of the suite, fully configured (copied into the rows' `config`)."""

    label: str
    family: str  # a registered CTR family, or "lightgbm"
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields


def ctr_entries(quick: bool = False) -> list[CTREntry]:
    """The line-up with the tuned settings of :data:`recfunnel.run.presets.CTR_PRESETS`; `quick`:
    smaller models, 1 epoch (LightGBM: 20 rounds)."""
    entries = [CTREntry(label, fam, *map(dict, CTR_PRESETS[fam])) for label, fam in LINE_UP.items()]
    if quick:
        small = {"widedeep": {"hidden": (64,)}, "deepfm": {"hidden": (64,)}, "dcnv2": {"hidden": (64,)}}
        small |= {"autoint": {"layers": 1}, "dlrm": {"bottom": (16,), "top": (32,)}}
        entries = [
            replace(
                e,
                params=dict(e.params, **small.get(e.family, {})),
                train=dict(e.train, epochs=1, patience=0) if e.train else {},
            )
            if e.family != "lightgbm"
            else replace(e, params={"max_rounds": 20})
            for e in entries
        ]
    return entries


# --------------------------------------------------------------------------------------------------
# data and fitting


@functools.lru_cache(maxsize=1)
def ctr_data(data_root: str | None = None, quick: bool = False) -> tuple[Dataset, Split]:
    """(dataset, split) of the suite: global temporal 80/10/10. `quick`: the first 20% of events
    only (the same temporal 80/10/10 inside it), so CI runs stay small."""
    ds = load_data(DataConfig(dataset=DATASET, data_root=data_root))
    if quick:
        ints = ds.interactions
        keep = np.sort(np.lexsort((ints.order, ints.timestamp))[: int(len(ints) * 0.2)])
        ds = dataclasses.replace(ds, name=f"{ds.name}-first20pct", interactions=ints.take(keep))
    return ds, load_split(_SPLIT, ds)


def ctr_config(family: str, params: dict[str, Any], train: TrainConfig) -> RunConfig:
    """The :class:`~recfunnel.run.RunConfig` of one ranker of the suite (label = rating >= 4, the
    MovieLens fields, temporal split without evaluation negatives)."""
    model = ModelSection(name=family, params=params)
    return RunConfig(data=DataConfig(dataset=DATASET), split=_SPLIT, model=model, train=train)


def fit_ctr(
    family: str, params: dict[str, Any], dataset: Dataset, split: Split, train: TrainConfig
) -> FitResult:
    """Fit `family` (a CTR ranker or "lightgbm") on the split's train part through
    :func:`recfunnel.run.fit`: early stopping on the valid part's AUC, the model ends with its
    best-epoch weights; not evaluated (:func:`recfunnel.run.evaluate_run` does that)."""
    return fit(ctr_config(family, params, train), dataset, split, evaluate=False)


def encoded_parts(dataset: Dataset, split: Split) -> tuple[FieldSchema, dict[str, CTRPart]]:
    """The fitted fields and encoded train / valid / test rows a run of the suite trains on (the
    features and ctr sections of :func:`ctr_config`, as :func:`recfunnel.run.fit` encodes them),
    for the throughput comparison, which times the Trainer and a plain loop on the same rows."""
    cfg = ctr_config("deepfm", {}, TrainConfig())
    specs = ctr_fields(dataset, cfg.features, cfg.ctr)
    return ctr_parts(dataset, split, specs, threshold=cfg.ctr.threshold)


def _run_seed(entry: CTREntry, seed: int, data_root: str | None, quick: bool, progress: bool) -> dict:
    ds, split = ctr_data(data_root, quick)
    tcfg = TrainConfig(**dict(entry.train, seed=seed, progress=progress))
    res = fit_ctr(entry.family, entry.params, ds, split, tcfg)
    fig = fit_figures(res)
    parts, schema = res.parts, res.schema
    assert parts is not None and schema is not None  # a field family
    if entry.family == "lightgbm":
        model = res.model
        rounds = model.best_iteration_ or model.config.max_rounds
        fig.update(
            epochs_run=len(model.history_.get("valid", {}).get("auc", [])),
            best_epoch=rounds - 1,
            stopped_early=bool(model.best_iteration_),
            samples_per_second=len(parts["train"]) * rounds / res.seconds,
            valid_history=[],
        )
    (result,) = evaluate_run(res, name=entry.label)
    return {
        "suite": SUITE,
        "model": entry.label,
        "dataset": ds.name,
        "protocol": result.protocol,
        "split": result.split,
        "part": result.part,
        "seed": seed,
        "metrics": dict(result.metrics),
        "n_eval_users": result.n_users,
        "eval_seconds": result.seconds,
        "peak_rss_mb": peak_rss_mb(),
        **fig,
        **per_user_keys(result),
        "data": {
            "n_train": len(parts["train"]),
            "n_valid": len(parts["valid"]),
            "n_test": len(parts["test"]),
            "positive_rate_test": float(parts["test"].labels.mean()),
            "fields": list(schema.names),
        },
        "quick": quick,
        "machine": machine_info(),
        "date": utc_now(),
    }


def _run_model(
    entry: CTREntry, seeds: Sequence[int], data_root: str | None, quick: bool, progress: bool, threads: int
) -> list[dict]:
    torch.set_num_threads(threads)
    return [_run_seed(entry, s, data_root, quick, progress) for s in seeds]


# --------------------------------------------------------------------------------------------------
# aggregation and the claims of the issue


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value)."""
    m = statistics.fmean(values)
    return m, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """One row per model: mean and standard deviation (ddof=1) over its seed rows of the test
    metrics, train seconds and samples per second; the claims of the issue attached to the rows
    they concern ("vs_lr" on the deep models, "vs_lightgbm" on the best deep model)."""
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        if not r.get("aggregate"):
            by_model.setdefault(r["model"], []).append(r)
    out = []
    for model, rs in by_model.items():
        metrics, stds = {}, {}
        for k in METRICS:
            metrics[k], stds[k] = _mean_std([r["metrics"][k] for r in rs])
        first = rs[0]
        out.append(
            {
                "suite": first["suite"],
                "model": model,
                "family": first["family"],
                "dataset": first["dataset"],
                "protocol": first["protocol"],
                "split": first["split"],
                "part": first["part"],
                "seed": None,
                "seeds": [r["seed"] for r in rs],
                "aggregate": True,
                "metrics": metrics,
                "metrics_std": stds,
                "train_seconds": _mean_std([r["train_seconds"] for r in rs])[0],
                "train_seconds_std": _mean_std([r["train_seconds"] for r in rs])[1],
                "eval_seconds": _mean_std([r["eval_seconds"] for r in rs])[0],
                "samples_per_second": _mean_std([r["samples_per_second"] for r in rs])[0],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "params": first["params"],
                "config": first["config"],
                "epochs_run": [r["epochs_run"] for r in rs],
                "best_epoch": [r["best_epoch"] for r in rs],
                "pipeline_share": first["pipeline_share"],
                "quick": first["quick"],
                "machine": first["machine"],
                "date": first["date"],
            }
        )
    _attach_claims(out)
    return out


def _diff(a: dict, b: dict) -> dict:
    """a - b on test AUC, with each spread and that of the difference (independent runs)."""
    d = a["metrics"]["auc"] - b["metrics"]["auc"]
    sa, sb = a["metrics_std"]["auc"], b["metrics_std"]["auc"]
    spread = math.hypot(sa, sb)
    return {
        "against": b["model"],
        "auc_diff": d,
        "auc_std": sa,
        "against_auc_std": sb,
        "diff_std": spread,
        "diff_over_std": d / spread if spread else None,
    }


def _attach_claims(agg: list[dict]) -> None:
    by = {r["model"]: r for r in agg}
    lr = by.get("LR")
    if lr is not None and len(lr["seeds"]) > 1:
        for name in DEEP:
            if name in by:
                c = _diff(by[name], lr)
                c["beats_by_2_std"] = bool(c["auc_diff"] > 2 * c["diff_std"])
                by[name]["vs_lr"] = c
    gbdt = by.get("LightGBM")
    deep = [r for r in agg if r["family"] not in ("lr", "fm", "lightgbm")]
    if gbdt is not None and deep and len(gbdt["seeds"]) > 1:
        best = max(deep, key=lambda r: r["metrics"]["auc"])
        c = _diff(best, gbdt)
        c["better"] = bool(c["auc_diff"] > 0)
        c["not_significantly_worse"] = bool(c["auc_diff"] >= -2 * c["diff_std"])
        best["vs_lightgbm"] = c


# --------------------------------------------------------------------------------------------------
# throughput: Trainer vs a plain PyTorch loop


def plain_loop(model: CTRModel, part: CTRPart, train: TrainConfig) -> float:
    """The loop a user would write by hand, doing what the Trainer does for `model` on `part`
    (same optimisers, same per-(seed, epoch) order, same batches, no validation); wall seconds."""
    t0 = time.perf_counter()
    optimizers = build_optimizers(model, train)
    n = len(part)
    for epoch in range(train.epochs):
        model.train()
        perm = torch.from_numpy(np.random.default_rng([train.seed, epoch]).permutation(n))
        fields, labels = part.fields.take(perm), part.labels[perm]
        for start in range(0, n, train.batch_size):
            s = slice(start, start + train.batch_size)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model.score_fields(fields.take(s)), labels[s])
            loss.backward()
            for opt in optimizers:
                opt.step()
    model.eval()
    return time.perf_counter() - t0


def throughput(
    schema: FieldSchema,
    part: CTRPart,
    family: str = "deepfm",
    batch_size: int = 4096,
    epochs: int = 2,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """`epochs` epochs of `family` at `batch_size` through the Trainer (no validation, no
    checkpoints, no progress bar) and through :func:`plain_loop`, each from the same fresh
    initialisation, alternating which runs first, `repeats` times.

    Both wall time and process CPU time are recorded. On a shared machine wall time swings with
    the other processes' load (tens of percent between identical runs), while the CPU time of
    this process (torch intra-op threads included) counts only the work done, so the overhead
    is reported on CPU time (median over repeats), with the wall-time figures beside it."""
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=1e-3, patience=0, monitor="auc", seed=seed, progress=False
    )

    def fresh() -> CTRModel:
        seed_everything(seed)
        return build_ctr(family, schema)

    def timed(run: Callable[[CTRModel], Any]) -> tuple[float, float]:
        model = fresh()
        w0, c0 = time.perf_counter(), time.process_time()
        run(model)
        return time.perf_counter() - w0, time.process_time() - c0

    runs = {
        "trainer": lambda m: Trainer(cfg).fit(m, LabelledBCE(part)),
        "plain": lambda m: plain_loop(m, part, cfg),
    }
    timed(runs["plain"])  # warm-up (allocator, kernels), not counted
    wall: dict[str, list[float]] = {"trainer": [], "plain": []}
    cpu: dict[str, list[float]] = {"trainer": [], "plain": []}
    for r in range(repeats):
        for name in ("trainer", "plain") if r % 2 == 0 else ("plain", "trainer"):
            w, c = timed(runs[name])
            wall[name].append(w)
            cpu[name].append(c)
    samples = len(part) * epochs
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "model": family,
        "batch_size": batch_size,
        "epochs": epochs,
        "repeats": repeats,
        "samples": samples,
        "trainer_seconds": wall["trainer"],
        "plain_seconds": wall["plain"],
        "trainer_cpu_seconds": cpu["trainer"],
        "plain_cpu_seconds": cpu["plain"],
        "trainer_median_seconds": med["trainer"],
        "plain_median_seconds": med["plain"],
        "trainer_median_cpu_seconds": cmed["trainer"],
        "plain_median_cpu_seconds": cmed["plain"],
        "trainer_samples_per_second": samples / med["trainer"],
        "plain_samples_per_second": samples / med["plain"],
        "trainer_samples_per_cpu_second": samples / cmed["trainer"],
        "plain_samples_per_cpu_second": samples / cmed["plain"],
        "overhead_percent": 100.0 * (cmed["trainer"] - cmed["plain"]) / cmed["plain"],
        "overhead_percent_wall": 100.0 * (med["trainer"] - med["plain"]) / med["plain"],
        "torch_threads": torch.get_num_threads(),
        "note": "whole fit for both (optimiser set-up, per-epoch permutation and batching included); "
        "medians over repeats, alternating order; overhead_percent on process CPU time, "
        "overhead_percent_wall on wall time (noisy on a shared machine)",
    }


# --------------------------------------------------------------------------------------------------
# the suite


def _in_child(fn: Callable[..., Any], *args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def _throughput_job(data_root: str | None, quick: bool, threads: int, batch_size: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    schema, parts = encoded_parts(*ctr_data(data_root, quick))
    return throughput(
        schema, parts["train"], batch_size=batch_size, epochs=1 if quick else 2, repeats=repeats
    )


def run_ctr_suite(
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    *,
    seeds: Sequence[int] = SEEDS,
    threads: int = 1,
    throughput_repeats: int | None = None,
    with_throughput: bool = True,
) -> list[dict]:
    """Run the suite: per-seed rows for every model, aggregate rows, and the throughput row.

    quick: a CI-sized run (the first 20% of events, tiny models, 1 epoch, 1 seed unless `seeds`
    is given). models: run only these labels. isolate: each model in a fresh spawned process
    (its own peak RSS; default for full runs). threads: torch intra-op threads (1: the models
    are small and the benchmark machine is shared; more threads only contend)."""
    root = None if data_root is None else str(data_root)
    isolate = (not quick) if isolate is None else isolate
    seeds = tuple(seeds) if not quick or seeds != SEEDS else (0,)
    entries = ctr_entries(quick)
    if models is not None:
        unknown = set(models) - {e.label for e in entries}
        if unknown:
            raise ValueError(
                f"unknown model(s) {sorted(unknown)} in suite {SUITE}; valid: "
                + ", ".join(e.label for e in entries)
            )
        entries = [e for e in entries if e.label in set(models)]
    rows: list[dict] = []
    t_suite = time.perf_counter()
    for n, e in enumerate(entries, 1):
        if progress:
            print(f"[{SUITE}] {n}/{len(entries)} {e.label} (seeds {list(seeds)}) ...", flush=True)
        args = (e, seeds, root, quick, False, threads)
        got = _in_child(_run_model, *args) if isolate else _run_model(*args)
        for r in got:
            r["peak_rss_scope"] = "model (fresh subprocess)" if isolate else "process so far"
        rows.extend(got)
        if progress:
            aucs = ", ".join(f"{r['metrics']['auc']:.4f}" for r in got)
            print(
                f"[{SUITE}] {e.label}: test auc {aucs}; train {sum(r['train_seconds'] for r in got):.0f}s "
                f"(suite {time.perf_counter() - t_suite:.0f}s)",
                flush=True,
            )
    rows.extend(aggregate(rows))
    if with_throughput and (models is None or "DeepFM" in models):
        if progress:
            print(f"[{SUITE}] throughput: DeepFM at batch 4096, Trainer vs plain loop ...", flush=True)
        repeats = throughput_repeats or (1 if quick else 5)
        args2 = (root, quick, threads, 4096, repeats)
        tp = _in_child(_throughput_job, *args2) if isolate else _throughput_job(*args2)
        rows.append(_throughput_row(tp, rows, quick))
        if progress:
            print(
                f"[{SUITE}] DeepFM batch 4096: Trainer {tp['trainer_samples_per_second']:,.0f} samples/s, "
                f"plain loop {tp['plain_samples_per_second']:,.0f} samples/s (wall); overhead "
                f"{tp['overhead_percent']:+.1f}% CPU time, {tp['overhead_percent_wall']:+.1f}% wall",
                flush=True,
            )
    return rows


def _throughput_row(tp: dict, rows: list[dict], quick: bool) -> dict:
    ref = next((r for r in rows if r["model"] == "DeepFM"), rows[0] if rows else {})
    return {
        "suite": SUITE,
        "model": "DeepFM-throughput",
        "family": "deepfm",
        "dataset": ref.get("dataset", DATASET),
        "protocol": "throughput",
        "split": ref.get("split", "temporal"),
        "seed": 0,
        "metrics": {},
        "throughput": tp,
        "train_seconds": tp["trainer_median_seconds"],
        "eval_seconds": 0.0,
        "peak_rss_mb": peak_rss_mb(),
        "params": ref.get("params"),
        "samples_per_second": tp["trainer_samples_per_second"],
        "quick": quick,
        "machine": machine_info(),
        "date": utc_now(),
    }
