"""Benchmark suite ``ncf-ml100k``: the NCF line-up (He et al. 2017) on MovieLens-100K beside
Popularity, EASE, MF-BPR and implicit's BPR; leave-one-out, 99 fixed negatives (seed 0), K in
5/10/20, full and sampled ranking. Rows follow :data:`recfunnel.bench.rows.ROW_CONTRACT`.

Timing and memory rules (the same for every row):

* ``train_seconds``: wall time of the whole fit as run (:attr:`recfunnel.run.FitResult.seconds`),
  per-epoch validation for early stopping included (for pre-trained NeuMF: GMF + MLP pre-training
  + fine-tuning; ``pretrain_seconds`` the pre-training). ``epoch_seconds`` is the pure
  training-loop time (sum of epochs, no validation); the implicit comparison uses that, and adds
  ``comparison.side_by_side``: ours (the MF-BPR training, no validation) and implicit's fit timed
  alternately in one process, 5 rounds, median ratio (the suite's single timings are taken minutes
  apart, under whatever else the shared machine runs then).
* ``eval_seconds``: the test evaluation of that row's protocol only.
* ``peak_rss_mb``: ``getrusage(RUSAGE_SELF).ru_maxrss`` read after the model ran. With
  ``isolate=True`` (the default for full runs) each model runs in a fresh Python subprocess, so it
  is that model's own peak (including the ~0.3-0.5 GB of the Python + torch runtime and the data);
  with ``isolate=False`` (the default for quick runs) it is the peak of the whole process so far.
  ``peak_rss_scope`` says which.
* threads: torch is pinned to ``threads`` intra-op threads (default 1) while a model runs, and
  implicit gets the same count; ``machine.torch_threads`` in each row is the value used. The
  ID-table families also train with 1 thread by default (their ``train_threads``): on the shared
  2-core machine, NeuMF at batch 1024 ran 156k samples/s with 1 thread and 3.7k with 2 (the second
  thread spins against the other jobs).
* ``params``: trainable parameter count; for closed-form models (no parameters) the size of the
  learned float buffers instead (Popularity: the item counts, EASE: the item-item matrix).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.atomic import atomic_write_text
from recfunnel.bench.rows import fit_figures, result_rows

__all__ = ["SUITE", "Entry", "ncf_entries", "run_ncf_suite"]

SUITE = "ncf-ml100k"
KS = (5, 10, 20)


@dataclass(frozen=True)
class Entry:
    """One model of the suite, fully configured (everything here is copied into the rows' `config`)."""

    label: str  # the rows' "model"
    family: str  # registry name, or "implicit-bpr"
    params: dict[str, Any] = field(default_factory=dict)
    objective: dict[str, Any] = field(default_factory=dict)  # e.g. {"name": "bpr", "params": {...}}
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    pretrain: bool = False  # NeuMF only: GMF + MLP pre-training (run's model.pretrain)
    alpha: float = 0.5
    finetune: dict[str, Any] | None = None  # TrainConfig fields for NeuMF after pre-training


def ncf_entries(quick: bool) -> list[Entry]:
    """The ncf-ml100k line-up. Hyper-parameters chosen on the *valid* part only (notes below); they
    are also the families' defaults (``MFConfig`` / ``MF.train_defaults`` / ``objective_defaults``,
    the NCF configs and ``recfunnel.models.ncf.NCF_TRAIN``), so ``recfunnel train --model X`` trains
    what this suite reports."""
    # GMF / MLP / NeuMF: the paper's BCE with 4 negatives; batch, rate and weight decay chosen on
    # valid NDCG@10 (sampled) for NeuMF, mean of seeds 0-2 where given: batch 256 / lr 1e-3 (the
    # paper's) 0.413 (seed 0) at ~25k samples/s; 1024 / 2e-3 0.4121; 2048 / 3e-3 0.4136; 4096 / 4e-3
    # 0.4130 at ~250k samples/s (6e-3, 8192 / 6e-3 lower); 4096 / 4e-3 with weight decay 1e-6 0.4193
    # (3e-6 0.420 and 3e-7 0.412 on seed 0, 1e-5 0.399; dropout 0.2 0.413, 8 negatives 0.412,
    # factors 64 0.414, tower 128-64-32-16 0.416). GMF takes the same (weight decay 1e-6: 0.4152 vs
    # 0.4104 without); MLP the same without weight decay (0.3939 vs 0.3828 with).
    from recfunnel.models.ncf import MLP_TRAIN, NCF_TRAIN  # the families' defaults are these choices

    ncf_train, mlp_train = dict(NCF_TRAIN), dict(MLP_TRAIN)
    # NeuMF predictive factors chosen on valid NDCG@10 (seed 0 and 1) among 8 / 16 / 32 with the
    # paper code's tower; GMF and MLP (and NeuMF-pretrain's components) use the same sizes.
    factors, layers = 32, (64, 32, 16, 8)
    # MF-BPR: a fixed epoch count (patience 0: all epochs run; the weights kept are those of the
    # best valid epoch), so that implicit's BPR can run the same number of epochs. Chosen on valid
    # NDCG@10 (sampled), mean of seeds 0-2, with the closed-form step at batch 8192 / lr 0.01 (batch
    # 1024-2048 at lr 3e-3-5e-3 were 0.424-0.425 on seed 0, at 4-8x the epoch time): factors 64 /
    # reg 3e-3 / 40 epochs 0.4190; factors 32 / reg 3e-3 / 60 epochs 0.4185 (40 epochs 0.4139, still
    # rising); factors 48 0.4158; factors 64 / reg 1e-2 0.4146; factors 32 / reg 5e-3 0.4127;
    # reg 3e-2 0.37; lr 2e-2-3e-2 lower. Of the two within noise of each other, the smaller model.
    mf_epochs = 60
    mf_params = {"factors": 32, "init_std": 0.01}
    mf_train = {"epochs": mf_epochs, "batch_size": 8192, "lr": 0.01, "optimizer": "adam", "patience": 0}
    mf_reg = 3e-3
    # NeuMF after GMF + MLP pre-training: Adam with a fresh state; lr 1e-3 beat 3e-4 and 1e-4 (the
    # paper's lower-lr trick) on valid NDCG@10 (0.4220 vs 0.4123 / 0.4000, factors 16, batch 256).
    finetune = {"epochs": 20, "batch_size": 256, "lr": 1e-3, "optimizer": "adam", "patience": 5}
    bce4 = {"name": "bce", "params": {"k": 4}}
    neumf = {"factors": factors, "layers": layers}
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
        Entry("GMF", "gmf", {"factors": factors}, bce4, ncf_train),
        Entry("MLP", "mlp", {"layers": layers}, bce4, mlp_train),
        Entry("NeuMF", "neumf", neumf, bce4, ncf_train),
        Entry("NeuMF-pretrain", "neumf", neumf, bce4, ncf_train, pretrain=True, alpha=0.5, finetune=finetune),
    ]
    if quick:
        entries = [_quick(e) for e in entries]
    return entries


