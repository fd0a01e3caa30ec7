"""Non-neural baselines: Popularity and EASE (closed form)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recfunnel.models.base import Model, ModelConfig


class PopularityConfig(ModelConfig):
    pass


class Popularity(Model):
    """Scores every item by its number of training interactions (same list for every user)."""

    family = "popularity"
    Config = PopularityConfig
    trainable = False

    def __init__(self, config: PopularityConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def fit_matrix(self, train: sp.csr_matrix) -> None:
        self.counts.copy_(torch.from_numpy(np.asarray(train.sum(axis=0)).ravel().astype(np.float32)))

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.counts[items]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(users), -1).clone()


class EASEConfig(ModelConfig):
    l2: float = Field(
        250.0, gt=0, description="L2 penalty lambda on the item-item weights (Steck 2019, eq. 8)"
    )


class EASE(Model):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019).

    B = I - P diagMat(1 / diag(P)) with P = (X^T X + lambda I)^{-1} (eq. 8); scores = X_u B.
    The model keeps each user's training row (binary, or the run's ``data.values``), since scores
    are a function of it."""

    family = "ease"
    Config = EASEConfig
    trainable = False

    def __init__(self, config: EASEConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("weights", torch.zeros(n_items, n_items))
        self.register_buffer("hist_indptr", torch.zeros(n_users + 1, dtype=torch.long))
        self.register_buffer("hist_indices", torch.zeros(0, dtype=torch.long))
        self.register_buffer("hist_values", torch.zeros(0))

    def fit_matrix(self, train: sp.csr_matrix) -> None:
        x = train.astype(np.float64)
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.config.l2
        p = np.linalg.inv(g)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        self.weights = torch.from_numpy(b.astype(np.float32))
        self.hist_indptr = torch.from_numpy(train.indptr.astype(np.int64))
        self.hist_indices = torch.from_numpy(train.indices.astype(np.int64))
        self.hist_values = torch.from_numpy(train.data.astype(np.float32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "hist_values"
        if key not in state_dict and prefix + "hist_indices" in state_dict:  # saved before values: binary
            state_dict[key] = torch.ones(len(state_dict[prefix + "hist_indices"]))
            self.hist_values = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _rows(self, users: torch.Tensor) -> torch.Tensor:
        starts, ends = self.hist_indptr[users], self.hist_indptr[users + 1]
        counts = ends - starts
        row = torch.repeat_interleave(torch.arange(len(users)), counts)
        offs = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        at = torch.repeat_interleave(starts, counts) + offs
        x = torch.zeros(len(users), self.n_items)
        x[row, self.hist_indices[at]] = self.hist_values[at]
        return x

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self._rows(users) @ self.weights

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.gather(self.score_all(users), 1, items)
