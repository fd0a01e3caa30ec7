"""DeepFM (Guo et al., IJCAI 2017)."""

from __future__ import annotations

import torch
from pydantic import Field

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import MLP, FieldEmbedding, FieldLinear, FMInteraction, pairwise_terms


class DeepFMConfig(CTRConfig):
    embedding_dim: int = Field(10, ge=1, description="paper section 3.2: embedding size 10")
    hidden: tuple[int, ...] = Field((400, 400, 400), description="paper: network shape 400-400-400")
    dropout: float = Field(0.5, ge=0, lt=1, description="paper: dropout 0.5")


class DeepFM(CTRModel):
    """DeepFM (Guo et al. 2017): an FM and a DNN sharing one field embedding.

    Eq. 1: y = sigmoid(y_FM + y_DNN). y_FM (eq. 2) = first-order terms + FM pairwise term over
    the field embeddings; y_DNN (eq. 3-5) = MLP over the *same* embeddings, concatenated."""

    family = "deepfm"
    Config = DeepFMConfig

    def __init__(self, config: DeepFMConfig, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        self.linear = FieldLinear(schema.fields, sparse=config.sparse)
        self.embedding = FieldEmbedding(
            schema.fields, config.embedding_dim, sparse=config.sparse, init_std=config.init_std
        )
        self.fm = FMInteraction()
        self.dnn = MLP(self.embedding.out_dim, config.hidden, 1, dropout=config.dropout)

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        e = self.embedding(batch)
        return self.linear(batch) + self.fm(e) + self.dnn(e.flatten(1)).squeeze(-1)

    def pairwise_terms(self, batch: FieldBatch) -> torch.Tensor:
        """<v_i, v_j> of every field pair [B, F, F] (zero diagonal): the FM component's terms."""
        return pairwise_terms(self.embedding(batch))
