"""Multi-head self-attention over fields (AutoInt's interacting layer)."""

from __future__ import annotations

import torch
from torch import nn


class FieldSelfAttention(nn.Module):
    """AutoInt's interacting layer (Song et al. 2019, eqs. 5-8).

    For each head h and query field m: alpha_{m,k} = softmax_k <W_q e_m, W_k e_k> (eq. 5-6),
    e~_m = sum_k alpha_{m,k} W_v e_k (eq. 6), heads concatenated (eq. 7), then
    e_m^res = ReLU(e~_m + W_res e_m) (eq. 8). The paper does not scale the dot product; `scale`
    divides it by sqrt(attention_dim) as in the Transformer.

    [B, F, in_dim] -> ([B, F, heads * attention_dim], weights [B, heads, F (query), F (key)]).
    """

    def __init__(
        self,
        in_dim: int,
        attention_dim: int = 32,
        heads: int = 2,
        residual: bool = True,
        scale: bool = False,
    ) -> None:
        super().__init__()
        self.heads, self.attention_dim = heads, attention_dim
        out = heads * attention_dim
        self.q = nn.Linear(in_dim, out, bias=False)
        self.k = nn.Linear(in_dim, out, bias=False)
        self.v = nn.Linear(in_dim, out, bias=False)
        self.res = nn.Linear(in_dim, out, bias=False) if residual else None
        self.scale = attention_dim**-0.5 if scale else 1.0
        self.out_dim = out

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, f, _ = e.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # [B, F, H*d'] -> [B, H, F, d']
            return x.view(b, f, self.heads, self.attention_dim).transpose(1, 2)

        q, k, v = split(self.q(e)), split(self.k(e)), split(self.v(e))
        weights = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, f, self.out_dim)
        if self.res is not None:
            out = out + self.res(e)
        return torch.relu(out), weights
