"""Evaluation protocols: full ranking over all items (seen items masked) and sampled ranking.

Full ranking scores users in batches, never a dense users x items matrix for the whole
dataset. Sampled ranking ranks each held-out item against the split's saved negatives.
A model on a GPU is handed its inputs there; its scores come back to the CPU for the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.sequences import split_histories
from recfunnel.data.splits import Split
from recfunnel.eval.guardrails import guardrail_metrics, item_feature_vectors, item_popularity
from recfunnel.eval.metrics import ranking_metrics, ranks_of_relevant
from recfunnel.eval.result import Result
from recfunnel.models.base import Factorised, FullScorer, HistoryAware, Scorer
from recfunnel.nn.device import module_device

DEFAULT_KS = (5, 10, 20)
#: metrics kept per user (at the headline K) when asked: those of paired tests and intervals
PER_USER_METRICS = ("ndcg", "recall")


def headline_k(ks: Sequence[int]) -> int:
    """The cut-off of per-user vectors and guardrails: 10 where evaluated, else the largest K."""
    return 10 if 10 in ks else max(ks)


def _keep_per_user(store: dict[str, list[np.ndarray]], per_user: dict[str, torch.Tensor], k: int) -> None:
    for name in PER_USER_METRICS:
        store.setdefault(f"{name}@{k}", []).append(per_user[f"{name}@{k}"].cpu().numpy())


def _unvisit(values: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Per-user values computed in `order` (users[order]) put back in the users' own order."""
    if order is None:
        return values
    out = np.empty_like(values)
    out[order] = values
    return out


def _diversity_vectors(model: object, dataset: Dataset) -> Any:
    """Genre (list-column) multi-hot vectors of the item table, else the model's item vectors,
    else None."""
    vectors = item_feature_vectors(dataset.item_features)
    if vectors is None and isinstance(model, Factorised):
        vectors = model.item_vectors().detach().float().cpu()
    return vectors


