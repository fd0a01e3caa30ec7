"""The funnel's filter stage and optional diversification.

:class:`Filters` decides which candidates may be shown: never an item the request has seen (unless
``exclude_seen=False``), never one the caller excludes, only available items when an availability
set is given, and only what every business rule keeps. A business rule is a plain callable::

    def rule(users, items, scores):  # int64 [B] (-1: anonymous), int64 [B, C] (-1: empty), float [B, C]
        return keep                   # bool [B, C]

:func:`mmr` re-orders candidates by Maximal Marginal Relevance (Carbonell & Goldstein, SIGIR 1998):
each next item maximises ``lambda * rel(i) - (1 - lambda) * max_{j chosen} cos(v_i, v_j)``, relevance
min-max scaled to [0, 1] per request so lambda weighs comparable terms. ``lambda = 1`` is pure
relevance order; lower values trade relevance for dissimilar items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from recfunnel.funnel.candidates import is_member
from recfunnel.funnel.request import Requests

__all__ = ["BusinessRule", "Filters", "mmr"]

#: (users [B], items [B, C], scores [B, C]) -> keep-mask bool [B, C]
BusinessRule = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]


@dataclass(frozen=True)
class Filters:
    """Which candidates survive.

    Args:
        exclude_seen: drop items the request has seen (stored history and recent items).
        available: the items that may be shown: a bool mask [n_items] or a collection of item
            indices; None: every item.
        rules: business rules, each a callable (users, items, scores) -> keep-mask [B, C].
    """

    exclude_seen: bool = True
    available: Any = None
    rules: Sequence[BusinessRule] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.available is not None:
            a = np.asarray(
                list(self.available) if isinstance(self.available, (set, frozenset)) else self.available
            )
            if a.dtype != bool:
                a = np.unique(a.astype(np.int64))
            object.__setattr__(self, "available", a)
        object.__setattr__(self, "rules", tuple(self.rules))

    def _available(self, items: np.ndarray) -> np.ndarray:
        a = self.available
        if a is None:
            return np.ones(items.shape, bool)
        if a.dtype == bool:
            inside = (items >= 0) & (items < len(a))
            return inside & a[np.clip(items, 0, max(len(a) - 1, 0))] if len(a) else inside
        return np.isin(items, a)

    def keep(self, requests: Requests, items: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """bool [B, C]: the candidates `items` [B, C] (-1 empty) of `requests` that may be shown."""
        items = np.asarray(items, np.int64)
        keep = (items >= 0) & ~is_member(requests.blocked(self.exclude_seen), items)
        keep &= self._available(items)
        for rule in self.rules:
            out = np.asarray(rule(requests.users, items, scores))
            if out.shape != items.shape:
                raise ValueError(
                    f"business rule {getattr(rule, '__name__', rule)!r} returned shape {out.shape}; "
                    f"it must return a keep-mask of the candidates' shape {items.shape}"
                )
            keep &= out.astype(bool)
        return keep


def _scaled(relevance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row min-max scaling of the valid entries to [0, 1] (float64: distinct float32 scores
    stay distinct); 1 where a row's valid scores are all equal."""
    rel = np.where(valid, relevance, 0.0).astype(np.float64)
    lo = np.min(np.where(valid, rel, np.inf), axis=1, keepdims=True)
    hi = np.max(np.where(valid, rel, -np.inf), axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(valid, np.where(hi > lo, (rel - lo) / span, 1.0), 0.0)


def mmr(items: np.ndarray, relevance: np.ndarray, item_vectors: Any, k: int, lam: float) -> np.ndarray:
    """Maximal Marginal Relevance order of each row's candidates.

    Args:
        items: int64 [B, C] candidate items (-1: empty slot).
        relevance: float [B, C] scores (-inf / NaN slots are never chosen).
        item_vectors: [n_items, d] vectors whose cosine measures similarity.
        k: items to choose per row.
        lam: lambda in [0, 1]; 1 = pure relevance order.
    Returns:
        int64 [B, k] slot indices into the rows (best first), -1 where a row runs out.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"MMR lambda must be in [0, 1], got {lam}")
    items = np.asarray(items, np.int64)
    relevance = np.asarray(relevance, np.float64)
    b, c = items.shape
    valid = (items >= 0) & np.isfinite(relevance)
    # visit slots by relevance (stable), so ties resolve as a relevance sort would
    by_rel = np.argsort(np.where(valid, -relevance, np.inf), axis=1, kind="stable")
    items = np.take_along_axis(items, by_rel, 1)
    valid = np.take_along_axis(valid, by_rel, 1)
    rel = _scaled(np.take_along_axis(relevance, by_rel, 1), valid)
    v = torch.nn.functional.normalize(torch.as_tensor(item_vectors).detach().double().cpu(), dim=1)
    cand = v[torch.from_numpy(np.clip(items, 0, None))]  # [B, C, d]; similarities per pick, not [B, C, C]
    out = np.full((b, k), -1, np.int64)
    left = valid.copy()
    most_similar = np.zeros((b, c))  # max similarity to what is chosen; 0 before the first pick
    rows = np.arange(b)
    for t in range(min(k, c)):
        gain = lam * rel - (1.0 - lam) * most_similar if lam < 1.0 else rel.copy()
        gain[~left] = -np.inf
        j = np.argmax(gain, axis=1)
        ok = left[rows, j]
        out[:, t] = np.where(ok, by_rel[rows, j], -1)
        left[rows[ok], j[ok]] = False
        if lam < 1.0 and ok.any():
            picked = cand[torch.from_numpy(rows[ok]), torch.from_numpy(j[ok])]  # [R, d]
            sim = torch.bmm(cand[torch.from_numpy(rows[ok])], picked.unsqueeze(2)).squeeze(2).numpy()
            most_similar[ok] = np.maximum(most_similar[ok], sim)
    return out
