"""Benchmark suite ``funnel-ml100k`` (issue 12): the whole funnel on MovieLens-100K, retriever alone
against retriever + a ranker trained on its candidates.

Data and split: ml-100k, leave-one-out (the settings of ``examples/two-tower-ml100k.toml``). Per
training seed (default 0, 1, 2):

1. the two-tower retriever is fitted through :func:`recfunnel.run.fit` with the example's settings
   (early stopping on the valid part's full-ranking NDCG@10);
2. the funnel's sources: an exact ANN retriever over it (quota 200) and a popularity retriever over
   the train + valid log (quota 50, the items the ANN did not propose);
3. rankers are trained on rows of :func:`recfunnel.funnel.ranker_parts` (4 negatives per positive
   of the train part, early stopping on the valid rows' AUC) with the tuned settings of
   :data:`recfunnel.run.presets.CTR_PRESETS`: DeepFM with half of the negatives hard (drawn from the
   retriever's top 50 for the user) or none, LightGBM with half hard;
4. each funnel is evaluated by :func:`recfunnel.funnel.evaluate_funnel` on the test part: NDCG@10,
   Recall@10 (= HR@10) and MRR@10 of the final top 10, Recall@200 of the first 200 merged
   candidates (the ANN's) and of all 250 (``cand_recall``), and the milliseconds per request of each
   stage (``stage_ms``, batches of 256 users, one torch thread).

Rows follow :data:`recfunnel.bench.rows.ROW_CONTRACT` (model: the variant; protocol "funnel-loo");
``train_seconds`` is the retriever's fit plus, for a ranked funnel, building the ranker's rows and
training it. The retriever-alone row also carries the retriever's own full-ranking figures
(``reference_full``, :func:`recfunnel.eval.protocols.evaluate_full`): its NDCG@10 must be the same.
Ranked rows carry ``paired``: per-user differences in NDCG@10 / Recall@10 against the other
variants of the same seed (mean and standard error over users). With two or more seeds, mean +- std
``aggregate`` rows are added (:func:`recfunnel.bench.rows.aggregate_seeds`).

``quick``: the first 300 users only, 1 epoch per model (LightGBM: 20 rounds), one seed.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfunnel.bench.rows import (
    aggregate_seeds,
    fit_figures,
    machine_info,
    param_count,
    peak_rss_mb,
    per_user_keys,
    run_config_json,
    utc_now,
)
from recfunnel.eval.ctr import evaluate_ctr
from recfunnel.funnel import (
    ANNRetriever,
    Funnel,
    FunnelEval,
    PopularityRetriever,
    RankerDataConfig,
    RetrievalScoreRanker,
    ScorerRanker,
    evaluate_funnel,
    ranker_parts,
    train_ranker,
)
from recfunnel.run import RunConfig, evaluate_model, fit, load_data, load_split
from recfunnel.run.presets import ctr_preset
from recfunnel.train.trainer import TrainConfig

__all__ = ["EXAMPLE", "VARIANTS", "run_funnel_suite"]

SUITE = "funnel-ml100k"
PROTOCOL = "funnel-loo"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "two-tower-ml100k.toml"
QUOTAS = {"ann": 200, "popular": 50}
KS, CANDIDATE_KS = (10,), (200,)
QUICK_USERS = 300

#: label -> (ranker family or None: ranked by the ANN's own score, share of hard negatives)
VARIANTS: dict[str, tuple[str | None, float]] = {
    "TwoTower": (None, 0.0),
    "TwoTower+DeepFM-hard": ("deepfm", 0.5),
    "TwoTower+DeepFM-random": ("deepfm", 0.0),
    "TwoTower+LightGBM-hard": ("lightgbm", 0.5),
}


def retriever_config(seed: int, quick: bool, data_root: Any = None, progress: bool = False) -> RunConfig:
    """The example's two-tower run with training `seed` (`quick`: 1 epoch, no early stopping)."""
    if not EXAMPLE.is_file():
        raise FileNotFoundError(f"{EXAMPLE} not found: the suite reads the retriever's settings from it")
    train: dict[str, Any] = {"seed": seed, "progress": progress}
    if quick:
        train |= {"epochs": 1, "patience": 0}
    return RunConfig.from_toml(EXAMPLE, {"data": {"data_root": data_root}, "train": train})


