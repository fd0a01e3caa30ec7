"""A Result names its protocol, split, K values, dataset and seed beside every number."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class Result:
    """Mean metrics of one model on one part of a split under one protocol.

    `per_user` (optional): metric name -> float64 [n_users], one value per evaluated user, in the
    order of `users` (int64 [n_users] dataset indices), for confidence intervals and paired tests
    (:mod:`recfunnel.eval.stats`). Neither is part of :meth:`to_dict` unless asked for, so the JSON
    of a Result reads as before."""

    model: str
    dataset: str
    protocol: str  # "full" (all items, seen masked) or "sampled-99" (target vs 99 fixed negatives)
    split: str
    part: str  # "valid" or "test"
    ks: tuple[int, ...]
    seed: int
    n_users: int
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    per_user: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    users: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self, per_user: bool = False) -> dict:
        """The fields as JSON-ready values; `per_user`: with the per-user vectors and users as lists."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("per_user", "users")}
        d["ks"] = list(self.ks)
        d["metrics"] = dict(self.metrics)
        if per_user and self.per_user is not None:
            d["per_user"] = {k: np.asarray(v).tolist() for k, v in self.per_user.items()}
            d["users"] = None if self.users is None else np.asarray(self.users).tolist()
        return d

    def line(self, keys: tuple[str, ...] = ("hr", "ndcg")) -> str:
        parts = [f"{k}@{K}={self.metrics[f'{k}@{K}']:.4f}" for k in keys for K in self.ks]
        return f"{self.model} [{self.dataset}, {self.protocol}, {self.split}/{self.part}] " + " ".join(parts)
