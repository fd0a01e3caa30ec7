"""Containers of encoded rows: :class:`FieldBatch` (the typed input of a ranking model, TorchRec's
``KeyedJaggedTensor`` in spirit, padded instead of jagged: categorical ``int64 [B]``,
multi-hot/history ``int64 [B, L]`` padded with ``PAD``, numeric ``float32 [B]``) and
:class:`CTRPart` (one labelled part of a CTR data set)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class FieldBatch:
    """Encoded rows keyed by field name: categorical int64 [B], multi-hot/sequence int64 [B, L]
    (PAD-padded), numeric float32 [B]. Every tensor has the same first dimension B."""

    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"fields have different row counts: {sizes}")

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def take(self, rows: torch.Tensor | np.ndarray | slice) -> FieldBatch:
        """The rows at `rows` (index tensor/array or slice), for every field."""
        if isinstance(rows, np.ndarray):
            rows = torch.from_numpy(rows)
        return FieldBatch({k: v[rows] for k, v in self.tensors.items()})

    def to(self, device: torch.device | str) -> FieldBatch:
        return FieldBatch({k: v.to(device) for k, v in self.tensors.items()})


@dataclass(frozen=True)
class CTRPart:
    """One part of a labelled CTR data set: encoded fields, labels and who/what each row is."""

    fields: FieldBatch
    labels: torch.Tensor  # float32 [n] in {0, 1}
    users: np.ndarray  # int64 [n] dataset user index (for GAUC)
    items: np.ndarray  # int64 [n] dataset item index
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # interaction rows

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> CTRPart:
        return CTRPart(
            self.fields.take(idx),
            self.labels[torch.from_numpy(idx)],
            self.users[idx],
            self.items[idx],
            self.rows[idx] if len(self.rows) else self.rows,
        )
