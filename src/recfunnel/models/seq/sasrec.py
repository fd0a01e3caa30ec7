"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018)."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from recfunnel.models.base import ModelConfig
from recfunnel.models.seq.blocks import PoolDropout, SelfAttentionBlock, attention_mask
from recfunnel.models.seq.sequential import SequenceModel


class SASRecConfig(ModelConfig):
    """Defaults: the paper's settings for the sparse Amazon data (sec. IV-C): d = 50, n = 50,
    two blocks, one head, dropout 0.5 (the paper used n = 200 and dropout 0.2 on MovieLens-1M)."""

    hidden: int = Field(50, ge=1, description="embedding and hidden size d")
    max_len: int = Field(50, ge=1, description="the most recent items the model reads, n")
    blocks: int = Field(2, ge=1, description="self-attention blocks b")
    heads: int = Field(1, ge=1, description="attention heads per block")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout rate (embeddings, attention, feed-forward)")


class SASRec(SequenceModel):
    """Item embedding M (shared by input and output, eq. 6 "shared item embedding") scaled by
    sqrt(d), plus a learned positional embedding P; `blocks` causal self-attention blocks
    (eq. 2-4, as in the authors' code: LayerNorm on queries, residuals, dropout); a final
    LayerNorm. The state F_t at position t scores item i as F_t . M_i (eq. 6).

    Positions count back from the newest item (the last column always has the last position), as
    in the paper's fixed-length left-padded input, so cutting a batch to its longest real
    sequence changes nothing; padded keys are masked, so padding never changes an output.
    Default objective: full softmax cross-entropy (``seq-ce``); the paper's is ``seq-bce``.
    """

    family = "sasrec"
    Config = SASRecConfig
    objective = "seq-ce"

    def __init__(self, config: SASRecConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        d = config.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_drop = PoolDropout(config.dropout)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(d, config.heads, config.dropout) for _ in range(config.blocks)
        )
        self.final_norm = nn.LayerNorm(d, eps=1e-8)
        self.scale = math.sqrt(d)
        # the authors' PyTorch port: Xavier-normal for every matrix, pad rows zero
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        return self._encode(seq, last_only=False)

    def encode_last(self, seq: torch.Tensor) -> torch.Tensor:
        """The state at the last position only, [B, d]: the last block computes that query alone
        (the earlier blocks need every position for its keys)."""
        return self._encode(seq, last_only=True)[:, -1]

    def _encode(self, seq: torch.Tensor, last_only: bool) -> torch.Tensor:
        w = seq.shape[1]
        if w > self.max_len:
            seq, w = seq[:, -self.max_len :], self.max_len
        x = self.item_emb(seq) * self.scale + self.pos_emb.weight[self.max_len - w :]
        x = self.emb_drop(x)
        mask = attention_mask(seq)
        for n, block in enumerate(self.blocks, 1):
            x = block(x, mask, last_only=last_only and n == len(self.blocks))
        return self.final_norm(x)

    def output_table(self) -> torch.Tensor:
        return self.item_emb.weight
