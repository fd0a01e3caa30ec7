"""DLRM (Naumov et al., 2019), split as TorchRec does: SparseArch, DenseArch, InteractionArch, OverArch."""

from __future__ import annotations

import torch
from pydantic import Field

from recfunnel.data.fields import FieldBatch, FieldSchema
from recfunnel.models.ctr.base import CTRConfig, CTRModel
from recfunnel.nn import MLP, DotInteraction, FieldEmbedding, numeric_values
from recfunnel.nn.device import module_device


class DLRMConfig(CTRConfig):
    bottom: tuple[int, ...] = Field(
        (512, 256, 64), description="dense-arch hidden layers before the embedding_dim output (ref. Criteo)"
    )
    top: tuple[int, ...] = Field(
        (512, 256), description="over-arch hidden layers before the logit (ref. Criteo)"
    )


class DLRM(CTRModel):
    """DLRM (Naumov et al. 2019): dot products between a bottom-MLP output and field embeddings.

    SparseArch embeds the categorical, multi-hot and history fields; DenseArch (bottom MLP)
    maps the numeric fields to one embedding_dim vector; InteractionArch takes the dot products of
    every pair among [dense, sparse...] (section 2.1.3) next to the dense vector; OverArch (top
    MLP) gives the logit. Defaults: the reference implementation's Criteo Kaggle settings
    (sparse size 16, bottom 512-256-64-16, top 512-256-1). Without numeric fields the dense vector
    is a learned constant, so the interaction is among the sparse fields only."""

    family = "dlrm"
    Config = DLRMConfig

    def __init__(self, config: DLRMConfig, schema: FieldSchema) -> None:
        super().__init__(config, schema)
        d = config.embedding_dim
        sparse_fields = [f for f in schema if f.kind != "numeric"]
        self.numeric = [f for f in schema if f.kind == "numeric"]
        self.sparse_arch = FieldEmbedding(sparse_fields, d, sparse=config.sparse, init_std=config.init_std)
        self.dense_arch = MLP(max(1, len(self.numeric)), config.bottom, d)
        self.interaction_arch = DotInteraction()
        n = len(sparse_fields) + 1
        self.over_arch = MLP(DotInteraction.out_dim(n, d), config.top, 1)

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        x = numeric_values(batch, self.numeric)
        if x.shape[1] == 0:
            x = torch.ones(len(batch), 1, device=module_device(self))
        dense = self.dense_arch(x)
        v = torch.cat([dense.unsqueeze(1), self.sparse_arch(batch)], dim=1)
        return self.over_arch(self.interaction_arch(v)).squeeze(-1)
