"""Benchmark suites: fixed, named model line-ups whose configs, timings and metrics land in JSON rows.

A suite is a function ``(quick, data_root, progress, models, isolate, threads) -> list[dict]`` registered in
:data:`SUITES`; :func:`run_suite` dispatches by name. Every row is one (model, protocol) pair::

    {suite, model, dataset, protocol, split, seed, metrics: {"hr@5": ..., "ndcg@10": ...},
     train_seconds, eval_seconds, peak_rss_mb, params, ...extra keys (see `_rows`)}

Timing and memory rules (the same for every row):

* ``train_seconds``: wall time of the whole fit as run, per-epoch validation for early stopping
  included (for pre-trained NeuMF: GMF + MLP pre-training + fine-tuning). ``epoch_seconds`` is the
  pure training-loop time (sum of epochs, no validation); the implicit comparison uses that.
* ``eval_seconds``: the test evaluation of that row's protocol only.
* ``peak_rss_mb``: ``getrusage(RUSAGE_SELF).ru_maxrss`` read after the model ran. With
  ``isolate=True`` (the default for full runs) each model runs in a fresh Python subprocess, so it
  is that model's own peak (including the ~0.3-0.5 GB of the Python + torch runtime and the data);
  with ``isolate=False`` (the default for quick runs) it is the peak of the whole process so far.
  ``peak_rss_scope`` says which.
* threads: torch is pinned to ``threads`` intra-op threads (default 1) while a model runs, and
  implicit gets the same count; ``machine.torch_threads`` in each row is the value used.
* ``params``: trainable parameter count; for closed-form models (no parameters) the size of the
  learned float buffers instead (Popularity: the item counts, EASE: the item-item matrix).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.atomic import atomic_write_text

__all__ = [
    "ROW_CONTRACT",
    "SUITES",
    "Entry",
    "aggregate_seeds",
    "machine_info",
    "merged_with_file",
    "run_suite",
    "write_json",
]

#: keys every bench row carries (suites add their own beside them)
ROW_CONTRACT = frozenset(
    {
        "suite",
        "model",
        "dataset",
        "protocol",
        "split",
        "seed",
        "metrics",
        "train_seconds",
        "eval_seconds",
        "peak_rss_mb",
        "params",
        "config",
        "epochs_run",
        "best_epoch",
        "samples_per_second",
        "pipeline_share",
        "machine",
        "date",
        "quick",
    }
)

KS = (5, 10, 20)


@dataclass(frozen=True)
class Entry:
    """One model of a suite, fully configured (everything here is copied into the rows' `config`)."""

    label: str  # the rows' "model"
    family: str  # registry name, or "implicit-bpr"
    params: dict[str, Any] = field(default_factory=dict)
    objective: dict[str, Any] = field(default_factory=dict)  # e.g. {"name": "bpr", "params": {...}}
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    pretrain: bool = False  # NeuMF only: GMF + MLP pre-training (pipeline.pretrained_neumf)
    alpha: float = 0.5
    finetune: dict[str, Any] | None = None  # TrainConfig fields for NeuMF after pre-training


# --------------------------------------------------------------------------------------------------
# environment


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }
    try:
        import implicit

        info["implicit"] = implicit.__version__
    except ImportError:
        pass
    return info