def _quick(e: Entry) -> Entry:
    short = {"epochs": 1, "patience": 0}
    if e.family == "implicit-bpr":
        return replace(e, params=dict(e.params, iterations=2))
    if e.family == "mf":
        return replace(e, train=dict(e.train, epochs=2))
    if not e.train:
        return e
    # 1 epoch with 1 negative per positive (instead of 4): CI-sized, not comparable
    e = replace(e, train=dict(e.train, **short), objective={"name": "bce", "params": {"k": 1}})
    return replace(e, finetune=dict(e.finetune, **short)) if e.finetune else e


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
    """The job's :class:`~recfunnel.run.RunConfig` (the entry's train settings as `train`)."""
    from recfunnel.run import (
        DataConfig,
        EvalSection,
        ModelSection,
        ObjectiveSection,
        RunConfig,
        SplitConfig,
        TrainConfig,
    )

    e = job.entry
    finetune = None
    if e.pretrain:
        finetune = TrainConfig(**dict(e.finetune or e.train, progress=train.get("progress", False)))
    return RunConfig(
        data=DataConfig(dataset=job.dataset, data_root=job.data_root),
        split=SplitConfig(method="leave_one_out", seed=job.split_seed, eval_negatives=job.eval_negatives),
        model=ModelSection(
            name=e.family, params=e.params, pretrain=e.pretrain, alpha=e.alpha, finetune=finetune
        ),
        objective=ObjectiveSection(**e.objective),
        train=TrainConfig(**train),
        eval=EvalSection(protocols=("full", "sampled"), ks=KS, valid_protocol="sampled"),
    )


@functools.lru_cache(maxsize=2)
def _data(job_key: tuple):
    """(dataset, split) of a job, read once per process (the config's data and split sections)."""
    from recfunnel.run import DataConfig, SplitConfig, load_data, load_split

    dataset, data_root, eval_negatives, seed = job_key
    ds = load_data(DataConfig(dataset=dataset, data_root=data_root))
    split = load_split(SplitConfig(method="leave_one_out", seed=seed, eval_negatives=eval_negatives), ds)
    return ds, split


def _job_data(job: _Job):
    return _data((job.dataset, job.data_root, job.eval_negatives, job.split_seed))


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
    from recfunnel.run import evaluate_run, fit

    ds, split = _job_data(job)
    cfg = _run_config(job, dict(job.entry.train, progress=job.progress))
    res = fit(cfg, ds, split, evaluate=False)
    results = evaluate_run(res, name=job.entry.label)
    return _rows(job, ds, results, fit_figures(res))


