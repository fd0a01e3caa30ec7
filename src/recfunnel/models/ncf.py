"""Neural Collaborative Filtering (He et al., WWW 2017): GMF, MLP and NeuMF.

Defaults follow the paper: 8 predictive factors, MLP tower 64-32-16-8 (the embedding size is
half the first layer, since user and item embeddings are concatenated), trained with BCE on
4 negatives per positive; NeuMF may start from trained GMF and MLP with alpha = 0.5 (eq. 13).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recfunnel.models.base import SPARSE_HELP, Model, ModelConfig, Sparse, sparse_table


def _embedding(n: int, d: int, sparse: Sparse, std: float = 0.01) -> nn.Embedding:
    e = nn.Embedding(n, d, sparse=sparse_table(sparse, n, d))
    nn.init.normal_(e.weight, std=std)
    return e


def _tower(layers: tuple[int, ...], dropout: float) -> nn.Sequential:
    """ReLU tower. Glorot weights and zero biases, as the paper's Keras code: PyTorch's default
    bias init (+-1/sqrt(fan_in)) swamps the 0.01-std embeddings and leaves most ReLUs dead."""
    mods: list[nn.Module] = []
    for a, b in zip(layers[:-1], layers[1:], strict=True):
        lin = nn.Linear(a, b)
        nn.init.xavier_uniform_(lin.weight)
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.ReLU()]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
    return nn.Sequential(*mods)


class GMFConfig(ModelConfig):
    factors: int = Field(8, ge=1, description="predictive factors (embedding dimension)")
    sparse: Sparse = Field(True, description=SPARSE_HELP)


class GMF(Model):
    """Generalised MF (eq. 9): y = sigma(h^T (p_u * q_i)). Factorised with user vector h * p_u."""

    family = "gmf"
    Config = GMFConfig

    def __init__(self, config: GMFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.user_emb = _embedding(n_users, config.factors, config.sparse)
        self.item_emb = _embedding(n_items, config.factors, config.sparse)
        self.out = nn.Linear(config.factors, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = self.user_emb(users).unsqueeze(1) * self.item_emb(items)
        return self.out(x).squeeze(-1)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb(users) * self.out.weight[0]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight

    def item_bias_all(self) -> torch.Tensor:
        return self.out.bias


class MLPConfig(ModelConfig):
    layers: tuple[int, ...] = Field(
        (64, 32, 16, 8), description="tower sizes; embeddings are layers[0]/2 each"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer")
    sparse: Sparse = Field(True, description=SPARSE_HELP)


class MLP(Model):
    """NCF's MLP path (eq. 10): a ReLU tower over the concatenated user and item embeddings."""

    family = "mlp"
    Config = MLPConfig

    def __init__(self, config: MLPConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        if config.layers[0] % 2:
            raise ValueError(f"layers[0] must be even (two embeddings concatenated), got {config.layers}")
        d = config.layers[0] // 2
        self.user_emb = _embedding(n_users, d, config.sparse)
        self.item_emb = _embedding(n_items, d, config.sparse)
        self.tower = _tower(config.layers, config.dropout)
        self.out = nn.Linear(config.layers[-1], 1)

    def hidden(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        i = self.item_emb(items)
        u = self.user_emb(users).unsqueeze(1).expand(-1, i.shape[1], -1)
        return self.tower(torch.cat([u, i], dim=-1))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(users, items)).squeeze(-1)


class NeuMFConfig(ModelConfig):
    factors: int = Field(8, ge=1, description="GMF predictive factors")
    layers: tuple[int, ...] = Field((64, 32, 16, 8), description="MLP tower sizes")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the MLP tower")
    sparse: Sparse = Field(True, description=SPARSE_HELP)


class NeuMF(Model):
    """NeuMF (eq. 12): GMF and MLP paths with separate embeddings, concatenated into one output."""

    family = "neumf"
    Config = NeuMFConfig

    def __init__(self, config: NeuMFConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.gmf = GMF(GMFConfig(factors=config.factors, sparse=config.sparse), n_users, n_items)
        self.mlp = MLP(
            MLPConfig(layers=config.layers, dropout=config.dropout, sparse=config.sparse), n_users, n_items
        )
        del self.gmf.out, self.mlp.out
        self.out = nn.Linear(config.factors + config.layers[-1], 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        g = self.gmf.user_emb(users).unsqueeze(1) * self.gmf.item_emb(items)
        m = self.mlp.hidden(users, items)
        return self.out(torch.cat([g, m], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> None:
        """Initialise from trained GMF and MLP (eq. 13): embeddings and tower copied, output
        weights [alpha * h_gmf, (1 - alpha) * h_mlp]."""
        own = self.state_dict()
        for k, v in gmf.state_dict().items():
            if not k.startswith("out."):
                own[f"gmf.{k}"].copy_(v)
        for k, v in mlp.state_dict().items():
            if not k.startswith("out."):
                own[f"mlp.{k}"].copy_(v)
        self.out.weight.copy_(torch.cat([alpha * gmf.out.weight, (1 - alpha) * mlp.out.weight], dim=1))
        self.out.bias.copy_(alpha * gmf.out.bias + (1 - alpha) * mlp.out.bias)
