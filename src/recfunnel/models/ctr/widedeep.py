"""Wide & Deep (Cheng et al., DLRS 2016)."""

from __future__ import annotations

import torch
from pydantic import Field

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import MLP, FieldEmbedding, FieldLinear


class WideDeepConfig(CTRConfig):
    embedding_dim: int = Field(32, ge=1, description="paper: 32-dimensional embeddings")
    hidden: tuple[int, ...] = Field((1024, 512, 256), description="paper: ReLU layers 1024-512-256")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the deep tower")


class WideDeep(CTRModel):
    """Wide & Deep (Cheng et al. 2016): a linear wide part and an MLP deep part trained jointly.

    Eq. 3: P(y=1|x) = sigmoid(w_wide^T [x, phi(x)] + w_deep^T a^(lf) + b). The wide part here
    is the first-order terms of every field (no hand-made cross-product transformations phi);
    the deep part an MLP over the concatenated field embeddings. Trained jointly."""

    family = "widedeep"
    Config = WideDeepConfig

    def __init__(self, config: WideDeepConfig, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        self.wide = FieldLinear(schema.fields, sparse=config.sparse)
        self.embedding = FieldEmbedding(
            schema.fields, config.embedding_dim, sparse=config.sparse, init_std=config.init_std
        )
        self.deep = MLP(self.embedding.out_dim, config.hidden, 1, dropout=config.dropout)

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        return self.wide(batch) + self.deep(self.embedding.flat(batch)).squeeze(-1)
