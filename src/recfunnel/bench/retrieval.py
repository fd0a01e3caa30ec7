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

Rows follow the bench row contract of :mod:`recfunnel.bench.suites` (suite, model, dataset, protocol,
split, seed, metrics, train_seconds, eval_seconds, peak_rss_mb, params, config, ...).

Run: ``python -m recfunnel.bench.retrieval [--quick] [--out bench/results/retrieval-ml100k.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from recfunnel.atomic import atomic_write_text
from recfunnel.bench.suites import param_count, peak_rss_mb, utc_now

__all__ = ["ENTRIES", "cold_start_eval", "run_retrieval_suite"]

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
    # as in suites._ncf_entries (MF-BPR): chosen there on the valid part
    "MF-BPR": (
        "mf",
        {"factors": 64, "init_std": 0.01},
        {"name": "bpr", "params": {"reg": 3e-3}},
        {"epochs": 40, "batch_size": 1024, "lr": 0.003, "optimizer": "adam", "patience": 0},
    ),
    "EASE": ("ease", {"l2": 250.0}, {}, {}),
}
# content only; a content bias term lets cold items carry the popularity their content predicts
COLD_PARAMS = dict(_TT, item_ids=False, use_text=True, item_bias=True)
COLD_TRAIN = {"epochs": 10, "batch_size": 1024, "lr": 3e-3, "optimizer": "adam", "patience": 0}


def _register() -> None:
    import recfunnel.models.item2vec  # noqa: F401  (registers "item2vec")
    import recfunnel.models.towers  # noqa: F401  (registers "two-tower")
    import recfunnel.train.retrieval_objectives  # noqa: F401  (adds the objectives)


def _data(data_root):
    from recfunnel.pipeline import DataConfig, SplitConfig, load_data, load_split

    ds = load_data(DataConfig(dataset="ml-100k", data_root=data_root))
    split = load_split(SplitConfig(method="leave_one_out", seed=0, eval_negatives=99), ds)
    return ds, split


def _base_row(ds, label: str, family: str, quick: bool) -> dict[str, Any]:
    from recfunnel.bench.suites import machine_info

    return {
        "suite": SUITE,
        "model": label,
        "family": family,
        "dataset": ds.name,
        "quick": quick,
        "machine": machine_info(),
    }


def _warm_rows(label: str, ds, split, quick: bool, progress: bool, seed: int = 0) -> list[dict]:
    from recfunnel.eval.protocols import evaluate
    from recfunnel.models.towers import TwoTower
    from recfunnel.pipeline import ObjectiveSection, train_model
    from recfunnel.train.trainer import TrainConfig, seed_everything

    family, params, objective, train = ENTRIES[label]
    if quick and train:
        train = dict(train, epochs=1 if family != "mf" else 2, patience=0)
    train_cfg = TrainConfig(**dict(train, seed=seed, progress=False))
    obj = ObjectiveSection(**objective)
    t0 = time.perf_counter()
    seed_everything(train_cfg.seed)  # the tower weights are initialised here, before train_model
    init = TwoTower.from_dataset(ds, split, params) if family == "two-tower" else None
    model, report = train_model(family, params, ds, split, train_cfg, obj, "full", init=init)
    train_seconds = time.perf_counter() - t0
    res = evaluate(model, ds, split, "full", "test", KS, name=label, seed=train_cfg.seed)
    hist = report.history if report is not None else []
    row = _base_row(ds, label, family, quick)
    row.update(
        {
            "protocol": res.protocol,
            "split": res.split,
            "part": res.part,
            "seed": res.seed,
            "metrics": dict(res.metrics),
            "n_eval_users": res.n_users,
            "train_seconds": train_seconds,
            "eval_seconds": res.seconds,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_scope": "process so far",
            "params": param_count(model),
            "config": {
                "model": {"name": family, "params": params},
                "objective": obj.model_dump(mode="json"),
                "train": train_cfg.model_dump(mode="json", exclude={"progress"}),
            },
            "epochs_run": len(hist) if hist else None,
            "best_epoch": report.best_epoch if hist else None,
            "valid_history": [
                {
                    "epoch": h["epoch"],
                    "loss": h["loss"],
                    **{f"valid_{k}": v for k, v in h.get("valid", {}).items()},
                }
                for h in hist
            ],
            "date": utc_now(),
        }
    )
    if progress:
        m = res.metrics
        print(
            f"[{SUITE}] {label}: ndcg@10 {m['ndcg@10']:.4f} recall@20 {m['recall@20']:.4f} "
            f"recall@50 {m['recall@50']:.4f} recall@100 {m['recall@100']:.4f} (train {train_seconds:.0f}s)",
            flush=True,
        )
    return [row]


