"""Objectives: which batches a model is trained on and which loss applies (apart from models).

An objective yields dict batches of tensors for an epoch, built by tensor ops on
pre-materialised index arrays, and computes the loss of a model on one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.data.dataset import Interactions
from recfunnel.data.sampling import PositiveSet, sample_negatives
from recfunnel.models.base import Regularised


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """One generator per (seed, epoch): an epoch draws the same negatives and order whether or
    not training was interrupted and resumed before it."""
    return np.random.default_rng([seed, epoch])


class Objective(Protocol):
    name: ClassVar[str]

    def samples_per_epoch(self) -> int: ...

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]: ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


def _slices(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


class PointwiseBCE:
    """Binary cross-entropy on each positive and `k` uniform negatives (He et al. 2017, K=4).

    Negatives are redrawn every epoch from items the user has no training interaction with."""

    name: ClassVar[str] = "bce"

    def __init__(self, train: Interactions, n_users: int, n_items: int, k: int = 4) -> None:
        self.users = train.user
        self.items = train.item
        self.k = k
        self.positives = PositiveSet(train.user, train.item, n_users, n_items)

    def samples_per_epoch(self) -> int:
        return len(self.users) * (1 + self.k)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        negs = sample_negatives(self.users, self.k, self.positives, rng)
        users = np.concatenate([self.users, np.repeat(self.users, self.k)])
        items = np.concatenate([self.items, negs.reshape(-1)])
        labels = np.concatenate([np.ones(len(self.users), np.float32), np.zeros(negs.size, np.float32)])
        perm = rng.permutation(len(users))
        u = torch.from_numpy(users[perm])
        i = torch.from_numpy(items[perm])
        y = torch.from_numpy(labels[perm])
        for s in _slices(len(u), batch_size):
            yield {"users": u[s], "items": i[s], "labels": y[s]}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model.score(batch["users"], batch["items"].unsqueeze(1)).squeeze(1)
        return F.binary_cross_entropy_with_logits(logits, batch["labels"])


class PairwiseBPR:
    """Bayesian Personalised Ranking (Rendle et al. 2009): -log sigma(x_ui - x_uj) per positive
    with one uniform negative j, plus `reg` times the squared norm of the rows used (the
    model's `regulariser(batch)` when it has one)."""

    name: ClassVar[str] = "bpr"

    def __init__(self, train: Interactions, n_users: int, n_items: int, reg: float = 0.0) -> None:
        self.users = train.user
        self.items = train.item
        self.reg = reg
        self.positives = PositiveSet(train.user, train.item, n_users, n_items)

    def samples_per_epoch(self) -> int:
        return len(self.users)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        perm = rng.permutation(len(self.users))
        users = self.users[perm]
        negs = sample_negatives(users, 1, self.positives, rng)[:, 0]
        u = torch.from_numpy(users)
        i = torch.from_numpy(self.items[perm])
        j = torch.from_numpy(negs)
        for s in _slices(len(u), batch_size):
            yield {"users": u[s], "items": i[s], "negatives": j[s]}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = torch.stack([batch["items"], batch["negatives"]], dim=1)
        x = model.score(batch["users"], items)
        loss = -F.logsigmoid(x[:, 0] - x[:, 1]).mean()
        if self.reg > 0 and isinstance(model, Regularised):
            loss = loss + self.reg * model.regulariser(batch["users"], items)
        return loss
