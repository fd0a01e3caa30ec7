"""Tests for recfunnel.train.labelled: pointwise BCE on given labels through the Trainer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recfunnel.data.fields import CTRPart, FieldBatch
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.trainer import TrainConfig, Trainer


def _part(n: int = 103) -> CTRPart:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 4, n))
    y = (x >= 2).float()
    return CTRPart(
        FieldBatch({"x": x, "row": torch.arange(n)}), y, rng.integers(0, 5, n), np.zeros(n, np.int64)
    )


class Lookup(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        return self.w[batch["x"]]


def test_each_epoch_visits_every_row_once_in_a_seeded_order():
    obj = LabelledBCE(_part())
    assert obj.samples_per_epoch() == 103
    rows = [torch.cat([b["fields"]["row"] for b in obj.batches(e, 7, 10)]) for e in (0, 1)]
    assert sorted(rows[0].tolist()) == list(range(103))
    assert not torch.equal(rows[0], rows[1])  # a new order each epoch
    again = torch.cat([b["fields"]["row"] for b in obj.batches(0, 7, 10)])
    assert torch.equal(rows[0], again)  # the same for the same (seed, epoch)
    sizes = [len(b["labels"]) for b in obj.batches(0, 7, 10)]
    assert sizes == [10] * 10 + [3]
    first = next(iter(obj.batches(0, 7, 10)))
    assert list(first)[0] == "labels"  # the Trainer counts rows with the first value
    part = obj.part
    assert torch.equal(first["labels"], part.labels[first["fields"]["row"]])


def test_loss_is_bce_on_the_labels_and_the_trainer_learns_them():
    part = _part()
    obj = LabelledBCE(part)
    model = Lookup()
    batch = next(iter(obj.batches(0, 0, 16)))
    torch.testing.assert_close(
        obj.loss(model, batch), F.binary_cross_entropy_with_logits(torch.zeros(16), batch["labels"])
    )
    Trainer(TrainConfig(epochs=30, batch_size=16, lr=0.1, progress=False)).fit(model, obj)
    assert (model.w[:2] < 0).all() and (model.w[2:] > 0).all()
