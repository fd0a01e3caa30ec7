"""One shared field-embedding layer: a table per field, pooled list fields, numeric fields as
value x vector; and the first-order (linear) terms built from the same tables with dimension 1.

It reads only what a :class:`recfunnel.data.fields.FittedField` declares (name, kind,
cardinality, pooling, shares), so any feature table works: the CTR rankers embed every field of a
row, a two-tower model embeds its user fields and its item fields with two instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from recfunnel.data.fields import PAD, UNK, FieldBatch, FittedField


class FieldEmbedding(nn.Module):
    """Embeds each field of a :class:`FieldBatch`.

    categorical [B] -> [B, d]; multi-hot / sequence [B, L] -> [B, d] by mean or sum over non-PAD
    entries (an all-PAD row gives zeros); numeric [B] -> value * v_field (one learned vector per
    field, as in AutoInt section 4.1). A sequence field with ``shares`` uses that field's table.

    Args:
        fields: the fields to embed, in output order.
        dim: one embedding dimension for all, or a dimension per field name (then only
            :meth:`flat` works, not the stacked :meth:`forward`).
        sparse: sparse gradients for the tables (the Trainer steps them with RowAdam, a lazy row Adam).
        init_std: std of the normal initialisation. The PAD and UNK rows start at zero: UNK is
            what unseen users/items get, and a zero vector is the neutral guess.
    """

    def __init__(
        self,
        fields: Sequence[FittedField],
        dim: int | Mapping[str, int] = 16,
        *,
        sparse: bool = False,
        init_std: float = 1e-2,
    ) -> None:
        super().__init__()
        self.fields = tuple(fields)
        names = {f.name for f in self.fields}
        self.dims = {f.name: dim if isinstance(dim, int) else dim[f.name] for f in self.fields}
        self.tables = nn.ModuleDict()
        self.vectors = nn.ParameterDict()
        self._table_of: dict[str, str] = {}
        for f in self.fields:
            d = self.dims[f.name]
            if f.kind == "numeric":
                self.vectors[f.name] = nn.Parameter(torch.randn(d) * init_std)
            elif f.shares is not None and f.shares in names:
                if self.dims[f.shares] != d:
                    raise ValueError(f"field {f.name!r} shares {f.shares!r} but their dims differ")
                self._table_of[f.name] = f.shares
            else:
                table = nn.Embedding(f.cardinality, d, padding_idx=PAD, sparse=sparse)
                nn.init.normal_(table.weight, std=init_std)
                with torch.no_grad():
                    table.weight[[PAD, UNK]] = 0.0
                self.tables[f.name] = table
                self._table_of[f.name] = f.name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def n_fields(self) -> int:
        return len(self.fields)

    @property
    def out_dim(self) -> int:
        """Width of :meth:`flat`."""
        return sum(self.dims.values())

    def embed(self, f: FittedField, x: torch.Tensor) -> torch.Tensor:
        """One field's input -> [B, d]."""
        if f.kind == "numeric":
            return x.unsqueeze(-1) * self.vectors[f.name]
        e = self.tables[self._table_of[f.name]](x)
        if x.dim() == 1:
            return e
        pooled = e.sum(1)  # PAD rows are zero and get no gradient
        if f.pooling == "mean":
            pooled = pooled / (x != PAD).sum(1, keepdim=True).clamp(min=1)
        return pooled

    def forward(self, batch: FieldBatch) -> torch.Tensor:
        """[B, F, d] (all fields need the same dimension)."""
        return torch.stack([self.embed(f, batch[f.name]) for f in self.fields], dim=1)

    def flat(self, batch: FieldBatch) -> torch.Tensor:
        """[B, sum of dims]: the field embeddings concatenated."""
        return torch.cat([self.embed(f, batch[f.name]) for f in self.fields], dim=1)


class FieldLinear(nn.Module):
    """First-order terms: bias + sum over fields of a learned scalar per value (the "wide" part,
    logistic regression, FM's linear terms). Numeric fields contribute w_f * x_f. -> [B]."""

    def __init__(self, fields: Sequence[FittedField], *, sparse: bool = False) -> None:
        super().__init__()
        self.weights = FieldEmbedding(fields, 1, sparse=sparse, init_std=0.0)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch: FieldBatch) -> torch.Tensor:
        return self.weights.flat(batch).sum(1) + self.bias

    def terms(self, batch: FieldBatch) -> torch.Tensor:
        """Each field's contribution [B, F] (the bias excluded)."""
        return self.weights.flat(batch)


def numeric_values(batch: FieldBatch, fields: Sequence[FittedField]) -> torch.Tensor:
    """The numeric fields' standardised values stacked as dense features [B, n_numeric]."""
    cols = [batch[f.name] for f in fields if f.kind == "numeric"]
    if not cols:  # on the batch's device, as the stacked columns would be
        device = next(iter(batch.tensors.values())).device if batch.tensors else None
        return torch.zeros(len(batch), 0, device=device)
    return torch.stack(cols, dim=1)
