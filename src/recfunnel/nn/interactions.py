"""Feature interaction layers: FM second order, DCN-V2 cross layers, DLRM dot interaction."""

from __future__ import annotations

import torch
from torch import nn


class FMInteraction(nn.Module):
    """Factorisation-machine second-order term (Rendle 2010, lemma 3.1, eq. 5) in O(kn):

    sum_{i<j} <v_i, v_j> = 0.5 * sum_f [(sum_i v_if)^2 - sum_i v_if^2].

    [B, F, d] -> [B] (or the bi-interaction vector [B, d] with ``reduce=False``, as in NFM)."""

    def __init__(self, reduce: bool = True) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        out = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1))
        return out.sum(-1) if self.reduce else out


def pairwise_terms(v: torch.Tensor) -> torch.Tensor:
    """Every pair's <v_i, v_j> as [B, F, F] with a zero diagonal (for explanations; O(k n^2))."""
    g = v @ v.transpose(1, 2)
    return g - torch.diag_embed(torch.diagonal(g, dim1=1, dim2=2))


class CrossLayer(nn.Module):
    """One DCN-V2 cross layer (Wang et al. 2021, eq. 1): x_{l+1} = x_0 * (W x_l + b) + x_l,
    with W full rank, or W = U V^T of rank `low_rank` (eq. 2, without the mixture)."""

    def __init__(self, dim: int, low_rank: int | None = None) -> None:
        super().__init__()
        if low_rank is None:
            self.w = nn.Linear(dim, dim)
        else:
            self.w = nn.Sequential(nn.Linear(dim, low_rank, bias=False), nn.Linear(low_rank, dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.w(x) + x


class CrossNetwork(nn.Module):
    """`n_layers` cross layers applied to x_0 [B, D] -> [B, D]."""

    def __init__(self, dim: int, n_layers: int = 3, low_rank: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossLayer(dim, low_rank) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class DotInteraction(nn.Module):
    """DLRM's interaction (Naumov et al. 2019, section 2.1.3): the dot products of every pair of
    the F vectors [B, F, d] (i < j), concatenated after the first vector (the bottom-MLP output):
    -> [B, d + F(F-1)/2]."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        f = v.shape[1]
        i, j = torch.triu_indices(f, f, offset=1, device=v.device)
        dots = (v @ v.transpose(1, 2))[:, i, j]
        return torch.cat([v[:, 0], dots], dim=1)

    @staticmethod
    def out_dim(n_vectors: int, dim: int) -> int:
        return dim + n_vectors * (n_vectors - 1) // 2
