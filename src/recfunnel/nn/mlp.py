"""The MLP block shared by the deep models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden size, then an optional linear output.

    Args:
        in_dim: input width.
        hidden: hidden layer sizes, e.g. (400, 400, 400); empty for none.
        out_dim: size of a final linear layer (no activation), or None to end at the last hidden.
        dropout: dropout after each hidden activation.
        batch_norm: batch normalisation before each activation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (),
        out_dim: int | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
