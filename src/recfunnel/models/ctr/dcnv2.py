"""DCN-V2 (Wang et al., WWW 2021)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import MLP, CrossNetwork, FieldEmbedding


class DCNv2Config(CTRConfig):
    cross_layers: int = Field(3, ge=1, description="number of cross layers (eq. 1)")
    low_rank: int | None = Field(None, ge=1, description="rank of W = U V^T (eq. 2); None: full rank")
    structure: Literal["stacked", "parallel"] = Field(
        "stacked", description="cross network then deep (fig. 2b), or both side by side (fig. 2a)"
    )
    hidden: tuple[int, ...] = Field((400, 400), description="deep network layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the deep network")


class DCNv2(CTRModel):
    """DCN-V2 (Wang et al. 2021): cross layers (full or low rank) with a deep network, stacked or parallel.

    x_0 = concatenated field embeddings; cross layers x_{l+1} = x_0 * (W_l x_l + b_l) + x_l
    (eq. 1); combined with a deep network stacked (x_L -> DNN -> logit) or in parallel
    ([x_L, DNN(x_0)] -> logit), section 3 and fig. 2."""

    family = "dcnv2"
    Config = DCNv2Config

    def __init__(self, config: DCNv2Config, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        self.embedding = FieldEmbedding(
            schema.fields, config.embedding_dim, sparse=config.sparse, init_std=config.init_std
        )
        d = self.embedding.out_dim
        self.cross = CrossNetwork(d, config.cross_layers, config.low_rank)
        self.deep = MLP(d, config.hidden, dropout=config.dropout)
        width = self.deep.out_dim if config.structure == "stacked" else d + self.deep.out_dim
        self.out = nn.Linear(width, 1)

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        x0 = self.embedding.flat(batch)
        if self.config.structure == "stacked":
            h = self.deep(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        return self.out(h).squeeze(-1)
