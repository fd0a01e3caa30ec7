"""Pointwise BCE on labelled rows (CTR data): the objective the Trainer runs for the rankers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F

from recfunnel.data.fields import CTRPart
from recfunnel.train.objectives import epoch_rng


class LabelledBCE:
    """Binary cross-entropy of `model.score_fields(fields)` against the rows' own labels.

    Each epoch visits every row once in an order drawn from ``default_rng([seed, epoch])`` (so a
    resumed run sees the same batches). The fields are permuted once per epoch by one gather and
    then sliced, so a batch costs no indexing of its own. Batches are ``{"labels": [B],
    "fields": FieldBatch}`` (labels first: the Trainer counts rows with the first value)."""

    name: ClassVar[str] = "labelled"

    def __init__(self, part: CTRPart) -> None:
        self.part = part

    def samples_per_epoch(self) -> int:
        return len(self.part)

    def batches(self, epoch: int, seed: int, batch_size: int) -> Iterator[dict]:
        perm = torch.from_numpy(epoch_rng(seed, epoch).permutation(len(self.part)))
        fields = self.part.fields.take(perm)
        labels = self.part.labels[perm]
        for start in range(0, len(perm), batch_size):
            s = slice(start, start + batch_size)
            yield {"labels": labels[s], "fields": fields.take(s)}

    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(model.score_fields(batch["fields"]), batch["labels"])
