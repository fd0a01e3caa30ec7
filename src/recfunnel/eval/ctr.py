"""Pointwise evaluation of CTR rankers: AUC, logloss and GAUC of a model's scores on a labelled part."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from recfunnel.data.fields import CTRPart, FieldBatch
from recfunnel.eval.metrics import auc, gauc, logloss
from recfunnel.eval.result import Result
from recfunnel.models.ctr.base import FieldScorer
from recfunnel.nn.device import module_device

PROTOCOL = "pointwise"


@torch.no_grad()
def predict_logits(model: FieldScorer, fields: FieldBatch, batch_size: int = 16384) -> np.ndarray:
    """Logits float64 [n] for every row of `fields`, in batches, in eval mode."""
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    n, device = len(fields), module_device(model)
    out = [
        model.score_fields(fields.take(slice(s, s + batch_size)).to(device)).cpu()
        for s in range(0, n, batch_size)
    ]
    if was and hasattr(model, "train"):
        model.train()
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def ctr_metrics(part: CTRPart, logits: np.ndarray) -> dict[str, float]:
    """auc, logloss, gauc (per-user AUC weighted by impressions) and gauc_users_skipped (users
    with a single class, left out of GAUC; GAUC is NaN when every user has one class, as with one
    held-out row per user)."""
    y = part.labels.numpy().astype(np.int64)
    probs = 1.0 / (1.0 + np.exp(-logits))
    try:
        g, skipped = gauc(part.users, y, logits)
    except ValueError:  # no user with both classes
        g, skipped = float("nan"), int(len(np.unique(part.users)))
    return {"auc": auc(y, logits), "logloss": logloss(y, probs), "gauc": g, "gauc_users_skipped": skipped}


def evaluate_ctr(
    model: FieldScorer,
    part: CTRPart,
    *,
    name: str = "",
    dataset: str = "",
    split: str = "",
    part_name: str = "test",
    seed: int = 0,
    batch_size: int = 16384,
) -> Result:
    """Score every row of `part` and report protocol "pointwise" with auc, logloss, gauc and
    gauc_users_skipped. `n_users` is the number of distinct users in the part."""
    t0 = time.perf_counter()
    metrics = ctr_metrics(part, predict_logits(model, part.fields, batch_size))
    return Result(
        name or getattr(model, "family", type(model).__name__),
        dataset,
        PROTOCOL,
        split,
        part_name,
        (),
        seed,
        int(len(np.unique(part.users))),
        metrics,
        time.perf_counter() - t0,
    )


def ctr_validator(part: CTRPart) -> Callable[[torch.nn.Module], dict[str, float]]:
    """A Trainer `validate` callback: {"auc", "logloss"} on `part` (monitor "auc")."""
    y = part.labels.numpy().astype(np.int64)

    def validate(model: torch.nn.Module) -> dict[str, float]:
        logits = predict_logits(model, part.fields)  # type: ignore[arg-type]
        return {"auc": auc(y, logits), "logloss": logloss(y, 1.0 / (1.0 + np.exp(-logits)))}

    return validate


def ctr_line(result: Result) -> str:
    m = result.metrics
    return (
        f"{result.model} [{result.dataset}, {result.protocol}, {result.split}/{result.part}] "
        f"auc={m['auc']:.4f} logloss={m['logloss']:.4f} gauc={m['gauc']:.4f}"
    )
