"""Factorization Machines (Rendle, ICDM 2010)."""

from __future__ import annotations

import torch

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import FieldEmbedding, FieldLinear, FMInteraction, pairwise_terms


class FMConfig(CTRConfig):
    pass


class FM(CTRModel):
    """Factorization machine (Rendle 2010): first-order terms plus all pairwise field interactions.

    Eq. 1: y = w_0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j, the pairwise sum in
    O(kn) by lemma 3.1 (eq. 5). Multi-hot and history fields enter as their pooled vector."""

    family = "fm"
    Config = FMConfig

    def __init__(self, config: FMConfig, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        self.linear = FieldLinear(schema.fields, sparse=config.sparse)
        self.embedding = FieldEmbedding(
            schema.fields, config.embedding_dim, sparse=config.sparse, init_std=config.init_std
        )
        self.fm = FMInteraction()

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        return self.linear(batch) + self.fm(self.embedding(batch))

    def pairwise_terms(self, batch: FieldBatch) -> torch.Tensor:
        """<v_i, v_j> of every field pair [B, F, F] (zero diagonal): what the FM term sums."""
        return pairwise_terms(self.embedding(batch))
