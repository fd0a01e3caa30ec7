"""Objectives of the retrieval models (issue 4), apart from the models.

* ``in-batch-softmax``: sampled softmax over the items of the batch (Yi et al. RecSys 2019): each
  row's positive against the other rows' positives, plus optional ``extra_negatives`` uniform items
  shared by the batch (mixed negative sampling). **logQ correction** (switchable): the logit of item
  j is reduced by log Q_j, Q_j the probability that a candidate slot holds j: with in-batch
  candidates only, Q_j = q_j, the item's share of the training interactions; with N extra uniform
  negatives beside B in-batch ones, Q_j = (B q_j + N / n_items) / (B + N). Candidates that are the
  row user's own training positives (other than its target) are masked out (logit -inf).
* ``sgns``: skip-gram with negative sampling over each user's time-ordered training items
  (Item2Vec, Barkan & Koenigstein 2016; Mikolov et al. 2013): (centre, context) pairs within
  ``window`` positions, ``k`` negatives per pair from the unigram^0.75 distribution.

Models: the softmax reads a :class:`~recfunnel.models.base.TwoTowerLike` model through its towers
(``user_embed`` / ``item_embed`` / ``logit_scale`` / ``candidate_bias``) and any other
:class:`~recfunnel.models.base.Factorised` one through ``user_vectors`` / ``item_vectors()``. SGNS
needs a :class:`~recfunnel.models.base.SkipGram` model (``sgns_scores(centre, context)``).

Every epoch's order and draws come from ``epoch_rng(seed, epoch)`` by vectorised ops, so a resumed
run draws what an uninterrupted one would. The registry of objectives is
:data:`recfunnel.train.registry.OBJECTIVES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.data.dataset import Interactions
from recfunnel.data.sequences import user_sequences
from recfunnel.models.base import Factorised, SkipGram, TwoTowerLike
from recfunnel.train.objectives import epoch_rng

__all__ = ["InBatchSoftmax", "SkipGramNS", "item_log_q"]


def item_log_q(items: np.ndarray, n_items: int, smoothing: float = 1.0) -> np.ndarray:
    """log of each item's share of the training interactions (add-`smoothing` counts so an item
    absent from training has a finite value) -> float32 [n_items]."""
    counts = np.bincount(np.asarray(items, np.int64), minlength=n_items).astype(np.float64) + smoothing
    with np.errstate(divide="ignore"):
        return np.log(counts / counts.sum()).astype(np.float32)


class InBatchSoftmax:
    """In-batch sampled softmax with (switchable) logQ correction, optional extra uniform
    negatives, and masking of candidates that are the user's own training positives.

    Args:
        train: training interactions; n_users, n_items: vocabulary sizes.
        logq: subtract log Q_j from the logit of each candidate item j (see the module docstring).
        extra_negatives: uniform items drawn per batch and shared by its rows (0: in-batch only).
        mask_positives: mask candidates that are a training positive of the row's user.
    """

    name: ClassVar[str] = "in-batch-softmax"

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        logq: bool = True,
        extra_negatives: int = 0,
        mask_positives: bool = True,
    ) -> None:
        self.users = np.asarray(train.user, np.int64)
        self.items = np.asarray(train.item, np.int64)
        self.n_items = n_items
        self.logq = logq
        self.extra_negatives = extra_negatives
        self.mask_positives = mask_positives
        self.positives = train.matrix(n_users, n_items).astype(bool).tocsr()
        self.log_q = torch.from_numpy(item_log_q(self.items, n_items))

    def samples_per_epoch(self) -> int:
        return len(self.users)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        perm = rng.permutation(len(self.users))
        users, items = self.users[perm], self.items[perm]
        n_batches = -(-len(users) // batch_size)
        extra = rng.integers(0, self.n_items, size=(n_batches, self.extra_negatives), dtype=np.int64)
        for b, start in enumerate(range(0, len(users), batch_size)):
            u, i = users[start : start + batch_size], items[start : start + batch_size]
            cand = np.concatenate([i, extra[b]])
            batch = {"users": torch.from_numpy(u), "items": torch.from_numpy(i)}
            if self.extra_negatives:
                batch["extra"] = torch.from_numpy(extra[b])  # per-batch, not per-row (see loss)
            if self.mask_positives:
                hit = self.positives[u][:, cand].toarray()
                own = np.zeros_like(hit)
                own[np.arange(len(u)), np.arange(len(u))] = True
                batch["mask"] = torch.from_numpy(hit & ~own)
            yield batch

    def correction(self, items: torch.Tensor, n_inbatch: int) -> torch.Tensor:
        """log Q of each candidate item (in-batch + extra): log q_j with no extra negatives."""
        if self.log_q.device != items.device:  # moved once, beside the model's batches
            self.log_q = self.log_q.to(items.device)
        log_q = self.log_q[items]
        n = self.extra_negatives
        if n == 0:
            return log_q
        b = n_inbatch
        q = torch.exp(log_q)
        return torch.log((b * q + n / self.n_items) / (b + n))

    def shard(self, batch: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
        """Rows [lo, hi) of a batch for one process of a distributed fit: its users against the
        whole batch's candidates (so the loss is the one-process loss of those rows)."""
        part = dict(batch, users=batch["users"][lo:hi], offset=torch.tensor(lo))
        if "mask" in batch:
            part["mask"] = batch["mask"][lo:hi]
        return part

    def logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, B + N] scaled, corrected, masked logits; the target of row r is column r (column
        ``offset + r`` for a :meth:`shard` of a batch)."""
        users, items = batch["users"], batch["items"]
        cand = torch.cat([items, batch["extra"]]) if "extra" in batch else items
        lo = int(batch["offset"]) if "offset" in batch else 0
        bias = None
        if isinstance(model, TwoTowerLike):
            u = model.user_embed(users, targets=items[lo : lo + len(users)])
            v = model.item_embed(cand)
            scale = model.logit_scale()
            bias = model.candidate_bias(cand)
        elif isinstance(model, Factorised):
            u = model.user_vectors(users)
            v = model.item_vectors()[cand]
            scale = 1.0
        else:
            raise TypeError(
                f"in-batch-softmax needs a TwoTowerLike or Factorised model; "
                f"{type(model).__name__} is neither"
            )
        logits = scale * (u @ v.T)
        if bias is not None:
            logits = logits + bias.unsqueeze(0)
        if self.logq:
            logits = logits - self.correction(cand, len(items)).unsqueeze(0)
        if "mask" in batch:
            logits = logits.masked_fill(batch["mask"], float("-inf"))
        return logits

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.logits(model, batch)
        lo = int(batch["offset"]) if "offset" in batch else 0
        return F.cross_entropy(logits, torch.arange(lo, lo + len(logits), device=logits.device))


class SkipGramNS:
    """Skip-gram with negative sampling over each user's time-ordered training items.

    Args:
        window: context positions either side of the centre item (Item2Vec uses the whole set;
            a window over the time order is the common variant).
        k: negatives per (centre, context) pair, drawn from unigram counts ** `power`.
        power: the unigram exponent (0.75, Mikolov et al. 2013).
        subsample: frequent-item subsampling threshold t (keep a pair's centre with probability
            min(1, sqrt(t / f))); 0 turns it off.
    """

    name: ClassVar[str] = "sgns"

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        window: int = 5,
        k: int = 5,
        power: float = 0.75,
        subsample: float = 0.0,
    ) -> None:
        self.n_items, self.k, self.subsample = n_items, k, subsample
        indptr, items = user_sequences(train, n_users)
        indptr, items = indptr.numpy(), items.numpy()
        seq_user = np.repeat(np.arange(n_users), np.diff(indptr))
        centres, contexts = [], []
        for off in range(1, window + 1):  # a loop over offsets, not rows
            same = seq_user[off:] == seq_user[:-off] if len(items) > off else np.zeros(0, bool)
            a, b = items[:-off][same], items[off:][same]
            centres += [a, b]
            contexts += [b, a]
        self.centre = np.concatenate(centres) if centres else np.zeros(0, np.int64)
        self.context = np.concatenate(contexts) if contexts else np.zeros(0, np.int64)
        counts = np.bincount(items, minlength=n_items).astype(np.float64)
        p = counts**power
        self.noise_cdf = np.cumsum(p / p.sum()) if p.sum() > 0 else np.linspace(0, 1, n_items + 1)[1:]
        freq = counts / max(1.0, counts.sum())
        self.keep = np.minimum(1.0, np.sqrt(subsample / np.maximum(freq, 1e-12))) if subsample else None

    def samples_per_epoch(self) -> int:
        return len(self.centre)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = epoch_rng(seed, epoch)
        idx = rng.permutation(len(self.centre))
        if self.keep is not None:
            idx = idx[rng.random(len(idx)) < self.keep[self.centre[idx]]]
        c, o = self.centre[idx], self.context[idx]
        negs = np.searchsorted(self.noise_cdf, rng.random((len(c), self.k)))
        negs = np.minimum(negs, self.n_items - 1).astype(np.int64)
        ct, ot, nt = torch.from_numpy(c), torch.from_numpy(o), torch.from_numpy(negs)
        for start in range(0, len(ct), batch_size):
            s = slice(start, start + batch_size)
            yield {"centre": ct[s], "context": ot[s], "negatives": nt[s]}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cand = torch.cat([batch["context"].unsqueeze(1), batch["negatives"]], dim=1)
        if not isinstance(model, SkipGram):
            raise TypeError(f"sgns needs a SkipGram model (sgns_scores); {type(model).__name__} is not one")
        x = model.sgns_scores(batch["centre"], cand)
        return -(F.logsigmoid(x[:, 0]) + F.logsigmoid(-x[:, 1:]).sum(1)).mean()