def _interaction_ranks(scores: torch.Tensor, rel: torch.Tensor, allowed: torch.Tensor, chunk: int = 64):
    """0-based rank of every relevant (user, candidate) pair among the user's allowed candidates
    that are not relevant (the user's other positives are masked, as in full ranking; ties
    pessimistic) and the number of candidates it competes with -> (ranks [n], n_candidates [n])."""
    ranks, n_cand = [], []
    for s in range(0, len(scores), chunk):
        sc, rl, al = scores[s : s + chunk], rel[s : s + chunk], allowed[s : s + chunk]
        others = al & ~rl  # [U, N]
        u, j = rl.nonzero(as_tuple=True)
        target = sc[u, j].unsqueeze(1)  # [n, 1]
        ranks.append(((sc[u] >= target) & others[u]).sum(1))
        n_cand.append(others[u].sum(1) + 1)
    return torch.cat(ranks), torch.cat(n_cand)


def _metrics_from_ranks(ranks: torch.Tensor, k: int) -> dict[str, float]:
    r = ranks.double()
    return {
        f"hr@{k}": float((r < k).double().mean()),
        "hr@10": float((r < 10).double().mean()),
        "ndcg@10": float(torch.where(r < 10, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r)).mean()),
    }


def _random_metrics(n_cand: torch.Tensor, k: int) -> dict[str, float]:
    """Exact expectations under a uniformly random ranking of n candidates."""
    n = n_cand.double()
    ndcg = torch.zeros_like(n)
    for r in range(10):
        ndcg += torch.where(n > r, 1.0 / n, torch.zeros_like(n)) / np.log2(r + 2.0)
    return {
        f"hr@{k}": float(torch.clamp(k / n, max=1.0).mean()),
        "hr@10": float(torch.clamp(10 / n, max=1.0).mean()),
        "ndcg@10": float(ndcg.mean()),
    }


