"""Matrix factorisation trained with BPR (Rendle et al., UAI 2009)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recfunnel.models.base import SPARSE_HELP, Model, ModelConfig, Sparse, sparse_table


class MFConfig(ModelConfig):
    factors: int = Field(64, ge=1, description="embedding dimension")
    init_std: float = Field(0.01, gt=0, description="std of the normal initialisation")
    sparse: Sparse = Field(True, description=SPARSE_HELP)


class MF(Model):
    """x_ui = <p_u, q_i> + b_i. Factorised: user vectors p_u, item vectors q_i (+ item bias)."""

    family = "mf"
    Config = MFConfig
    objective = "bpr"

    def __init__(self, config: MFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        item_sparse = sparse_table(config.sparse, n_items, config.factors)
        self.user_emb = nn.Embedding(
            n_users, config.factors, sparse=sparse_table(config.sparse, n_users, config.factors)
        )
        self.item_emb = nn.Embedding(n_items, config.factors, sparse=item_sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=item_sparse)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        nn.init.zeros_(self.item_bias.weight)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        u = self.user_emb(users).unsqueeze(1)
        return (u * self.item_emb(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def regulariser(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean squared L2 norm of the rows a batch touches (BPR's lambda * ||theta||^2)."""
        return self.user_emb(users).pow(2).sum(-1).mean() + self.item_emb(items).pow(2).sum(-1).mean()

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users)

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight

    def item_bias_all(self) -> torch.Tensor:
        return self.item_bias.weight.squeeze(-1)
