"""Item2Vec (Barkan & Koenigstein 2016): skip-gram with negative sampling over each user's
time-ordered training items, in PyTorch (objective ``sgns`` in
:mod:`recfunnel.train.retrieval_objectives`).

Item vectors are the input ("centre") embeddings, used for ``similar_items`` and as the index's
item side. A user's vector is the mean of the vectors of their ``recent`` latest items: the model is
:class:`~recfunnel.models.base.HistoryAware`, the histories it reads are 1-D buffers
(``hist_indptr``, ``hist_items``) saved with the weights, and ``encode_items`` embeds ad-hoc lists.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recfunnel.models.base import SPARSE_HELP, Model, ModelConfig, Sparse, sparse_table

__all__ = ["Item2Vec", "Item2VecConfig"]


class Item2VecConfig(ModelConfig):
    dim: int = Field(64, ge=1, description="embedding dimension")
    recent: int = Field(20, ge=1, description="latest items averaged into a user vector")
    sparse: Sparse = Field(True, description=SPARSE_HELP)


class Item2Vec(Model):
    """Item2Vec (Barkan & Koenigstein 2016): skip-gram item vectors; a user is the mean of the
    vectors of their latest items."""

    family = "item2vec"
    Config = Item2VecConfig
    objective = "sgns"

    def __init__(self, config: Item2VecConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        sparse = sparse_table(config.sparse, n_items, config.dim)
        self.in_emb = nn.Embedding(n_items, config.dim, sparse=sparse)
        self.out_emb = nn.Embedding(n_items, config.dim, sparse=sparse)
        nn.init.uniform_(self.in_emb.weight, -0.5 / config.dim, 0.5 / config.dim)  # word2vec's init
        nn.init.zeros_(self.out_emb.weight)
        self.register_buffer("hist_indptr", torch.zeros(n_users + 1, dtype=torch.int64))
        self.register_buffer("hist_items", torch.zeros(0, dtype=torch.int64))

    def sgns_scores(self, centre: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """<in(centre), out(candidate)>: [B], [B, C] -> [B, C]."""
        return (self.in_emb(centre).unsqueeze(1) * self.out_emb(candidates)).sum(-1)

    # ---- HistoryAware ---------------------------------------------------------------------------
    def set_history(self, indptr: torch.Tensor, items: torch.Tensor) -> None:
        device = self.in_emb.weight.device  # the buffers follow the model's device
        indptr = torch.as_tensor(indptr, dtype=torch.int64)
        if len(indptr) != self.n_users + 1:
            raise ValueError(
                f"history indptr has {len(indptr)} entries, expected n_users + 1 = {self.n_users + 1}"
            )
        self.hist_indptr = indptr.to(device, copy=True)
        self.hist_items = torch.as_tensor(items, dtype=torch.int64).to(device, copy=True)

    def get_history(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if len(self.hist_items) == 0:
            return None
        return self.hist_indptr, self.hist_items

    def encode_items(self, indptr: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean in-vector of the last `recent` items of each list -> [B, dim] (zeros if empty)."""
        device = self.in_emb.weight.device
        indptr = torch.as_tensor(indptr, dtype=torch.int64).to(device)
        items = torch.as_tensor(items, dtype=torch.int64).to(device)
        lengths = indptr.diff()
        row = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
        from_end = indptr[1:][row] - 1 - torch.arange(len(items), device=device)
        sel = from_end < self.config.recent
        out = torch.zeros(len(lengths), self.config.dim, dtype=self.in_emb.weight.dtype, device=device)
        out.index_add_(0, row[sel], self.in_emb.weight[items[sel]])
        return out / lengths.clamp(min=1, max=self.config.recent).unsqueeze(1).to(out.dtype)

    # ---- Factorised -----------------------------------------------------------------------------
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        start, end = self.hist_indptr[users], self.hist_indptr[users + 1]
        lengths = end - start
        device = lengths.device
        indptr = torch.zeros(len(users) + 1, dtype=torch.int64, device=device)
        indptr[1:] = torch.cumsum(lengths, 0)
        row = torch.repeat_interleave(torch.arange(len(users), device=device), lengths)
        pos = torch.arange(int(indptr[-1]), device=device) - indptr[:-1][row]
        return self.encode_items(indptr, self.hist_items[start[row] + pos])

    def item_vectors(self) -> torch.Tensor:
        return self.in_emb.weight

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user_vectors(users).unsqueeze(1) * self.in_emb(items)).sum(-1)
