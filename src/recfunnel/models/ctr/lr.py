"""Logistic regression on the fields: y = sigmoid(w_0 + sum_f w_{f, x_f})."""

from __future__ import annotations

import torch
from pydantic import Field

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import FieldLinear


class LRConfig(CTRConfig):
    embedding_dim: int = Field(1, ge=1, description="unused: LR has one weight per value")


class LR(CTRModel):
    """Logistic regression: bias + one weight per field value (the baseline every ranker must beat)."""

    family = "lr"
    Config = LRConfig

    def __init__(self, config: LRConfig, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        self.linear = FieldLinear(schema.fields, sparse=config.sparse)

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        return self.linear(batch)