def _rows(job: _Job, ds, results, extra: dict[str, Any]) -> list[dict]:
    n_train = int(len(_job_data(job)[1].train))
    return result_rows(job.suite, job.entry.label, results, ds, n_train, extra, job.quick, job.isolated)


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

    from recfunnel.run import evaluate_model

    e = job.entry
    ds, split = _job_data(job)
    x = split.part(ds, "train").matrix(ds.n_users, ds.n_items).astype(np.float32).tocsr()
    params = dict(e.params)
    if job.threads is not None:
        params["num_threads"] = job.threads  # same thread budget as ours
    model = BayesianPersonalizedRanking(**params)
    t0 = time.perf_counter()
    model.fit(x, show_progress=False)
    fit_seconds = time.perf_counter() - t0
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    seed = e.params.get("random_state", 0)
    results = evaluate_model(
        _FactorScorer(uf, itf), ds, split, ("full", "sampled"), "test", KS, name=e.label, seed=seed
    )
    f, iterations = e.params["factors"], e.params["iterations"]
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
        "epochs_run": iterations,
        "best_epoch": iterations - 1,
        "stopped_early": False,
        "samples_per_second": len(split.train) * iterations / fit_seconds if fit_seconds else None,
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
        code = "import sys; from recfunnel.bench.ncf import _child_main; _child_main(*sys.argv[1:3])"
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
# the suite


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
    root = None if data_root is None else str(data_root)
    for n, e in enumerate(entries, 1):
        if e.family == "implicit-bpr" and not _have_implicit():
            print(
                f"[{suite}] skipping {e.label}: the optional 'implicit' package is not installed "
                "(pip install 'recfunnel[bench]')",
                flush=True,
            )
            continue
        job = _Job(suite, e, dataset, root, 99, 0, quick, progress, isolate, threads)
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
    side = None
    labels = {e.label for e in entries}
    if {"MF-BPR", "implicit-bpr"} <= labels and _have_implicit():
        mf = next(e for e in entries if e.label == "MF-BPR")
        imp = next(e for e in entries if e.label == "implicit-bpr")
        job = _Job(suite, mf, dataset, root, 99, 0, quick, progress, isolate, threads)
        side = _side_by_side(job, imp, rounds=2 if quick else SIDE_BY_SIDE_ROUNDS)
    _attach_comparison(rows, side)
    return rows


#: rounds of the MF-BPR vs implicit side-by-side timing (alternating, one process; median ratio)
SIDE_BY_SIDE_ROUNDS = 5


def _side_by_side(job: _Job, imp: Entry, rounds: int) -> dict[str, Any]:
    """Time ours (the MF-BPR entry's training, the Trainer's epoch times, no validation) and
    implicit's fit (same epochs) alternately in this process, `rounds` times, with the same thread
    count: on a shared machine the two see the same load, which the single timings of the suite's
    rows (taken minutes apart) do not. Returns the per-round times, their ratios and the median."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    from recfunnel.run import fit

    ds, split = _job_data(job)
    train = split.part(ds, "train")
    x = train.matrix(ds.n_users, ds.n_items).astype(np.float32).tocsr()
    params = dict(imp.params, num_threads=job.threads) if job.threads is not None else dict(imp.params)
    # every epoch runs (patience 0: no early stop), as implicit's fit runs all of its; the
    # Trainer's per-epoch train_seconds leave the validation passes out
    cfg = _run_config(job, dict(job.entry.train, progress=False, patience=0))
    before = torch.get_num_threads()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    ours, theirs = [], []
    try:
        for _ in range(rounds):
            report = fit(cfg, ds, split, evaluate=False).report
            ours.append(sum(h["train_seconds"] for h in report.history))
            t0 = time.perf_counter()
            BayesianPersonalizedRanking(**params).fit(x, show_progress=False)
            theirs.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {
        "rounds": rounds,
        "epochs": cfg.train.epochs,
        "ours_seconds": ours,
        "implicit_seconds": theirs,
        "ratios": ratios,
        "median_ratio": float(np.median(ratios)),
    }


def _attach_comparison(rows: list[dict], side_by_side: dict[str, Any] | None = None) -> None:
    """Put the implicit-vs-ours timing on the MF-BPR rows (pure epoch time, same epoch count), and
    the side-by-side timing (:func:`_side_by_side`) when it ran."""
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
                "ours: sum of epoch times (sampling + mini-batches: closed-form BPR gradients, fused "
                "Adam on the dense tables; validation excluded); implicit: fit() wall time (Hogwild "
                "SGD). Same factors/epochs/lr/reg numbers, but the optimisers differ (Adam vs SGD) "
                "and so does the reg scaling (batch mean vs per update)."
            ),
        }
        if side_by_side is not None:
            r["comparison"]["side_by_side"] = side_by_side


def run_ncf_suite(
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    threads: int | None = 1,
) -> list[dict]:
    """NCF line-up on MovieLens-100K, leave-one-out, 99 fixed negatives (seed 0), K in 5/10/20."""
    entries = ncf_entries(quick)
    if models is not None:
        wanted = set(models)
        unknown = wanted - {e.label for e in entries}
        if unknown:
            raise ValueError(
                f"unknown model(s) {sorted(unknown)} in suite {SUITE}; valid: "
                + ", ".join(e.label for e in entries)
            )
        entries = [e for e in entries if e.label in wanted]
    return _run_entries(
        SUITE,
        entries,
        dataset="ml-100k",
        quick=quick,
        data_root=data_root,
        progress=progress,
        isolate=(not quick) if isolate is None else isolate,
        threads=threads,
    )