def content_popularity(
    text_vectors: np.ndarray, counts: np.ndarray, warm: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Predicted log(1 + count) of every item from its content vector: ridge regression (with an
    intercept) fitted on the `warm` items' training `counts`; the ridge strength is the one of
    (0.1, 1, 10, 100, 1000) with the lowest squared error on a seeded 10% of the warm items, then
    refitted on all of them. -> (predictions [n_items], chosen strength)."""
    x = np.hstack([np.asarray(text_vectors, np.float64), np.ones((len(text_vectors), 1))])
    y = np.log1p(np.asarray(counts, np.float64))
    warm_idx = np.flatnonzero(warm)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(warm_idx), bool)
    is_val[rng.choice(len(warm_idx), size=max(1, len(warm_idx) // 10), replace=False)] = True
    fit_idx, val_idx = warm_idx[~is_val], warm_idx[is_val]

    def solve(rows: np.ndarray, lam: float) -> np.ndarray:
        a = x[rows]
        reg = lam * np.eye(x.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not shrunk
        return np.linalg.solve(a.T @ a + reg, a.T @ y[rows])

    errors = {
        lam: float(np.mean((x[val_idx] @ solve(fit_idx, lam) - y[val_idx]) ** 2))
        for lam in (0.1, 1.0, 10.0, 100.0, 1000.0)
    }
    best = min(errors, key=errors.__getitem__)
    return x @ solve(warm_idx, best), best


def cold_start_eval(
    ds,
    fraction: float = 0.1,
    seed: int = 0,
    params: dict | None = None,
    train: dict | None = None,
    k: int = 50,
    text_vectors: np.ndarray | None = None,
) -> dict[str, Any]:
    """Hold out `fraction` of the items (seeded), train a content-only two-tower on the rest, and
    rank, for each user with held-out interactions, the held-out items only.

    Returns {"model": metrics, "random": metrics, "content_popularity": metrics, "popularity":
    metrics (oracle), and the same with ``_all_items`` for the whole-catalogue ranking, ...};
    metrics are HR@k, HR@10, NDCG@10 (random: exact expectations)."""
    from recfunnel.models.towers import TwoTower
    from recfunnel.train.objectives import build_objective
    from recfunnel.train.trainer import TrainConfig, Trainer, seed_everything

    _register()
    rng = np.random.default_rng(seed)
    n_items = ds.n_items
    held = np.sort(rng.choice(n_items, size=max(1, int(round(fraction * n_items))), replace=False))
    is_held = np.zeros(n_items, bool)
    is_held[held] = True
    ints = ds.interactions
    train_rows = np.flatnonzero(~is_held[ints.item])
    test_rows = np.flatnonzero(is_held[ints.item])
    tcfg = TrainConfig(**dict(train or COLD_TRAIN, progress=False))
    if text_vectors is None:
        from recfunnel.text import encode_texts, item_texts

        text_vectors = encode_texts(item_texts(ds))
    seed_everything(tcfg.seed)
    t0 = time.perf_counter()
    model = TwoTower.from_dataset(
        ds, None, params or COLD_PARAMS, train_rows=train_rows, text_vectors=text_vectors
    )
    obj = build_objective("in-batch-softmax", ints.take(train_rows), ds.n_users, n_items, logq=True)
    report = Trainer(tcfg).fit(model, obj)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    test = ints.take(test_rows).matrix(ds.n_users, n_items).tocsr()
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    rel_all = torch.from_numpy(test[users].toarray() > 0)  # [U, n_items], only held-out columns
    seen = torch.from_numpy(ints.take(train_rows).matrix(ds.n_users, n_items)[users].toarray() > 0)
    held_t = torch.from_numpy(held)
    model.eval()
    with torch.no_grad():
        scores = model.user_vectors(torch.from_numpy(users)) @ model.item_vectors().T  # [U, n_items]
    within = torch.zeros(n_items, dtype=torch.bool)
    within[held_t] = True
    # (1) within the held-out items: each held-out interaction ranked among the held-out items
    rel = rel_all[:, held_t]
    allowed = torch.ones_like(rel)
    ranks, n_cand = _interaction_ranks(scores[:, held_t], rel, allowed)
    out: dict[str, Any] = {"model": _metrics_from_ranks(ranks, k)}
    eval_seconds = time.perf_counter() - t1
    pop = rel.sum(0, keepdim=True).float() - rel.float()  # leave-one-user-out popularity
    out["popularity"] = _metrics_from_ranks(_interaction_ranks(pop.expand_as(rel), rel, allowed)[0], k)
    out["random"] = _random_metrics(n_cand, k)
    counts = np.bincount(ints.item[train_rows], minlength=n_items)
    predicted, strength = content_popularity(text_vectors, counts, ~is_held, seed)
    pred_t = torch.from_numpy(predicted).float()
    out["content_popularity"] = _metrics_from_ranks(
        _interaction_ranks(pred_t[held_t].expand_as(rel), rel, allowed)[0], k
    )
    # (2) the whole catalogue: each held-out interaction ranked among every item the user has no
    # training interaction with (cold items must compete with warm ones)
    allowed_all = ~seen
    ranks_all, n_all = _interaction_ranks(scores, rel_all, allowed_all)
    out["model_all_items"] = _metrics_from_ranks(ranks_all, k)
    out["random_all_items"] = _random_metrics(n_all, k)
    # warm items keep their real training counts, cold items get the content prediction
    pop_all = torch.from_numpy(np.where(is_held, predicted, np.log1p(counts))).float()
    out["content_popularity_all_items"] = _metrics_from_ranks(
        _interaction_ranks(pop_all.expand_as(rel_all), rel_all, allowed_all)[0], k
    )
    out["ridge_strength"] = strength
    out.update(
        held_out_items=int(len(held)),
        n_candidates_within=float(n_cand.double().mean()),
        eval_users=int(len(users)),
        held_out_interactions=int(len(test_rows)),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        params=param_count(model),
        epochs_run=len(report.history),
    )
    return out


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
    _register()
    wanted = list(ENTRIES) + ["cold-start"] if models is None else list(models)
    unknown = set(wanted) - set(ENTRIES) - {"cold-start"}
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; valid: {', '.join([*ENTRIES, 'cold-start'])}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        ds, split = _data(data_root)
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
            from recfunnel.bench.suites import aggregate_seeds

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
            from recfunnel.bench.suites import merged_with_file

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
