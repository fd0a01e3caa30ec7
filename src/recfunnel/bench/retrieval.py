"""Benchmark suite ``retrieval-ml100k`` (issue 4): the candidate-generation models on MovieLens-100K.

* Warm protocol (``--seed`` repeatable: training seeds, mean +- std rows): leave-one-out (split
  seed 0, the split of ``ncf-ml100k``), full ranking with train (and
  valid) items masked, Recall@{20,50,100} and NDCG@10 (K in 10/20/50/100). Models: two-tower with
  and without logQ correction x with and without the text vector, Item2Vec, MF-BPR (the
  ``ncf-ml100k`` config) and EASE. Trainable models stop early on the valid part (full ranking,
  NDCG@10) and keep their best valid epoch.
* Cold-start protocol (``cold-start-10pct``): 10% of the items (seeded) are removed from training
  entirely; a content-only two-tower (``item_ids=False``: genres, year, text; ``item_bias``: a
  per-item score term from the same content) is trained on the
  rest, and each interaction with a held-out item is ranked (1) among the held-out items only and
  (2) among every item the user has no training interaction with (cold items compete with warm
  ones). HR@50 / NDCG@10 against: a random ranking (exact expectation); *popularity predicted
  from content* (ridge regression of log(1 + training count) on the item's text vector, fitted on
  the warm items, the ridge strength chosen on a seeded 10% of them: the popularity a cold-start
  system can know; among all items warm items keep their real training counts); and, as an
  upper reference, the held-out items' *oracle* popularity (leave-one-user-out counts: each
  user's items are ranked by the other users' interactions with them, data a cold-start system
  would not have).

Every model is fitted by :func:`recfunnel.run.fit`. Rows follow the bench row contract
(:data:`recfunnel.bench.rows.ROW_CONTRACT`: suite, model, dataset, protocol, split, seed, metrics,
train_seconds, eval_seconds, peak_rss_mb, params, config, ...).

Run: ``python -m recfunnel.bench.retrieval [--quick] [--out bench/results/retrieval-ml100k.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from recfunnel.atomic import atomic_write_text
from recfunnel.bench.rows import (
    aggregate_seeds,
    fit_figures,
    machine_info,
    merged_with_file,
    peak_rss_mb,
    per_user_keys,
    utc_now,
)
from recfunnel.run import (
    DataConfig,
    EvalSection,
    ModelSection,
    ObjectiveSection,
    RunConfig,
    SplitConfig,
    TrainConfig,
    evaluate_run,
    fit,
    load_data,
    load_split,
)
from recfunnel.run.coldstart import COLD_PARAMS, COLD_TRAIN, cold_start_eval

__all__ = ["ENTRIES", "run_retrieval_suite", "warm_config"]

SUITE = "retrieval-ml100k"
KS = (10, 20, 50, 100)
_TT_TRAIN = {"epochs": 20, "batch_size": 1024, "lr": 3e-3, "optimizer": "adam", "patience": 3}
_TT = {"dim": 64, "emb_dim": 32, "hidden": (128,), "history_len": 20}

# label -> (family, params, objective, train)
ENTRIES: dict[str, tuple[str, dict, dict, dict]] = {
    "TwoTower-logQ": (
        "two-tower",
        dict(_TT),
        {"name": "in-batch-softmax", "params": {"logq": True}},
        _TT_TRAIN,
    ),
    "TwoTower-noLogQ": (
        "two-tower",
        dict(_TT),
        {"name": "in-batch-softmax", "params": {"logq": False}},
        _TT_TRAIN,
    ),
    "TwoTower-text-logQ": (
        "two-tower",
        dict(_TT, use_text=True),
        {"name": "in-batch-softmax", "params": {"logq": True}},
        _TT_TRAIN,
    ),
    "TwoTower-text-noLogQ": (
        "two-tower",
        dict(_TT, use_text=True),
        {"name": "in-batch-softmax", "params": {"logq": False}},
        _TT_TRAIN,
    ),
    # lr and `recent` chosen on the valid part (full NDCG@10: recent 5 / lr 1e-3 0.050; 20 / 3e-3 0.038)
    "Item2Vec": (
        "item2vec",
        {"dim": 64, "recent": 5},
        {"name": "sgns", "params": {"window": 5, "k": 5}},
        {"epochs": 10, "batch_size": 4096, "lr": 1e-3, "optimizer": "adam", "patience": 3},
    ),
    # as in ncf.ncf_entries (MF-BPR): chosen there on the valid part
    "MF-BPR": (
        "mf",
        {"factors": 64, "init_std": 0.01},
        {"name": "bpr", "params": {"reg": 3e-3}},
        {"epochs": 40, "batch_size": 1024, "lr": 0.003, "optimizer": "adam", "patience": 0},
    ),
    "EASE": ("ease", {"l2": 250.0}, {}, {}),
}


def warm_config(
    label: str, seed: int = 0, quick: bool = False, progress: bool = False, data_root=None
) -> RunConfig:
    """The :class:`~recfunnel.run.RunConfig` of entry `label` under the warm protocol (training
    `seed`; `quick`: 1 epoch, MF-BPR 2, no early stopping)."""
    family, params, objective, train = ENTRIES[label]
    if quick and train:
        train = dict(train, epochs=1 if family != "mf" else 2, patience=0)
    return RunConfig(
        data=DataConfig(dataset="ml-100k", data_root=data_root),
        split=SplitConfig(method="leave_one_out", seed=0, eval_negatives=99),
        model=ModelSection(name=family, params=params),
        objective=ObjectiveSection(**objective),
        train=TrainConfig(**dict(train, seed=seed, progress=progress)),
        eval=EvalSection(protocols=("full",), ks=KS, valid_protocol="full"),
    )


def _base_row(ds, label: str, family: str, quick: bool) -> dict[str, Any]:
    return {
        "suite": SUITE,
        "model": label,
        "family": family,
        "dataset": ds.name,
        "quick": quick,
        "machine": machine_info(),
    }


def _warm_rows(label: str, ds, split, quick: bool, progress: bool, seed: int = 0) -> list[dict]:
    """One row: entry `label` fitted by :func:`recfunnel.run.fit` (a two-tower is seeded, built
    and seeded again before training) and ranked against every item on the test part."""
    res = fit(warm_config(label, seed, quick), ds, split, evaluate=False)
    (r,) = evaluate_run(res, name=label)
    row = _base_row(ds, label, res.family, quick)
    row.update(
        {
            "protocol": r.protocol,
            "split": r.split,
            "part": r.part,
            "seed": r.seed,
            "metrics": dict(r.metrics),
            "n_eval_users": r.n_users,
            "eval_seconds": r.seconds,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_scope": "process so far",
            **fit_figures(res),
            "date": utc_now(),
            **per_user_keys(r),
        }
    )
    if progress:
        m = r.metrics
        print(
            f"[{SUITE}] {label}: ndcg@10 {m['ndcg@10']:.4f} recall@20 {m['recall@20']:.4f} "
            f"recall@50 {m['recall@50']:.4f} recall@100 {m['recall@100']:.4f} (train {res.seconds:.0f}s)",
            flush=True,
        )
    return [row]


def _cold_rows(ds, quick: bool, progress: bool, seed: int = 0) -> list[dict]:
    """Rows of the cold-start protocol for one training seed of the content-only model (the
    held-out items stay those of seed 0); the baselines, which do not train, only for seed 0."""
    train = dict(COLD_TRAIN, epochs=1) if quick else COLD_TRAIN
    train = dict(train, seed=seed)
    res = cold_start_eval(ds, 0.1, 0, COLD_PARAMS, train)
    split_desc = f"cold_items(fraction=0.1, seed=0, held_out={res['held_out_items']})"
    rows = []
    for label, family, key, params, protocol in (
        ("TwoTower-content-only", "two-tower", "model", res["params"], "cold-start-10pct"),
        ("Random", "random", "random", 0, "cold-start-10pct"),
        ("Popularity-from-content", "popularity", "content_popularity", 0, "cold-start-10pct"),
        ("Popularity-oracle-within-held-out", "popularity", "popularity", 0, "cold-start-10pct"),
        (
            "TwoTower-content-only",
            "two-tower",
            "model_all_items",
            res["params"],
            "cold-start-10pct-all-items",
        ),
        ("Random", "random", "random_all_items", 0, "cold-start-10pct-all-items"),
        (
            "Popularity-from-content",
            "popularity",
            "content_popularity_all_items",
            0,
            "cold-start-10pct-all-items",
        ),
    ):
        if seed != 0 and family != "two-tower":
            continue
        row = _base_row(ds, label, family, quick)
        row.update(
            {
                "protocol": protocol,
                "split": split_desc,
                "part": "held-out items",
                "seed": seed,
                "metrics": res[key],
                "n_eval_users": res["eval_users"],
                "train_seconds": res["train_seconds"] if family == "two-tower" else 0.0,
                "eval_seconds": res["eval_seconds"] if family == "two-tower" else 0.0,
                "peak_rss_mb": peak_rss_mb(),
                "peak_rss_scope": "process so far",
                "params": params,
                "config": {
                    "model": {"name": "two-tower", "params": COLD_PARAMS},
                    "train": train,
                    "objective": {"name": "in-batch-softmax", "params": {"logq": True}},
                }
                if family == "two-tower"
                else {
                    "note": "random: exact expectation; Popularity-from-content: ridge on text vectors "
                    f"(strength {res['ridge_strength']}) fitted on warm items' log(1+count), warm items "
                    "keep real counts among all items; oracle: leave-one-user-out counts of held-out "
                    "interactions (not available to a cold-start system)"
                },
                "epochs_run": res["epochs_run"] if family == "two-tower" else None,
                "n_interactions": res["held_out_interactions"],
                "mean_candidates": res["n_candidates_within"] if protocol == "cold-start-10pct" else None,
                "date": utc_now(),
            }
        )
        rows.append(row)
    if progress:
        print(
            f"[{SUITE}] cold start HR@50 within held-out: content-only {res['model']['hr@50']:.4f}, random "
            f"{res['random']['hr@50']:.4f}, content popularity {res['content_popularity']['hr@50']:.4f}, "
            f"oracle popularity {res['popularity']['hr@50']:.4f}; among all "
            f"items: content-only {res['model_all_items']['hr@50']:.4f}, random "
            f"{res['random_all_items']['hr@50']:.4f}",
            flush=True,
        )
    return rows


def run_retrieval_suite(
    quick: bool = False,
    data_root=None,
    progress: bool = True,
    models=None,
    isolate=None,
    threads: int | None = 1,
    seeds: tuple[int, ...] = (0,),
) -> list[dict]:
    """Rows of the retrieval-ml100k suite (warm full ranking for each entry + the cold-start
    protocol). `models`: labels of ENTRIES and/or "cold-start"; default all. `seeds`: training
    seeds of the trained warm models (the split stays seed 0); with two or more, mean +- std
    ``aggregate`` rows are added (closed-form EASE and the untrained cold-start baselines run
    once; the content-only model once per seed on the same held-out items)."""
    wanted = list(ENTRIES) + ["cold-start"] if models is None else list(models)
    unknown = set(wanted) - set(ENTRIES) - {"cold-start"}
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; valid: {', '.join([*ENTRIES, 'cold-start'])}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        cfg = warm_config("EASE", data_root=data_root)  # every entry reads the same data and split
        ds = load_data(cfg.data)
        split = load_split(cfg.split, ds)
        rows: list[dict] = []
        for label in wanted:
            if label == "cold-start":
                for seed in seeds:
                    rows += _cold_rows(ds, quick, progress, seed)
                continue
            trained = bool(ENTRIES[label][3])
            for seed in seeds if trained else seeds[:1]:
                rows += _warm_rows(label, ds, split, quick, progress, seed)
        if len(seeds) > 1:
            rows += aggregate_seeds(rows)
        return rows
    finally:
        torch.set_num_threads(before)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--out", default=None, help="JSON rows; with --models, rows of other models there are kept"
    )
    p.add_argument("--models", nargs="*", default=None, help=f"subset of {[*ENTRIES, 'cold-start']}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seeds (mean +- std rows)")
    a = p.parse_args(argv)
    rows = run_retrieval_suite(a.quick, models=a.models, threads=a.threads, seeds=tuple(a.seeds))
    if a.out:
        if a.models is not None:
            rerun = set(a.models)
            cold = "cold-start" in rerun
            rows = merged_with_file(
                rows,
                a.out,
                lambda r: r["model"] in rerun or (cold and r["protocol"].startswith("cold-start")),
            )
        atomic_write_text(a.out, json.dumps(rows, indent=1) + "\n")
        print(f"wrote {len(rows)} rows to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
