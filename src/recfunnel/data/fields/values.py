"""Raw values of a field for a set of events: table columns gathered per row, event-time columns,
list columns flattened with row offsets. Shared by fitting and encoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset
from recfunnel.data.fields.declare import EVENT_COLUMNS, Categorical, FieldSpec, MultiHot, Numeric


def event_columns(timestamps: np.ndarray) -> dict[str, np.ndarray]:
    """Columns derived from event time (unix seconds, UTC): hour 0-23, weekday 0 = Monday."""
    ts = np.asarray(timestamps, dtype=np.int64)
    days = np.floor_divide(ts, 86400)
    return {
        "hour": np.floor_divide(ts, 3600) % 24,
        "weekday": (days + 3) % 7,  # 1970-01-01 was a Thursday
        "timestamp": ts,
    }


def _table(dataset: Dataset, source: str) -> pl.DataFrame:
    table = dataset.user_features if source == "user" else dataset.item_features
    vocab = dataset.users if source == "user" else dataset.items
    if table is None:
        table = pl.DataFrame({"id": list(vocab.ids)})
    return table


def _column(dataset: Dataset, spec: FieldSpec) -> pl.Series:
    """The spec's column of its user or item table (row i = index i of the vocabulary)."""
    table = _table(dataset, spec.source)
    if spec.column not in table.columns:
        raise KeyError(
            f"field {spec.name!r}: the {spec.source} table of dataset {dataset.name!r} has no column "
            f"{spec.column!r}; columns: {', '.join(table.columns)}"
        )
    return table[spec.column]


def _as_text(s: pl.Series, prefix: int | None) -> pl.Series:
    s = s.cast(pl.Utf8)
    return s.str.slice(0, prefix) if prefix is not None else s


@dataclass(frozen=True)
class Events:
    """Rows to encode: user and item indices (-1 = unknown) and times."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None


def gather(table_values: np.ndarray, index: np.ndarray, missing: object) -> np.ndarray:
    """table_values[index] with index -1 (an id outside the vocabulary) -> `missing`."""
    ext = np.concatenate([table_values, np.asarray([missing], dtype=table_values.dtype)])
    return ext[np.where(index < 0, len(table_values), index)]


def scalar_values(dataset: Dataset, spec: Categorical | Numeric, ev: Events) -> np.ndarray:
    """Per-row raw values: object array of str/None (categorical) or float64 with NaN (numeric)."""
    numeric = isinstance(spec, Numeric) or spec.buckets is not None
    if spec.source == "event":
        if ev.timestamps is None:
            raise ValueError(f"field {spec.name!r} reads the event time, but the rows have no timestamp")
        cols = event_columns(ev.timestamps)
        if spec.column not in cols:
            raise KeyError(f"field {spec.name!r}: event column {spec.column!r}; valid: {EVENT_COLUMNS}")
        col = pl.Series(spec.column, cols[spec.column])
        return col.cast(pl.Float64).to_numpy() if numeric else _as_text(col, spec.prefix).to_numpy()
    col = _column(dataset, spec)
    index = ev.users if spec.source == "user" else ev.items
    if numeric:
        return gather(col.cast(pl.Float64).fill_null(np.nan).to_numpy(), index, np.nan)
    return gather(_as_text(col, spec.prefix).to_numpy().astype(object), index, None)


def list_values(dataset: Dataset, spec: MultiHot, ev: Events) -> tuple[np.ndarray, np.ndarray]:
    """Flattened values of a list column for the rows, and each row's offset into them ([n+1])."""
    if spec.source == "event":
        raise ValueError(f"multi-hot field {spec.name!r}: source must be 'user' or 'item'")
    col = _column(dataset, spec).cast(pl.List(pl.Utf8)).list.drop_nulls()
    lengths = col.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = col.explode().drop_nulls().to_numpy().astype(object)  # empty lists explode to a null
    starts = np.concatenate([[0], np.cumsum(lengths)])
    index = ev.users if spec.source == "user" else ev.items
    known = index >= 0
    n = np.where(known, lengths[np.where(known, index, 0)], 0)
    first = starts[np.where(known, index, 0)]
    offsets = np.concatenate([[0], np.cumsum(n)])
    row = np.repeat(np.arange(len(index)), n)
    pos = np.arange(offsets[-1]) - offsets[row]
    return flat[first[row] + pos], offsets
