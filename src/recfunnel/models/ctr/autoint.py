"""AutoInt (Song et al., CIKM 2019)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import MLP, FieldEmbedding, FieldSelfAttention


class AutoIntConfig(CTRConfig):
    embedding_dim: int = Field(16, ge=1, description="paper section 5.1.3: d = 16")
    layers: int = Field(3, ge=1, description="paper: 3 interacting layers")
    heads: int = Field(2, ge=1, description="paper: 2 attention heads")
    attention_dim: int = Field(32, ge=1, description="paper: d' = 32")
    residual: bool = Field(True, description="residual connection of eq. 8")
    scale: bool = Field(False, description="divide attention logits by sqrt(d') (not in the paper)")
    dnn_hidden: tuple[int, ...] = Field((), description="AutoInt+ : a parallel DNN (empty: plain AutoInt)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the AutoInt+ DNN")


class AutoInt(CTRModel):
    """AutoInt (Song et al. 2019): multi-head self-attention between fields, with residuals.

    Field embeddings (eq. 1-3) -> stacked multi-head self-attention with residuals (eq. 5-8)
    -> concatenation -> y = sigmoid(w^T (e_1^Res + ... + e_M^Res) + b) (eq. 9). With `dnn_hidden`
    it is AutoInt+ (a DNN on the embeddings added to the logit).

    :meth:`attention_weights` returns alpha_{m,k} per layer and head for given rows."""

    family = "autoint"
    Config = AutoIntConfig

    def __init__(self, config: AutoIntConfig, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        self.embedding = FieldEmbedding(
            schema.fields, config.embedding_dim, sparse=config.sparse, init_std=config.init_std
        )
        dims = [config.embedding_dim] + [config.heads * config.attention_dim] * config.layers
        self.attention = nn.ModuleList(
            FieldSelfAttention(d, config.attention_dim, config.heads, config.residual, config.scale)
            for d in dims[:-1]
        )
        self.out = nn.Linear(len(schema) * dims[-1], 1)
        self.dnn = (
            MLP(self.embedding.out_dim, config.dnn_hidden, 1, dropout=config.dropout)
            if config.dnn_hidden
            else None
        )

    def _forward(self, batch: FieldBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        e = self.embedding(batch)
        h, weights = e, []
        for layer in self.attention:
            h, w = layer(h)
            weights.append(w)
        logit = self.out(h.flatten(1)).squeeze(-1)
        if self.dnn is not None:
            logit = logit + self.dnn(e.flatten(1)).squeeze(-1)
        return logit, weights

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        return self._forward(batch)[0]

    @torch.no_grad()
    def attention_weights(self, batch: FieldBatch) -> torch.Tensor:
        """alpha [B, layers, heads, F (query field), F (key field)]; each query row sums to 1.
        Field order is ``self.schema.names``."""
        was = self.training
        self.eval()
        _, weights = self._forward(batch)
        self.train(was)
        return torch.stack(weights, dim=1)
