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
        self.compute_dtype: torch.dtype | None = None  # None: the input's (the weights') dtype
        # plain lists (not registered twice): the layers run in compute_dtype, then the output layer
        self._low: list[nn.Module] = []
        self._high: list[nn.Module] = []

    def set_compute_dtype(self, dtype: torch.dtype | None) -> None:
        """Run the hidden layers in `dtype` (e.g. ``torch.bfloat16`` for inference on CPUs with
        AMX): their weights are converted and the input cast on the way in. The output layer (when
        there is one) stays float32 and reads the hidden activations cast back, so a score keeps
        float32 resolution (a bf16 logit near 1.5 would move in steps of 0.008 and tie). Callers
        see float32 in and out. None: everything float32 again."""
        self.net.to(torch.float32)
        layers = list(self.net)
        keep = 1 if layers and isinstance(layers[-1], nn.Linear) else 0  # the output layer (out_dim)
        self._low, self._high = layers[: len(layers) - keep], layers[len(layers) - keep :]
        if dtype is not None:
            for layer in self._low:
                layer.to(dtype)
        self.compute_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self.compute_dtype
        if dt is None or dt == x.dtype:
            return self.net(x)
        h = x.to(dt)
        for layer in self._low:
            h = layer(h)
        h = h.to(x.dtype)
        for layer in self._high:
            h = layer(h)
        return h


def set_mlp_dtype(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Set the compute dtype of every :class:`MLP` inside `model` (see
    :meth:`MLP.set_compute_dtype`); -> how many MLPs were set. Other layers keep float32."""
    mlps = [m for m in model.modules() if isinstance(m, MLP)]
    for m in mlps:
        m.set_compute_dtype(dtype)
    return len(mlps)
