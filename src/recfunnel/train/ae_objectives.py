"""Objectives of the autoencoders (:mod:`recfunnel.models.autoencoders`): batches of whole rows of
the training matrix (users; items for the item-based AutoRec) and the reconstruction loss.

The model holds the matrix (the run layer sets it with the run's ``data.values``) and answers
``reconstruct(keys) -> (logits, kl or None)``, ``targets(keys)`` (the rows as dense tensors) and
``l2_weights()``; an objective draws the keys and applies its loss. Every loss here is the mean over
the batch's rows of a per-row loss, plus ``reg`` times the sum of squared weight matrices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.data.dataset import Interactions
from recfunnel.train.objectives import epoch_rng

__all__ = ["AutoRecLoss", "DenoisingLogistic", "MultinomialLikelihood", "kl_weight"]


def kl_weight(step: int, total_anneal_steps: int, anneal_cap: float) -> float:
    """beta after `step` updates (Liang et al. 2018, sec. 2.2.2): linear from 0, reaching
    `anneal_cap` at ``anneal_cap * total_anneal_steps`` and staying there."""
    if total_anneal_steps <= 0:
        return anneal_cap
    return min(anneal_cap, step / total_anneal_steps)


class _RowBatches:
    """Shuffled batches of the rows (users or items) that have a training interaction."""

    def __init__(self, keys: np.ndarray, reg: float) -> None:
        if reg < 0:
            raise ValueError(f"reg must be >= 0, got {reg}")
        self.keys = np.unique(keys).astype(np.int64)
        self.reg = reg

    def samples_per_epoch(self) -> int:
        return len(self.keys)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.keys) // batch_size)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        keys = torch.from_numpy(self.keys[epoch_rng(seed, epoch).permutation(len(self.keys))])
        for n, start in enumerate(range(0, len(keys), batch_size)):
            yield {"keys": keys[start : start + batch_size], **self.extra(epoch, n, batch_size)}

    def extra(self, epoch: int, batch: int, batch_size: int) -> dict[str, torch.Tensor]:
        return {}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | float:
        return self.reg * model.l2_weights() if self.reg > 0 else 0.0


class MultinomialLikelihood(_RowBatches):
    """Mult-DAE / Mult-VAE (Liang et al. 2018, eqs. 2 and 5): per user, -sum_i x_ui log pi_i(x_u)
    with pi the softmax of the logits, plus beta times the KL term when the model returns one; beta
    rises linearly by 1 / `total_anneal_steps` per update up to `anneal_cap` (the paper's 200000 and
    0.2). The update count is the epoch times the batches per epoch plus the batch, so a resumed run
    anneals as an uninterrupted one. `reg`: the paper's Mult-DAE uses 0.01 / batch size, Mult-VAE 0."""

    name: ClassVar[str] = "multinomial"

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        reg: float = 0.0,
        total_anneal_steps: int = 200_000,
        anneal_cap: float = 0.2,
    ) -> None:
        super().__init__(train.user, reg)
        if anneal_cap < 0:
            raise ValueError(f"anneal_cap must be >= 0, got {anneal_cap}")
        self.total_anneal_steps, self.anneal_cap = total_anneal_steps, anneal_cap

    def extra(self, epoch: int, batch: int, batch_size: int) -> dict[str, torch.Tensor]:
        step = epoch * self.n_batches(batch_size) + batch
        return {"beta": torch.tensor(kl_weight(step, self.total_anneal_steps, self.anneal_cap))}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, kl = model.reconstruct(batch["keys"])
        x = model.targets(batch["keys"])
        loss = -(F.log_softmax(logits, dim=1) * x).sum(1).mean()
        if kl is not None:
            loss = loss + batch["beta"] * kl
        return loss + self.penalty(model)


class DenoisingLogistic(_RowBatches):
    """CDAE (Wu et al. 2016, eq. 5): per user, the logistic loss (or the square loss) of the
    reconstruction of the corrupted row against the uncorrupted one, over every item (the paper
    samples the unobserved items; a full row is cheap at these catalogue sizes), targets 1 where the
    user has a training interaction."""

    name: ClassVar[str] = "cdae"

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        reg: float = 0.0,
        loss: Literal["logistic", "square"] = "logistic",
    ) -> None:
        super().__init__(train.user, reg)
        if loss not in ("logistic", "square"):
            raise ValueError(f"loss must be 'logistic' or 'square', got {loss!r}")
        self.kind = loss

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, _ = model.reconstruct(batch["keys"])
        y = (model.targets(batch["keys"]) > 0).float()
        if self.kind == "logistic":
            per_row = F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(1)
        else:
            per_row = (logits - y).pow(2).sum(1)
        return per_row.mean() + self.penalty(model)


class AutoRecLoss(_RowBatches):
    """I-AutoRec (Sedhain et al. 2015, eq. 2): per item, the squared error of the reconstructed
    column over every entry (``entries = "all"``: implicit feedback, unobserved = 0) or over the
    observed ones only (``"observed"``: the paper's explicit-rating objective). The paper's lambda / 2
    on ||W||^2 + ||V||^2 over the whole sum is ``reg = lambda / (2 n_items)`` in this per-row mean."""

    name: ClassVar[str] = "autorec"

    def __init__(
        self,
        train: Interactions,
        n_users: int,
        n_items: int,
        reg: float = 0.0,
        entries: Literal["all", "observed"] = "all",
    ) -> None:
        super().__init__(train.item, reg)
        if entries not in ("all", "observed"):
            raise ValueError(f"entries must be 'all' or 'observed', got {entries!r}")
        self.entries = entries

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out, _ = model.reconstruct(batch["keys"])
        r = model.targets(batch["keys"])
        err = (out - r).pow(2)
        if self.entries == "observed":
            err = err * (r != 0)
        return err.sum(1).mean() + self.penalty(model)