def utc_now() -> str:
    """Now in UTC, ISO 8601, whole seconds (the rows' ``date``)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def param_count(model: torch.nn.Module) -> int:
    """Parameters of a model; for closed-form models (none) its learned float buffers."""
    n = sum(p.numel() for p in model.parameters())
    if n == 0:  # closed-form model: count the learned float buffers
        n = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return int(n)


@functools.lru_cache(maxsize=2)
def _data(dataset: str, data_root: str | None, eval_negatives: int, seed: int):
    from recfunnel.pipeline import DataConfig, SplitConfig, load_data, load_split

    ds = load_data(DataConfig(dataset=dataset, data_root=data_root))
    split = load_split(SplitConfig(method="leave_one_out", seed=seed, eval_negatives=eval_negatives), ds)
    return ds, split


# --------------------------------------------------------------------------------------------------
# running one entry (in this process or in a child interpreter)


@dataclass(frozen=True)
class _Job:
    suite: str
    entry: Entry
    dataset: str
    data_root: str | None
    eval_negatives: int
    split_seed: int
    quick: bool
    progress: bool
    isolated: bool
    threads: int | None


def _run_config(job: _Job, train: dict[str, Any]):
    from recfunnel.pipeline import (
        DataConfig,
        EvalSection,
        ModelSection,
        ObjectiveSection,
        RunConfig,
        SplitConfig,
        TrainConfig,
    )

    e = job.entry
    return RunConfig(
        data=DataConfig(dataset=job.dataset, data_root=job.data_root),
        split=SplitConfig(method="leave_one_out", seed=job.split_seed, eval_negatives=job.eval_negatives),
        model=ModelSection(name=e.family, params=e.params, pretrain=e.pretrain, alpha=e.alpha),
        objective=ObjectiveSection(**e.objective),
        train=TrainConfig(**train),
        eval=EvalSection(protocols=("full", "sampled"), ks=KS, valid_protocol="sampled"),
    )


def _run_job(job: _Job) -> list[dict]:
    """Train + evaluate one entry with torch pinned to `job.threads`; returns its rows."""
    before = torch.get_num_threads()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    try:
        if job.entry.family == "implicit-bpr":
            return _run_implicit(job)
        return _run_ours(job)
    finally:
        torch.set_num_threads(before)


def _run_ours(job: _Job) -> list[dict]:
    from recfunnel.pipeline import evaluate_all, pretrained_neumf, train_model
    from recfunnel.train.trainer import TrainConfig

    e = job.entry
    ds, split = _data(job.dataset, job.data_root, job.eval_negatives, job.split_seed)
    cfg = _run_config(job, dict(e.train, progress=job.progress))
    t0 = time.perf_counter()
    pre_seconds = 0.0
    init = None
    train_cfg = cfg.train
    if e.pretrain:
        init, pre_seconds = pretrained_neumf(cfg, ds, split)
        train_cfg = TrainConfig(**dict(e.finetune or e.train, progress=job.progress))
    model, report = train_model(
        e.family,
        e.params,
        ds,
        split,
        train_cfg,
        cfg.objective,
        cfg.eval.valid_protocol,
        init=init,
    )
    fit_seconds = time.perf_counter() - t0
    results = evaluate_all(model, ds, split, cfg, name=e.label)
    config = cfg.model_dump(mode="json")
    if e.pretrain:
        config["finetune_train"] = train_cfg.model_dump(mode="json")
    for section in (config["train"], config.get("finetune_train", {})):
        section.pop("progress", None)
    hist = report.history if report is not None else []
    extra = {
        "family": e.family,
        "config": config,
        "params": param_count(model),
        "train_seconds": fit_seconds,
        "epoch_seconds": sum(h["train_seconds"] for h in hist) if hist else None,
        "pretrain_seconds": pre_seconds if e.pretrain else None,
        "epochs_run": len(hist) if model.trainable else None,
        "best_epoch": report.best_epoch if hist else None,
        "stopped_early": report.stopped_early if hist else None,
        "samples_per_second": report.samples_per_second if hist else None,
        "pipeline_share": report.pipeline_share if hist else None,
        "valid_history": [
            {
                "epoch": h["epoch"],
                "loss": h["loss"],
                **{f"valid_{k}": v for k, v in h.get("valid", {}).items()},
            }
            for h in hist
        ],
    }
    return _rows(job, ds, results, extra)


def _rows(job: _Job, ds, results, extra: dict[str, Any]) -> list[dict]:
    n_train = int(len(_data(job.dataset, job.data_root, job.eval_negatives, job.split_seed)[1].train))
    return result_rows(job.suite, job.entry.label, results, ds, n_train, extra, job.quick, job.isolated)


def result_rows(
    suite: str,
    label: str,
    results: Sequence[Any],
    ds: Any,
    n_train: int,
    extra: dict[str, Any],
    quick: bool,
    isolated: bool,
) -> list[dict]:
    """One bench row per evaluation Result of a model: the row contract's keys, `extra` (the
    model's training figures) and the data sizes, machine and date."""
    peak, machine, date = peak_rss_mb(), machine_info(), utc_now()
    return [
        {
            "suite": suite,
            "model": label,
            "dataset": r.dataset,
            "protocol": r.protocol,
            "split": r.split,
            "part": r.part,
            "seed": r.seed,
            "metrics": dict(r.metrics),
            "n_eval_users": r.n_users,
            "eval_seconds": r.seconds,
            "peak_rss_mb": peak,
            "peak_rss_scope": "model (fresh subprocess)" if isolated else "process so far",
            **extra,
            "data": {
                "n_users": ds.n_users,
                "n_items": ds.n_items,
                "n_interactions": len(ds.interactions),
                "n_train": n_train,
            },
            "quick": quick,
            "machine": machine,
            "date": date,
        }
        for r in results
    ]