def _data(cfg: RunConfig, quick: bool):
    ds = load_data(cfg.data)
    if quick:
        ints = ds.interactions
        ds = dataclasses.replace(
            ds,
            name=f"{ds.name}-first{QUICK_USERS}users",
            interactions=ints.take(np.flatnonzero(ints.user < QUICK_USERS)),
        )
    return ds, load_split(cfg.split, ds)


def _ranker_settings(family: str, quick: bool, seed: int, progress: bool) -> tuple[dict, TrainConfig]:
    params, train = ctr_preset(family)
    if family == "lightgbm":
        return (dict(params, max_rounds=20) if quick else params), TrainConfig(seed=seed, progress=progress)
    if quick:
        params, train = dict(params, hidden=(64,)), dict(train, epochs=1, patience=0)
    return params, TrainConfig(**dict(train, seed=seed, progress=progress))


def _paired(evals: dict[str, FunnelEval], label: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per-user differences of `label` against every other variant of the same seed: mean and
    standard error (same users in the same order)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    mine = evals[label]
    for other, ev in evals.items():
        if other == label:
            continue
        assert np.array_equal(mine.users, ev.users)
        out[other] = {}
        for key in ("ndcg@10", "recall@10"):
            d = mine.per_user[key] - ev.per_user[key]
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
            out[other][key] = {"mean_diff": float(d.mean()), "se": se}
    return out


def _seed_rows(labels: Sequence[str], seed: int, quick: bool, data_root: Any, progress: bool) -> list[dict]:
    cfg = retriever_config(seed, quick, data_root, progress)
    ds, split = _data(cfg, quick)
    res = fit(cfg, ds, split, evaluate=False)
    tt_fig = fit_figures(res)
    ann = ANNRetriever(res.model, backend="exact")
    log = ds.interactions.take(np.sort(np.concatenate([split.train, split.valid])))
    sources = [ann, PopularityRetriever(log, ds.n_items)]
    quotas = [QUOTAS[s.name] for s in sources]
    funnel_cfg = {"sources": [s.name for s in sources], "quotas": quotas, "ann_backend": "exact"}
    parts_cache: dict[float, tuple[Any, dict, float, RankerDataConfig]] = {}
    rows, evals = [], {}
    for label in labels:
        family, hard = VARIANTS[label]
        ranker_fig: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        if family is None:
            ranker: Any = RetrievalScoreRanker(source="ann")
            (ref,) = evaluate_model(res.model, ds, split, ("full",), "test", KS, name=label, seed=seed)
            extra["reference_full"] = dict(ref.metrics)
        else:
            if hard not in parts_cache:
                t0 = time.perf_counter()
                rcfg = RankerDataConfig(hard_fraction=hard, seed=seed)
                schema, parts = ranker_parts(ds, split, ann, cfg=rcfg)
                parts_cache[hard] = (schema, parts, time.perf_counter() - t0, rcfg)
            schema, parts, data_seconds, rcfg = parts_cache[hard]
            params, tcfg = _ranker_settings(family, quick, seed, progress)
            t0 = time.perf_counter()
            model = train_ranker(family, schema, parts, params=params, train=tcfg)
            seconds = time.perf_counter() - t0
            ranker = ScorerRanker.from_model(model, ds, split)
            valid = evaluate_ctr(model, parts["valid"], name=label, part_name="valid", seed=seed)
            ranker_fig = {
                "ranker_data_seconds": data_seconds,
                "ranker_train_seconds": seconds,
                "ranker_params": param_count(model),
                "ranker_valid": dict(valid.metrics),
                "ranker_rows": {p: len(parts[p]) for p in parts},
            }
            if family == "lightgbm":
                rounds = model.best_iteration_ or model.config.max_rounds
                ranker_fig |= {
                    "epochs_run": len(model.history_.get("valid", {}).get("auc", [])),
                    "best_epoch": rounds - 1,
                }
            extra["ranker_config"] = {
                "family": family,
                "params": params,
                "train": tcfg.model_dump(mode="json", exclude={"progress"}),
                "data": rcfg.model_dump(mode="json"),
            }
        funnel = Funnel.for_dataset(sources, quotas, ranker, dataset=ds, split=split)
        t0 = time.perf_counter()
        ev = evaluate_funnel(funnel, ds, split, "test", KS, CANDIDATE_KS, batch_size=256)
        eval_seconds = time.perf_counter() - t0
        evals[label] = ev
        train_seconds = res.seconds + ranker_fig.get("ranker_data_seconds", 0.0)
        train_seconds += ranker_fig.get("ranker_train_seconds", 0.0)
        row = {
            "suite": SUITE,
            "model": label,
            "family": "funnel",
            "dataset": ds.name,
            "protocol": PROTOCOL,
            "split": split.describe(),
            "part": "test",
            "seed": seed,
            "metrics": dict(ev.metrics),
            "stage_ms": dict(ev.stage_ms),
            "n_eval_users": ev.n_users,
            "mean_candidates": ev.mean_candidates,
            **per_user_keys(ev),
            "eval_seconds": eval_seconds,
            "train_seconds": train_seconds,
            "retriever_train_seconds": res.seconds,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_scope": "process so far",
            "params": tt_fig["params"] + ranker_fig.get("ranker_params", 0),
            "config": {"retriever": run_config_json(res), "funnel": funnel_cfg, **extra},
            # the ranker's epochs (LightGBM: rounds); train_ranker does not return a DeepFM's report
            "epochs_run": tt_fig["epochs_run"] if family is None else None,
            "best_epoch": tt_fig["best_epoch"] if family is None else None,
            "samples_per_second": tt_fig["samples_per_second"] if family is None else None,
            "pipeline_share": tt_fig["pipeline_share"] if family is None else None,
            "retriever": {k: tt_fig[k] for k in ("params", "epochs_run", "best_epoch", "valid_history")},
            **ranker_fig,
            "data": {
                "n_users": ds.n_users,
                "n_items": ds.n_items,
                "n_interactions": len(ds.interactions),
                "n_train": len(split.train),
            },
            "quick": quick,
            "machine": machine_info(),
            "date": utc_now(),
        }
        rows.append(row)
        if progress:
            m = ev.metrics
            print(
                f"[{SUITE}] seed {seed} {label}: ndcg@10 {m['ndcg@10']:.4f} recall@10 {m['recall@10']:.4f} "
                f"cand_recall@200 {m['cand_recall@200']:.4f} cand_recall {m['cand_recall']:.4f} "
                f"rank {ev.stage_ms.get('rank', 0):.2f} ms/req total {ev.stage_ms.get('total', 0):.2f} "
                f"ms/req (train {train_seconds:.0f}s)",
                flush=True,
            )
    for row in rows:
        if VARIANTS[row["model"]][0] is not None:
            row["paired"] = _paired(evals, row["model"])
    return rows


def _aggregates(rows: list[dict]) -> list[dict]:
    """:func:`aggregate_seeds`, with the stage timings and evaluation seconds averaged too."""
    out = aggregate_seeds(rows)
    for agg in out:
        runs = [r for r in rows if r["model"] == agg["model"] and not r.get("aggregate")]
        agg["stage_ms"] = {k: float(np.mean([r["stage_ms"][k] for r in runs])) for k in agg["stage_ms"]}
        agg["eval_seconds"] = float(np.mean([r["eval_seconds"] for r in runs]))
        agg.pop("paired", None)
    return out


def run_funnel_suite(
    quick: bool = False,
    data_root: Any = None,
    progress: bool = True,
    models: Sequence[str] | None = None,
    isolate: bool | None = None,
    threads: int | None = 1,
    seeds: Sequence[int] | None = None,
) -> list[dict]:
    """Rows of the funnel-ml100k suite (see the module docstring). `models`: labels of
    :data:`VARIANTS` (default all); `seeds`: training seeds (default 0, 1, 2; quick: 0); one
    process for all (`isolate` is not supported: the variants of a seed share its retriever)."""
    labels = list(VARIANTS) if models is None else list(models)
    unknown = set(labels) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; valid: {', '.join(VARIANTS)}")
    if isolate:
        raise ValueError("funnel-ml100k runs in one process (the variants of a seed share a retriever)")
    seeds = tuple(seeds) if seeds is not None else ((0,) if quick else (0, 1, 2))
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        rows: list[dict] = []
        for seed in seeds:
            rows += _seed_rows(labels, seed, quick, data_root, progress)
        if len(seeds) > 1:
            rows += _aggregates(rows)
        return rows
    finally:
        torch.set_num_threads(before)
