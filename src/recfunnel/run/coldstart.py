"""Cold-start evaluation: items never seen in training, recommended from their content alone.

`cold_start_eval` holds out a seeded `fraction` of the items entirely, trains a content-only
two-tower (``item_ids=False``: genres, year, text; ``item_bias``: a per-item score term from the
same content) on the rest, and ranks each interaction with a held-out item (1) among the held-out
items only and (2) among every item the user has no training interaction with. Baselines: a random
ranking (exact expectation), *popularity predicted from content* (:func:`content_popularity`: the
popularity a cold-start system can know) and the held-out items' *oracle* popularity
(leave-one-user-out counts: data a cold-start system would not have).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from recfunnel.run.towers import build_two_tower
from recfunnel.train.registry import build_objective
from recfunnel.train.trainer import TrainConfig, Trainer, seed_everything

__all__ = ["COLD_PARAMS", "COLD_TRAIN", "cold_start_eval", "content_popularity"]

# content only; a content bias term lets cold items carry the popularity their content predicts
COLD_PARAMS = {
    "dim": 64,
    "emb_dim": 32,
    "hidden": (128,),
    "history_len": 20,
    "item_ids": False,
    "use_text": True,
    "item_bias": True,
}
COLD_TRAIN = {"epochs": 10, "batch_size": 1024, "lr": 3e-3, "optimizer": "adam", "patience": 0}


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
    model = build_two_tower(ds, None, params or COLD_PARAMS, train_rows=train_rows, text_vectors=text_vectors)
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
        params=int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        epochs_run=len(report.history),
    )
    return out