class _FactorScorer:
    """Scores from plain user/item factor matrices (score = u . v), for the evaluation protocols."""

    family = "factors"

    def __init__(self, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        self.users = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
        self.items = torch.from_numpy(np.ascontiguousarray(item_factors, dtype=np.float32))
        self.n_items = self.items.shape[0]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users[users].unsqueeze(1) * self.items[items]).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.users[users] @ self.items.T


def _run_implicit(job: _Job) -> list[dict]:
    """implicit's CPU BPR on the same train matrix; its item_factors carry a bias column (the
    matching user column is all ones), so u . v already includes the item bias."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from recfunnel.pipeline import evaluate_all

    e = job.entry
    ds, split = _data(job.dataset, job.data_root, job.eval_negatives, job.split_seed)
    x = split.part(ds, "train").matrix(ds.n_users, ds.n_items).astype(np.float32).tocsr()
    params = dict(e.params)
    if job.threads is not None:
        params["num_threads"] = job.threads  # same thread budget as ours
    model = BayesianPersonalizedRanking(**params)
    t0 = time.perf_counter()
    model.fit(x, show_progress=False)
    fit_seconds = time.perf_counter() - t0
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    scorer = _FactorScorer(uf, itf)
    cfg = _run_config(job, {"epochs": e.params["iterations"], "seed": e.params.get("random_state", 0)})
    results = evaluate_all(scorer, ds, split, cfg, name=e.label)
    f = e.params["factors"]
    extra = {
        "family": e.family,
        "config": {
            "model": {"name": "implicit.cpu.bpr.BayesianPersonalizedRanking", "params": params},
            "factor_shapes": {"user": list(uf.shape), "item": list(itf.shape)},
        },
        # learned values: user factors plus item factors and item bias (the users' 1s column is fixed)
        "params": int(ds.n_users * f + ds.n_items * (f + 1)),
        "train_seconds": fit_seconds,
        "epoch_seconds": fit_seconds,
        "pretrain_seconds": None,
        "epochs_run": e.params["iterations"],
        "best_epoch": e.params["iterations"] - 1,
        "stopped_early": False,
        "samples_per_second": len(split.train) * e.params["iterations"] / fit_seconds
        if fit_seconds
        else None,
        "pipeline_share": None,
        "valid_history": [],
    }
    return _rows(job, ds, results, extra)


def _run_isolated(job: _Job) -> list[dict]:
    """Run one job in a fresh interpreter (its own peak RSS, no state shared with other models).

    A plain ``python -c`` child rather than multiprocessing's spawn, so the caller's ``__main__`` is
    never re-imported (works from scripts without a main guard, notebooks and the CLI alike)."""
    with tempfile.TemporaryDirectory(prefix="recfunnel-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "rows.json"
        job_path.write_text(json.dumps(dataclasses.asdict(job)), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        code = "import sys; from recfunnel.bench.suites import _child_main; _child_main(*sys.argv[1:3])"
        proc = subprocess.run([sys.executable, "-c", code, str(job_path), str(out_path)], env=env)
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(
                f"benchmark of {job.entry.label} failed in its subprocess (exit {proc.returncode})"
            )
        return json.loads(out_path.read_text(encoding="utf-8"))


def _child_main(job_path: str, out_path: str) -> None:
    raw = json.loads(Path(job_path).read_text(encoding="utf-8"))
    job = _Job(**dict(raw, entry=Entry(**raw["entry"])))
    atomic_write_text(out_path, json.dumps(_run_job(job)))


# --------------------------------------------------------------------------------------------------
# suites


def _ncf_entries(quick: bool) -> list[Entry]:
    """The ncf-ml100k line-up. Hyper-parameters chosen on the *valid* part only (notes below)."""
    ncf_train = {"epochs": 20, "batch_size": 256, "lr": 1e-3, "optimizer": "adam", "patience": 5}
    # NeuMF predictive factors chosen on valid NDCG@10 (seed 0 and 1) among 8 / 16 / 32 with the
    # paper code's tower; GMF and MLP (and NeuMF-pretrain's components) use the same sizes.
    factors, layers = 32, (64, 32, 16, 8)
    # MF-BPR: a fixed epoch count (patience 0: all epochs run; the weights kept are those of the
    # best valid epoch), so that implicit's BPR can run the same number of epochs. lr 0.003, reg 3e-3,
    # 40 epochs had the best valid NDCG@10 (0.4299) of a 14-config grid over factors 32/64/128,
    # lr 0.001-0.01, batch 256/1024, reg 1e-3..1e-2 (lr 0.01 peaks at epoch 6 and overfits).
    mf_epochs = 40
    mf_params = {"factors": 64, "init_std": 0.01}
    mf_train = {"epochs": mf_epochs, "batch_size": 1024, "lr": 0.003, "optimizer": "adam", "patience": 0}
    mf_reg = 3e-3
    # NeuMF after GMF + MLP pre-training: Adam with a fresh state; lr 1e-3 beat 3e-4 and 1e-4 (the
    # paper's lower-lr trick) on valid NDCG@10 (0.4220 vs 0.4123 / 0.4000, factors 16).
    finetune = {"epochs": 20, "batch_size": 256, "lr": 1e-3, "optimizer": "adam", "patience": 5}
    entries = [
        Entry("Popularity", "popularity"),
        Entry("EASE", "ease", {"l2": 250.0}),
        Entry("MF-BPR", "mf", mf_params, {"name": "bpr", "params": {"reg": mf_reg}}, mf_train),
        Entry(
            "implicit-bpr",
            "implicit-bpr",
            {
                "factors": mf_params["factors"],
                "learning_rate": mf_train["lr"],
                "regularization": mf_reg,
                "iterations": mf_epochs,
                "random_state": 0,
                "num_threads": 0,
            },
        ),
        Entry("GMF", "gmf", {"factors": factors}, {"name": "bce", "params": {"k": 4}}, ncf_train),
        Entry("MLP", "mlp", {"layers": layers}, {"name": "bce", "params": {"k": 4}}, ncf_train),
        Entry(
            "NeuMF",
            "neumf",
            {"factors": factors, "layers": layers},
            {"name": "bce", "params": {"k": 4}},
            ncf_train,
        ),
        Entry(
            "NeuMF-pretrain",
            "neumf",
            {"factors": factors, "layers": layers},
            {"name": "bce", "params": {"k": 4}},
            ncf_train,
            pretrain=True,
            alpha=0.5,
            finetune=finetune,
        ),
    ]
    if quick:
        short = {"epochs": 1, "patience": 0}
        out = []
        for e in entries:
            if e.family == "implicit-bpr":
                e = replace(e, params=dict(e.params, iterations=2))
            elif e.family == "mf":
                e = replace(e, train=dict(e.train, epochs=2))
            elif e.train:
                # 1 epoch with 1 negative per positive (instead of 4): CI-sized, not comparable
                e = replace(e, train=dict(e.train, **short), objective={"name": "bce", "params": {"k": 1}})
                if e.finetune:
                    e = replace(e, finetune=dict(e.finetune, **short))
            out.append(e)
        entries = out
    return entries


def _have_implicit() -> bool:
    try:
        import implicit.cpu.bpr  # noqa: F401
    except ImportError:
        return False
    return True


def _run_entries(
    suite: str,
    entries: list[Entry],
    *,
    dataset: str,
    quick: bool,
    data_root,
    progress: bool,
    isolate: bool,
    threads: int | None,
) -> list[dict]:
    rows: list[dict] = []
    t_suite = time.perf_counter()
    for n, e in enumerate(entries, 1):
        if e.family == "implicit-bpr" and not _have_implicit():
            print(
                f"[{suite}] skipping {e.label}: the optional 'implicit' package is not installed "
                "(pip install 'recfunnel[bench]')",
                flush=True,
            )
            continue
        job = _Job(
            suite,
            e,
            dataset,
            None if data_root is None else str(data_root),
            99,
            0,
            quick,
            progress,
            isolate,
            threads,
        )
        if progress:
            print(f"[{suite}] {n}/{len(entries)} {e.label} ...", flush=True)
        got = _run_isolated(job) if isolate else _run_job(job)
        rows.extend(got)
        if progress:
            m = {r["protocol"]: r["metrics"] for r in got}
            parts = [f"{p} hr@10 {v['hr@10']:.4f} ndcg@10 {v['ndcg@10']:.4f}" for p, v in m.items()]
            print(
                f"[{suite}] {e.label}: train {got[0]['train_seconds']:.1f}s, "
                + ", ".join(parts)
                + f"  (suite {time.perf_counter() - t_suite:.0f}s)",
                flush=True,
            )
    _attach_comparison(rows)
    return rows


def _attach_comparison(rows: list[dict]) -> None:
    """Put the implicit-vs-ours timing on the MF-BPR rows (pure epoch time, same epoch count)."""
    imp = next((r for r in rows if r["family"] == "implicit-bpr"), None)
    if imp is None:
        return
    for r in rows:
        if r["family"] != "mf" or r["suite"] != imp["suite"]:
            continue
        ours = r["epoch_seconds"]
        r["comparison"] = {
            "against": imp["model"],
            "implicit_train_seconds": imp["train_seconds"],
            "ours_train_seconds": ours,
            "ratio_ours_over_implicit": ours / imp["train_seconds"] if imp["train_seconds"] else None,
            "same_epochs": imp["epochs_run"] if imp["epochs_run"] == r["epochs_run"] else None,
            "ours_epochs": r["epochs_run"],
            "implicit_epochs": imp["epochs_run"],
            "ours_threads": r["machine"]["torch_threads"],
            "implicit_threads": imp["config"]["model"]["params"].get("num_threads", 0)
            or imp["machine"]["cpus_usable"],
            "note": (
                "ours: sum of epoch times (sampling + Adam/SparseAdam mini-batches, validation excluded); "
                "implicit: fit() wall time (Hogwild SGD). Same factors/epochs/lr/reg numbers, but the "
                "optimisers differ (Adam vs SGD) and so does the reg scaling (batch mean vs per update)."
            ),
        }


def _suite_ncf_ml100k(
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    threads: int | None = 1,
) -> list[dict]:
    """NCF line-up on MovieLens-100K, leave-one-out, 99 fixed negatives (seed 0), K in 5/10/20."""
    entries = _ncf_entries(quick)
    if models is not None:
        wanted = set(models)
        unknown = wanted - {e.label for e in entries}
        if unknown:
            raise ValueError(
                f"unknown model(s) {sorted(unknown)} in suite ncf-ml100k; valid: "
                + ", ".join(e.label for e in entries)
            )
        entries = [e for e in entries if e.label in wanted]
    return _run_entries(
        "ncf-ml100k",
        entries,
        dataset="ml-100k",
        quick=quick,
        data_root=data_root,
        progress=progress,
        isolate=(not quick) if isolate is None else isolate,
        threads=threads,
    )


def _lazy(module: str, attr: str, key: str | None = None) -> Callable[..., list[dict]]:
    """A suite living in another module, imported only when run (they import this module);
    `key`: the suite is `attr[key]` (a dict of suites in that module)."""

    def run(**kwargs):
        import importlib
        import inspect

        fn = getattr(importlib.import_module(module), attr)
        if key is not None:
            fn = fn[key]
        accepted = inspect.signature(fn).parameters
        if kwargs.get("seeds") is not None and "seeds" not in accepted:
            raise ValueError(f"suite {key or attr} does not take seeds")
        return fn(**{k: v for k, v in kwargs.items() if k in accepted and v is not None})

    run.__doc__ = f"suite from {module}.{attr}"
    run.lazy = True  # type: ignore[attr-defined]
    return run


def _is_lazy(fn: Callable[..., list[dict]]) -> bool:
    return bool(getattr(fn, "lazy", False))


SUITES: dict[str, Callable[..., list[dict]]] = {
    "ncf-ml100k": _suite_ncf_ml100k,
    "ctr-ml100k": _lazy("recfunnel.bench.ctr", "run_ctr_suite"),
    "ann": _lazy("recfunnel.bench.ann", "run_ann_suite"),
    "retrieval-ml100k": _lazy("recfunnel.bench.retrieval", "run_retrieval_suite"),
    "optim": _lazy("recfunnel.bench.optim", "run_optim_suite"),
    **{
        n: _lazy("recfunnel.bench.seq", "SEQ_SUITES", n)
        for n in ("seq-video", "seq-ml100k", "session-diginetica")
    },
}


def run_suite(
    name: str,
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    *,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    threads: int | None = 1,
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """Run the suite `name` and return its rows (see the module docstring for the row keys).

    `quick`: a CI-sized run (1-2 epochs per model), rows marked ``"quick": true``.
    `models`: run only these model labels of the suite. `isolate`: one fresh Python subprocess per model
    (per-model peak RSS); default True for full runs, False for quick ones. `threads`: torch intra-op
    threads (and implicit's threads) while a model runs; None keeps torch's default. The default 1
    is deliberate: these models are too small to gain from intra-op parallelism, and on a shared
    machine two OpenMP threads per process oversubscribe the cores and run up to 100x slower."""
    try:
        fn = SUITES[name]
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; valid: {', '.join(sorted(SUITES))}") from None
    extra = {} if seeds is None else {"seeds": tuple(seeds)}
    if seeds is not None and "seeds" not in inspect.signature(fn).parameters and not _is_lazy(fn):
        raise ValueError(f"suite {name} does not take seeds")
    return fn(
        quick=quick,
        data_root=data_root,
        progress=progress,
        models=models,
        isolate=isolate,
        threads=threads,
        **extra,
    )


def aggregate_seeds(rows: Sequence[dict]) -> list[dict]:
    """One ``aggregate`` row per (model, protocol) that has rows of two or more seeds: every
    numeric metric as the mean over the seeds (``metrics``) and its standard deviation, ddof=1
    (``metrics_std``); the other keys from the seed-0 (first) row, ``seeds`` listing the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("aggregate"):
            groups.setdefault((r.get("model"), r.get("protocol"), r.get("dataset")), []).append(r)
    out = []
    for rs in groups.values():
        if len({r.get("seed") for r in rs}) < 2:
            continue
        keys = [k for k, v in rs[0]["metrics"].items() if isinstance(v, (int, float))]
        arr = {k: np.array([r["metrics"][k] for r in rs], dtype=np.float64) for k in keys}
        times = np.array([r.get("train_seconds") or 0.0 for r in rs], dtype=np.float64)
        out.append(
            {
                **rs[0],
                "seed": None,
                "seeds": [r.get("seed") for r in rs],
                "aggregate": True,
                "metrics": {k: float(v.mean()) for k, v in arr.items()},
                "metrics_std": {k: float(v.std(ddof=1)) for k, v in arr.items()},
                "train_seconds": float(times.mean()),
                "train_seconds_std": float(times.std(ddof=1)),
                "valid_history": [],
            }
        )
    return out


def merged_with_file(
    rows: list[dict], path: str | os.PathLike[str], rerun: Callable[[dict], bool]
) -> list[dict]:
    """The rows already in `path` (if it exists) that `rerun` does not claim, then `rows`: a
    suite run for some of its models replaces only their rows in the suite's JSON."""
    path = Path(path)
    if not path.is_file():
        return list(rows)
    return [r for r in json.loads(path.read_text("utf-8")) if not rerun(r)] + list(rows)


def write_json(rows: list[dict], path: str | os.PathLike[str]) -> Path:
    """Write the rows as a JSON list, atomically (a reader never sees a torn file)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(rows, indent=1, sort_keys=False) + "\n")
    return path
