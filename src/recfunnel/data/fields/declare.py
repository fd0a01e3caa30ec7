"""Field declarations (what a model's input slots read) and the fitted schema.

A field is one input slot of a ranking model. Four kinds (DESIGN.md, "feature fields"):

* :class:`Categorical` - one value per row from a vocabulary (a table column, optionally cut to a
  prefix, or a numeric column cut into buckets);
* :class:`MultiHot` - a list of values per row (e.g. genres), pooled by the embedding layer;
* :class:`Numeric` - a float per row, standardised with the train mean and std;
* :class:`ItemHistory` - the user's last ``max_len`` items strictly before the event, pooled; it
  shares the vocabulary (and embedding table) of an item-id field.

Values come from a ``source``: the dataset's user table, item table (``column="id"`` is the raw id
itself), or the event (``hour``, ``weekday``, ``timestamp`` derived from the interaction time, UTC).

Codes, the same for every table (what :class:`recfunnel.nn.FieldEmbedding` expects):
``PAD = 0`` (padding of list fields, never a value), ``UNK = 1`` (null, or a value not seen
``min_count`` times in the train rows), ``2..`` the vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

PAD = 0
UNK = 1
Source = Literal["user", "item", "event"]
Pooling = Literal["mean", "sum"]
EVENT_COLUMNS = ("hour", "weekday", "timestamp")


@dataclass(frozen=True)
class Categorical:
    """One value per row. `prefix`: keep the first characters of the value (zip -> region);
    `buckets`: the column is numeric, cut at these edges (or at that many train quantiles) and
    each bucket is a category (age -> age group); `min_count`: rarer train values map to UNK."""

    name: str
    source: Source
    column: str
    min_count: int = 1
    prefix: int | None = None
    buckets: tuple[float, ...] | int | None = None


@dataclass(frozen=True)
class MultiHot:
    """A list of values per row (a list column), pooled by `pooling` in the embedding layer."""

    name: str
    source: Source
    column: str
    pooling: Pooling = "mean"
    min_count: int = 1
    max_len: int | None = None


@dataclass(frozen=True)
class Numeric:
    """A float per row, standardised as (x - mean) / std with train statistics; null -> 0."""

    name: str
    source: Source
    column: str


@dataclass(frozen=True)
class ItemHistory:
    """The user's last `max_len` items strictly before the event (ties in time excluded), in the
    vocabulary of the item-id field `shares` (whose embedding table it reuses), pooled."""

    name: str
    shares: str = "item_id"
    max_len: int = 10
    pooling: Pooling = "mean"


FieldSpec = Categorical | MultiHot | Numeric | ItemHistory


@dataclass(frozen=True)
class FittedField:
    """A field with what was learned from the train rows; all an embedding layer needs to know.

    kind: "categorical" | "multi_hot" | "numeric" | "sequence". cardinality: rows of its embedding
    table (PAD, UNK and the vocabulary); 0 for numeric fields. vocab: the values of codes 2.. (as
    strings). edges: bucket edges of a bucketised numeric column. mean/std: numeric statistics.
    """

    name: str
    kind: str
    source: str
    column: str
    cardinality: int = 0
    vocab: tuple[str, ...] = ()
    pooling: str = "mean"
    max_len: int = 1
    shares: str | None = None
    prefix: int | None = None
    edges: tuple[float, ...] | None = None
    mean: float = 0.0
    std: float = 1.0

    def decode(self, code: int) -> str:
        """Human-readable value of one code (for explanations)."""
        if code == PAD:
            return "<pad>"
        if code == UNK:
            return "<unknown>"
        if self.edges is not None:
            e = (-np.inf, *self.edges, np.inf)
            i = code - 2
            return f"[{e[i]:g}, {e[i + 1]:g})"
        return self.vocab[code - 2]


@dataclass(frozen=True)
class FieldSchema:
    """The fitted fields of a model's input, in order. JSON round trip for artifacts."""

    fields: tuple[FittedField, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"field names must be unique, got {names}")

    def __iter__(self) -> Iterator[FittedField]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> FittedField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r}; fields: {', '.join(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def to_json(self) -> str:
        return json.dumps([_field_dict(f) for f in self.fields], indent=1)

    @classmethod
    def from_json(cls, text: str) -> FieldSchema:
        out = []
        for d in json.loads(text):
            d["vocab"] = tuple(d["vocab"])
            d["edges"] = None if d["edges"] is None else tuple(d["edges"])
            out.append(FittedField(**d))
        return cls(tuple(out))


def _field_dict(f: FittedField) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in f.__dict__.items()}
