"""Bench rows: the keys every row carries, where and when it was measured, the figures of a fit,
and reading / writing / merging / aggregating row files.

Every suite (:mod:`recfunnel.bench.suites`) fits through :func:`recfunnel.run.fit` and turns the
:class:`~recfunnel.run.FitResult` into rows with :func:`fit_figures` and :func:`result_rows`, so
the epoch log and the timing figures read the same in every suite's JSON.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recfunnel.atomic import atomic_write_text
from recfunnel.eval.stats import pack_vector

if TYPE_CHECKING:
    from recfunnel.run import FitResult
    from recfunnel.train.trainer import TrainReport

__all__ = [
    "ROW_CONTRACT",
    "aggregate_seeds",
    "fit_figures",
    "machine_info",
    "merged_with_file",
    "param_count",
    "peak_rss_mb",
    "per_user_keys",
    "result_rows",
    "run_config_json",
    "utc_now",
    "valid_history",
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


def param_count(model: Any) -> int:
    """Parameters of a model; for closed-form models (none) its learned float buffers; for a
    LightGBM ranker its own count (:meth:`n_params`)."""
    if not isinstance(model, torch.nn.Module):
        return int(model.n_params())
    n = sum(p.numel() for p in model.parameters())
    if n == 0:  # closed-form model: count the learned float buffers
        n = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return int(n)


# --------------------------------------------------------------------------------------------------
# the figures of one fit


def valid_history(report: TrainReport | None, timings: bool = False) -> list[dict]:
    """The epoch log of a fit as rows keep it: epoch, loss, (`timings`: train and validation
    seconds of the epoch) and every validation metric as ``valid_<name>``."""
    out = []
    for h in report.history if report is not None else []:
        row = {"epoch": h["epoch"], "loss": h["loss"]}
        if timings:
            row.update(train_seconds=h["train_seconds"], valid_seconds=h.get("valid_seconds"))
        out.append(row | {f"valid_{k}": v for k, v in h.get("valid", {}).items()})
    return out


def run_config_json(res: FitResult) -> dict[str, Any]:
    """The run's config as a row keeps it: the :class:`~recfunnel.run.RunConfig` without the
    progress flags, the model's params completed to its full config (defaults filled in; a
    two-tower's fitted field schema left out) and the objective named as trained."""
    config = res.config.model_dump(mode="json")
    config["train"].pop("progress", None)
    if config["model"].get("finetune"):
        config["model"]["finetune"].pop("progress", None)
    mc = getattr(res.model, "config", None)
    if mc is not None and hasattr(mc, "model_dump"):
        config["model"]["params"] = mc.model_dump(mode="json", exclude={"fields_json"})
    if config["objective"]["name"] is None and res.objective is not None:
        config["objective"]["name"] = getattr(res.objective, "name", None)
    return config


def fit_figures(res: FitResult, timings: bool = False) -> dict[str, Any]:
    """The keys a fit gives every row of its model: family, config, params and the training
    figures. ``train_seconds`` is the whole fit as run (pre-training, per-epoch validation and,
    for field families, fitting and encoding the fields included); ``epoch_seconds`` the pure
    training-loop time (sum of epochs); None where the model has no epochs (closed form,
    LightGBM: its suite fills its own)."""
    report = res.report
    hist = report.history if report is not None else []
    return {
        "family": res.family,
        "config": run_config_json(res),
        "params": param_count(res.model),
        "train_seconds": res.seconds,
        "epoch_seconds": sum(h["train_seconds"] for h in hist) if hist else None,
        "pretrain_seconds": res.pretrain_seconds,
        "epochs_run": len(hist) if hist else None,
        "best_epoch": report.best_epoch if hist else None,
        "stopped_early": report.stopped_early if hist else None,
        "samples_per_second": report.samples_per_second if hist else None,
        "pipeline_share": report.pipeline_share if hist else None,
        "valid_history": valid_history(report, timings),
    }


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
    model's training figures) and the data sizes, machine and date; a Result's per-user vectors as
    ``per_user`` ({metric: :func:`~recfunnel.eval.stats.pack_vector` text}) with ``per_user_users``,
    a fingerprint of the users they belong to (rows pair on it)."""
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
            **per_user_keys(r),
        }
        for r in results
    ]


def per_user_keys(result: Any) -> dict[str, Any]:
    """The row keys of a Result's per-user vectors (none without them): ``per_user`` and
    ``per_user_users`` (see :func:`result_rows`), for suites that build their rows themselves."""
    per_user, users = getattr(result, "per_user", None), getattr(result, "users", None)
    if not per_user or users is None:
        return {}
    digest = hashlib.sha256(np.ascontiguousarray(users, dtype="<i8").tobytes()).hexdigest()[:16]
    return {"per_user": {k: pack_vector(v) for k, v in per_user.items()}, "per_user_users": digest}


# --------------------------------------------------------------------------------------------------
# row files


#: per-run timing figures an aggregate row averages over its seeds (where every seed row has them)
SEED_TIMINGS = ("seconds_per_epoch", "seconds_to_best_epoch", "samples_per_second", "positions_per_second")


def aggregate_seeds(rows: Sequence[dict]) -> list[dict]:
    """One ``aggregate`` row per (model, protocol) that has rows of two or more seeds: every
    numeric metric as the mean over the seeds (``metrics``) and its standard deviation, ddof=1
    (``metrics_std``); the timing figures of :data:`SEED_TIMINGS` a row has as their mean and
    ``<key>_std``, each seed's best epoch as ``best_epochs``; the other keys from the seed-0 (first)
    row but its per-user vectors (the seed rows keep theirs), ``seeds`` listing the seeds."""
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
        timings = {}
        for k in SEED_TIMINGS:
            if all(isinstance(r.get(k), (int, float)) for r in rs):
                v = np.array([r[k] for r in rs], dtype=np.float64)
                timings.update({k: float(v.mean()), f"{k}_std": float(v.std(ddof=1))})
        out.append(
            {
                **{k: v for k, v in rs[0].items() if k not in ("per_user", "per_user_users")},
                "seed": None,
                "seeds": [r.get("seed") for r in rs],
                "aggregate": True,
                "metrics": {k: float(v.mean()) for k, v in arr.items()},
                "metrics_std": {k: float(v.std(ddof=1)) for k, v in arr.items()},
                "train_seconds": float(times.mean()),
                "train_seconds_std": float(times.std(ddof=1)),
                **timings,
                "best_epochs": [r.get("best_epoch") for r in rs],
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
