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

#: (user, item) pair spaces up to this many pairs get a bit per pair for the membership test of
#: negative sampling (at most 32 MiB; ml-1m: 2.8 MB); larger ones keep the binary search over keys
BITMAP_MAX_PAIRS = 2**28
#: up to this many pairs, a byte per pair (at most 16 MiB; ml-100k: 1.6 MB): one gather a lookup
BYTEMAP_MAX_PAIRS = 2**24
#: draws tested for membership at once when an epoch's negatives are drawn (bounds the temporary
#: arrays of the test, not the draws: the same negatives whatever its value)
CONTAINS_ROWS = 1 << 20


class BitmapPositives(PositiveSet):
    """:class:`~recfunnel.data.sampling.PositiveSet` answering `contains` from a map of the
    user x item pairs (a byte per pair for small spaces, else a packed bit): the same answers, so
    the same negatives from the same generator, 20x faster than the binary search on ml-100k
    (sampling was a fifth of an MF-BPR epoch)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
        super().__init__(users, items, n_users, n_items)
        pairs = n_users * n_items
        self.packed = pairs > BYTEMAP_MAX_PAIRS
        if not self.packed:
            self.bits = np.zeros(pairs, dtype=bool)
            self.bits[self.keys] = True
            return
        byte, bit = self.keys >> 3, (self.keys & 7).astype(np.uint8)
        self.bits = np.zeros((pairs + 7) // 8, dtype=np.uint8)
        if len(byte):  # keys are sorted and distinct: OR within a byte is the sum of its bits
            where, first = np.unique(byte, return_index=True)
            self.bits[where] = np.add.reduceat(np.left_shift(np.uint8(1), bit), first)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        if not self.packed:
            return self.bits[keys]
        return ((self.bits[keys >> 3] >> (keys & 7).astype(np.uint8)) & 1).astype(bool)


def positive_set(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> PositiveSet:
    """The membership test for negative sampling: a bitmap where the pair space is small enough."""
    if n_users * n_items <= BITMAP_MAX_PAIRS:
        return BitmapPositives(users, items, n_users, n_items)
    return PositiveSet(users, items, n_users, n_items)


def _rejected(positives: PositiveSet, owner: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Positions of the draws `flat` whose (owner, draw) pair is a positive, ascending; tested
    :data:`CONTAINS_ROWS` draws at a time (a test builds three int64 arrays of its size: 480 MB
    for the 20M draws of an out-of-core epoch at once)."""
    step = CONTAINS_ROWS
    hits = [
        lo + np.flatnonzero(positives.contains(owner[lo : lo + step], flat[lo : lo + step]))
        for lo in range(0, len(flat), step)
    ]
    return np.concatenate(hits) if hits else np.empty(0, np.int64)


def draw_negatives(users: np.ndarray, k: int, positives: PositiveSet, rng: np.random.Generator) -> np.ndarray:
    """:func:`~recfunnel.data.sampling.sample_negatives` (the same generator calls in the same order,
    so the same int64 [n, k] draws), with each rejection round working on the positions still
    rejected rather than on boolean masks over all n x k draws: 2-3x faster on an epoch."""
    users = np.asarray(users, np.int64)
    if (positives.counts[users] >= positives.n_items).any():
        return sample_negatives(users, k, positives, rng)  # its error names the user
    out = rng.integers(0, positives.n_items, size=(len(users), k), dtype=np.int64)
    flat = out.reshape(-1)
    owner = np.repeat(users, k) if k > 1 else users
    todo = _rejected(positives, owner, flat)
    while len(todo):  # a boolean-mask assignment fills positions in this (ascending) order too
        flat[todo] = rng.integers(0, positives.n_items, size=len(todo), dtype=np.int64)
        todo = todo[positives.contains(owner[todo], flat[todo])]
    return out


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
        self.positives = positive_set(train.user, train.item, n_users, n_items)

    def samples_per_epoch(self) -> int:
        return len(self.users) * (1 + self.k)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        negs = draw_negatives(self.users, self.k, self.positives, rng)
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
        self.positives = positive_set(train.user, train.item, n_users, n_items)

    def samples_per_epoch(self) -> int:
        return len(self.users)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        perm = rng.permutation(len(self.users))
        users = self.users[perm]
        items = self.items[perm]
        del perm  # an epoch holds three int64 arrays of its rows (20M rows: 480 MB), no more
        negs = draw_negatives(users, 1, self.positives, rng).reshape(-1)
        u, i, j = torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(negs)
        for s in _slices(len(u), batch_size):
            # [positive, negative] per row, stacked a batch at a time (an epoch-long copy was the
            # largest array of an out-of-core epoch; a batch's stack costs microseconds)
            yield {"users": u[s], "items": i[s], "negatives": j[s], "pairs": torch.stack([i[s], j[s]], 1)}

    def backward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """`loss(model, batch).backward()` in one pass: models with a closed-form BPR gradient
        (``bpr_backward``, MF) compute loss and gradients together, without autograd; others
        backpropagate the loss. Returns the (detached) loss."""
        closed_form = getattr(model, "bpr_backward", None)
        if closed_form is not None:
            reg = self.reg if isinstance(model, Regularised) else 0.0
            return closed_form(batch["users"], batch["items"], batch["negatives"], reg, batch.get("pairs"))
        loss = self.loss(model, batch)
        loss.backward()
        return loss.detach()

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch.get("pairs")
        if items is None:
            items = torch.stack([batch["items"], batch["negatives"]], dim=1)
        x = model.score(batch["users"], items)
        loss = -F.logsigmoid(x[:, 0] - x[:, 1]).mean()
        if self.reg > 0 and isinstance(model, Regularised):
            loss = loss + self.reg * model.regulariser(batch["users"], items)
        return loss