def _padded_rows(m: sp.csr_matrix, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices of CSR rows as a [len(rows), R] tensor padded with -1, and the counts."""
    sub = m[rows]
    counts = np.diff(sub.indptr)
    width = max(1, int(counts.max(initial=0)))
    out = np.full((len(rows), width), -1, dtype=np.int64)
    r = np.repeat(np.arange(len(rows)), counts)
    c = np.arange(len(sub.indices)) - np.repeat(sub.indptr[:-1], counts)
    out[r, c] = sub.indices
    return torch.from_numpy(out), torch.from_numpy(counts.astype(np.int64))


def _masks(dataset: Dataset, split: Split, part: str) -> sp.csr_matrix:
    """The binary user x item matrix of the parts seen before `part` (train; train + valid for
    test), from their user and item columns alone (not a copy of every column of those rows)."""
    parts = ["train"] if part == "valid" else ["train", "valid"]
    rows = np.concatenate([split.rows(p) for p in parts])
    ints = dataset.interactions
    shape = (dataset.n_users, dataset.n_items)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (ints.user[rows], ints.item[rows])), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0  # as Interactions.matrix("binary"): one per pair
    return m


@contextmanager
def _history_for(model: object, dataset: Dataset, split: Split, part: str) -> Iterator[None]:
    """Sequence models (HistoryAware) read each user's history up to the evaluated part: the train
    items for valid, train + valid for test (the SASRec protocol; never the item being predicted).
    A history the model held before is restored afterwards."""
    if not isinstance(model, HistoryAware):
        yield
        return
    before = model.get_history()
    model.set_history(*split_histories(dataset, split, ["train"] if part == "valid" else ["train", "valid"]))
    try:
        yield
    finally:
        if before is not None:
            model.set_history(*before)


@torch.no_grad()
def evaluate_full(
    model: FullScorer,
    dataset: Dataset,
    split: Split,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 512,
    name: str = "",
    seed: int = 0,
    mask_seen: bool = True,
    *,
    guardrails: bool = False,
    per_user: bool = False,
    item_vectors: Any = None,
) -> Result:
    """Rank every item for each user of `part`; items the user had in train (and valid, when
    `part` is test) are masked. Relevant items: the user's interactions in `part`.

    `mask_seen=False` ranks every item, seen ones included (protocol "full-unmasked"): session
    data, where the next event is often an item viewed earlier in the same session (62% of the
    last events of the Diginetica sample), is evaluated this way (GRU4Rec, SR-GNN).

    `guardrails`: add the beyond-accuracy metrics of each user's top-K list at the headline K
    (:func:`headline_k`; :mod:`recfunnel.eval.guardrails`), popularity from the train part;
    diversity over `item_vectors` [n_items, d] when given, else the item table's genres, else the
    model's item vectors (left out when there are none). Costs one top-K per batch.
    `per_user`: keep NDCG and recall at the headline K per user (``Result.per_user``)."""
    t0 = time.perf_counter()
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    target = split.part(dataset, part).matrix(dataset.n_users, dataset.n_items)
    mask = _masks(dataset, split, part)
    users = split.eval_users(dataset, part)
    sums: dict[str, float] = {}
    hk = headline_k(ks)
    kept: dict[str, list[np.ndarray]] = {}
    tops: list[np.ndarray] = []
    device = module_device(model)
    with _history_for(model, dataset, split, part):
        # a model may ask for its users in another order (sequence models: by history length, so
        # each batch pads to a similar length); sums do not care, per-user vectors are put back
        order = model.eval_order(users) if hasattr(model, "eval_order") else None
        visit = users if order is None else users[order]
        for start in range(0, len(visit), batch_size):
            ub = visit[start : start + batch_size]
            scores = model.score_all(torch.from_numpy(ub).to(device)).float().cpu()
            if mask_seen:
                mcols, _ = _padded_rows(mask, ub)
                valid = mcols >= 0
                rr = torch.arange(len(ub)).unsqueeze(1).expand_as(mcols)[valid]
                scores[rr, mcols[valid]] = float("-inf")
            rel, n_rel = _padded_rows(target, ub)
            user_metrics = ranking_metrics(ranks_of_relevant(scores, rel), n_rel, ks, n_items=scores.shape[1])
            for k, v in user_metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            if per_user:
                _keep_per_user(kept, user_metrics, hk)
            if guardrails:
                top = torch.topk(scores, min(hk, scores.shape[1]), dim=1)
                tops.append(torch.where(top.values > float("-inf"), top.indices, -1).cpu().numpy())
    metrics = {k: v / max(1, len(users)) for k, v in sums.items()}
    if guardrails and tops:  # before train mode is restored: a model's own item vectors in eval mode
        train = split.part(dataset, "train").matrix(dataset.n_users, dataset.n_items)
        vectors = item_vectors if item_vectors is not None else _diversity_vectors(model, dataset)
        n_train_users = int((np.diff(train.indptr) > 0).sum())
        metrics |= guardrail_metrics(
            np.concatenate(tops), item_popularity(train), max(1, n_train_users), vectors
        )
    if was_training and hasattr(model, "train"):
        model.train()
    return Result(
        name or getattr(model, "family", type(model).__name__),
        dataset.name,
        "full" if mask_seen else "full-unmasked",
        split.describe(),
        part,
        tuple(ks),
        seed,
        len(users),
        metrics,
        time.perf_counter() - t0,
        per_user={k: _unvisit(np.concatenate(v).astype(np.float64), order) for k, v in kept.items()}
        if per_user
        else None,
        users=np.asarray(users, dtype=np.int64) if per_user else None,
    )


@torch.no_grad()
def evaluate_sampled(
    model: Scorer,
    dataset: Dataset,
    split: Split,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    name: str = "",
    seed: int = 0,
    *,
    per_user: bool = False,
) -> Result:
    """Rank each user's held-out item (column 0) against the split's fixed negatives.

    Needs a split with one held-out item per user (leave-one-out or random_holdout) and
    negatives drawn by `Split.with_negatives`; the protocol is named "sampled-<n>".
    `per_user`: keep NDCG and recall at the headline K per user (``Result.per_user``)."""
    t0 = time.perf_counter()
    negs = split.negatives.get(part)
    if negs is None or len(negs) == 0:
        raise ValueError("this split carries no evaluation negatives; call split.with_negatives(dataset)")
    ints = split.part(dataset, part)
    order = np.argsort(ints.user, kind="stable")
    users, items = ints.user[order], ints.item[order]
    eval_users = split.eval_users(dataset, part)
    if len(users) != len(eval_users):
        raise ValueError("sampled evaluation needs exactly one held-out item per user (leave_one_out)")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    sums: dict[str, float] = {}
    kept: dict[str, list[np.ndarray]] = {}
    device = module_device(model)
    with _history_for(model, dataset, split, part):
        for start in range(0, len(users), batch_size):
            ub = torch.from_numpy(users[start : start + batch_size])
            cand = torch.from_numpy(
                np.concatenate(
                    [items[start : start + batch_size, None], negs[start : start + batch_size]], axis=1
                )
            )
            scores = model.score(ub.to(device), cand.to(device)).float().cpu()
            rel = torch.zeros(len(ub), 1, dtype=torch.long)
            user_metrics = ranking_metrics(
                ranks_of_relevant(scores, rel),
                torch.ones(len(ub), dtype=torch.long),
                ks,
                n_items=scores.shape[1],
            )
            for k, v in user_metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            if per_user:
                _keep_per_user(kept, user_metrics, headline_k(ks))
    if was_training and hasattr(model, "train"):
        model.train()
    metrics = {k: v / max(1, len(users)) for k, v in sums.items()}
    return Result(
        name or getattr(model, "family", type(model).__name__),
        dataset.name,
        f"sampled-{negs.shape[1]}",
        split.describe(),
        part,
        tuple(ks),
        seed,
        len(users),
        metrics,
        time.perf_counter() - t0,
        per_user={k: np.concatenate(v).astype(np.float64) for k, v in kept.items()} if per_user else None,
        users=np.asarray(users, dtype=np.int64) if per_user else None,
    )


def evaluate(
    model,
    dataset: Dataset,
    split: Split,
    protocol: str,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    name: str = "",
    seed: int = 0,
    *,
    guardrails: bool = False,
    per_user: bool = False,
) -> Result:
    """Dispatch on protocol name: "full", "full-unmasked" (seen items not masked) or "sampled".
    `guardrails` (full ranking only: sampled lists are not recommendations) and `per_user`: see
    :func:`evaluate_full`."""
    if protocol in ("full", "full-unmasked"):
        return evaluate_full(
            model,
            dataset,
            split,
            part,
            ks,
            name=name,
            seed=seed,
            mask_seen=protocol == "full",
            guardrails=guardrails,
            per_user=per_user,
        )
    if protocol.startswith("sampled"):
        return evaluate_sampled(model, dataset, split, part, ks, name=name, seed=seed, per_user=per_user)
    raise ValueError(f"unknown protocol {protocol!r}; valid: full, full-unmasked, sampled")
