"""GRU4Rec: session-based recommendation with recurrent networks (Hidasi et al., ICLR 2016;
Hidasi & Karatzoglou, CIKM 2018)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recfunnel.models.base import ModelConfig
from recfunnel.models.seq.blocks import PoolDropout
from recfunnel.models.seq.sequential import SequenceModel


class GRU4RecConfig(ModelConfig):
    hidden: int = Field(100, ge=1, description="GRU hidden size (also the item embedding size when tied)")
    layers: int = Field(1, ge=1, description="stacked GRU layers")
    max_len: int = Field(50, ge=1, description="the most recent items the model reads")
    dropout_embed: float = Field(0.0, ge=0, lt=1, description="dropout on the input item embeddings")
    dropout_hidden: float = Field(0.2, ge=0, lt=1, description="dropout on the GRU output")
    tied: bool = Field(
        True,
        description="one item table for input and output (GRU4Rec's 'constrained embedding'); "
        "else a separate input embedding",
    )


class GRU4Rec(SequenceModel):
    """Item embedding -> GRU -> hidden state h_t; item i scores h_t . W_i + b_i (the output layer
    of Hidasi et al.; W shared with the input embedding when `tied`). Trained per sequence with
    teacher forcing; default objective cross-entropy over all items (``seq-ce``), BPR-max
    (``seq-bpr-max``, the 2018 paper) optional.

    The GRU runs on packed sequences, so left padding never enters the recurrence.
    """

    family = "gru4rec"
    Config = GRU4RecConfig
    objective = "seq-ce"

    def __init__(self, config: GRU4RecConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        h = config.hidden
        self.out_emb = nn.Embedding(n_items + 1, h, padding_idx=0)
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1))
        self.in_emb = None if config.tied else nn.Embedding(n_items + 1, h, padding_idx=0)
        self.gru = nn.GRU(h, h, num_layers=config.layers, batch_first=True)
        self.emb_drop = PoolDropout(config.dropout_embed)
        self.hidden_drop = PoolDropout(config.dropout_hidden)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.out_emb.weight[0].zero_()
            if self.in_emb is not None:
                self.in_emb.weight[0].zero_()

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        b, w = seq.shape
        lengths = (seq != 0).sum(1)
        shift = (w - lengths).unsqueeze(1)
        cols = torch.arange(w, device=seq.device).unsqueeze(0)
        # left-padded -> right-padded (pack_padded_sequence wants the real items first)
        src = cols + shift
        right = torch.where(src < w, seq.gather(1, src.clamp(max=w - 1)), 0)
        emb = self.out_emb if self.in_emb is None else self.in_emb
        x = self.emb_drop(emb(right))
        # pack_padded_sequence wants the lengths on the CPU whatever the input's device
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=w)
        # back to left padding: column j of the output holds step j - shift
        back = cols - shift
        out = out.gather(1, back.clamp(min=0).unsqueeze(-1).expand(-1, -1, out.shape[-1]))
        out = out * (back >= 0).unsqueeze(-1)
        return self.hidden_drop(out)

    def output_table(self) -> torch.Tensor:
        return self.out_emb.weight

    def output_bias(self) -> torch.Tensor:
        return self.out_bias
