"""Feature fields: a declared schema, fitted on a train part, encoded into tensors by vectorised ops.

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
``min_count`` times in the train rows), ``2..`` the vocabulary. Vocabularies, bucket edges and
normalisation statistics are fitted on the train rows only (:func:`fit_schema`).

A :class:`FieldBatch` is the typed container of encoded rows (TorchRec's ``KeyedJaggedTensor`` in
spirit, padded instead of jagged): categorical ``int64 [B]``, multi-hot/history ``int64 [B, L]``
padded with ``PAD``, numeric ``float32 [B]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl
import torch

from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.splits import Split

__all__ = [
    "PAD",
    "UNK",
    "Categorical",
    "CTRPart",
    "FieldBatch",
    "FieldSchema",
    "FittedField",
    "ItemHistory",
    "MultiHot",
    "Numeric",
    "ctr_parts",
    "encode_events",
    "encode_rows",
    "event_columns",
    "fit_schema",
    "movielens_fields",
]

PAD = 0
UNK = 1
Source = Literal["user", "item", "event"]
Pooling = Literal["mean", "sum"]
EVENT_COLUMNS = ("hour", "weekday", "timestamp")


# --------------------------------------------------------------------------------------------------
# declarations


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


# --------------------------------------------------------------------------------------------------
# the batch container


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


# --------------------------------------------------------------------------------------------------
# raw values of a field


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
class _Events:
    """Rows to encode: user and item indices (-1 = unknown) and times."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None


def _gather(table_values: np.ndarray, index: np.ndarray, missing: object) -> np.ndarray:
    """table_values[index] with index -1 (an id outside the vocabulary) -> `missing`."""
    ext = np.concatenate([table_values, np.asarray([missing], dtype=table_values.dtype)])
    return ext[np.where(index < 0, len(table_values), index)]


def _scalar_values(dataset: Dataset, spec: Categorical | Numeric, ev: _Events) -> np.ndarray:
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
        return _gather(col.cast(pl.Float64).fill_null(np.nan).to_numpy(), index, np.nan)
    return _gather(_as_text(col, spec.prefix).to_numpy().astype(object), index, None)


def _list_values(dataset: Dataset, spec: MultiHot, ev: _Events) -> tuple[np.ndarray, np.ndarray]:
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


# --------------------------------------------------------------------------------------------------
# fitting


def _fit_vocab(values: np.ndarray, min_count: int) -> tuple[str, ...]:
    v = values[values != None]  # noqa: E711  (object array: elementwise comparison)
    if len(v) == 0:
        return ()
    uniq, counts = np.unique(v.astype(str), return_counts=True)
    return tuple(uniq[counts >= min_count].tolist())


def _encode_values(values: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    """Codes of raw values: 2 + position in the sorted vocabulary, UNK for null or unseen."""
    out = np.full(len(values), UNK, dtype=np.int64)
    if not vocab or not len(values):
        return out
    present = values != None  # noqa: E711
    v = values[present].astype(str)
    voc = np.asarray(vocab)
    pos = np.searchsorted(voc, v)
    hit = voc[np.minimum(pos, len(voc) - 1)] == v
    out[np.flatnonzero(present)[hit]] = pos[hit] + 2
    return out


def fit_schema(specs: Sequence[FieldSpec], dataset: Dataset, rows: np.ndarray) -> FieldSchema:
    """Fit every field on the interaction `rows` (the train part): vocabularies with their
    min_count, quantile bucket edges, mean/std. Later rows see unseen values as UNK."""
    ints = dataset.interactions.take(rows)
    ev = _Events(ints.user, ints.item, ints.timestamp)
    fitted: list[FittedField] = []
    for spec in specs:
        if isinstance(spec, ItemHistory):
            fitted.append(_fit_history(spec, fitted))
        elif isinstance(spec, MultiHot):
            flat, offsets = _list_values(dataset, spec, ev)
            vocab = _fit_vocab(flat, spec.min_count)
            longest = int(np.diff(offsets).max(initial=1))
            fitted.append(
                FittedField(
                    spec.name,
                    "multi_hot",
                    spec.source,
                    spec.column,
                    cardinality=len(vocab) + 2,
                    vocab=vocab,
                    pooling=spec.pooling,
                    max_len=max(1, min(longest, spec.max_len or longest)),
                )
            )
        elif isinstance(spec, Numeric):
            x = _scalar_values(dataset, spec, ev)
            mean = float(np.nanmean(x)) if np.isfinite(x).any() else 0.0
            std = float(np.nanstd(x)) if np.isfinite(x).any() else 1.0
            fitted.append(
                FittedField(spec.name, "numeric", spec.source, spec.column, mean=mean, std=std or 1.0)
            )
        elif spec.buckets is not None:
            x = _scalar_values(dataset, spec, ev)
            edges = spec.buckets
            if isinstance(edges, int):
                edges = tuple(np.unique(np.nanquantile(x, np.linspace(0, 1, edges + 1)[1:-1])).tolist())
            edges = tuple(float(e) for e in edges)
            fitted.append(
                FittedField(
                    spec.name,
                    "categorical",
                    spec.source,
                    spec.column,
                    cardinality=len(edges) + 3,
                    edges=edges,
                )
            )
        else:
            vocab = _fit_vocab(_scalar_values(dataset, spec, ev), spec.min_count)
            fitted.append(
                FittedField(
                    spec.name,
                    "categorical",
                    spec.source,
                    spec.column,
                    cardinality=len(vocab) + 2,
                    vocab=vocab,
                    prefix=spec.prefix,
                )
            )
    return FieldSchema(tuple(fitted))


def _fit_history(spec: ItemHistory, fitted: list[FittedField]) -> FittedField:
    target = next((f for f in fitted if f.name == spec.shares), None)
    if target is None or target.kind != "categorical" or target.source != "item" or target.column != "id":
        raise ValueError(
            f"history field {spec.name!r} shares {spec.shares!r}, which must be declared before it as "
            "Categorical(source='item', column='id')"
        )
    return FittedField(
        spec.name,
        "sequence",
        "event",
        "history",
        cardinality=target.cardinality,
        pooling=spec.pooling,
        max_len=spec.max_len,
        shares=spec.shares,
    )


# --------------------------------------------------------------------------------------------------
# encoding


def _padded(codes: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """Flat codes with row offsets -> [n, width] PAD-padded (each row keeps its first `width`)."""
    n = len(offsets) - 1
    out = np.full((n, width), PAD, dtype=np.int64)
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(codes)) - offsets[row]
    keep = pos < width
    out[row[keep], pos[keep]] = codes[keep]
    return out


def _history(f: FittedField, item_codes: np.ndarray, ev: _Events, log: Interactions) -> np.ndarray:
    """[n, max_len] item codes of each event's user's last max_len log events strictly earlier in
    time (most recent last, PAD on the left). Vectorised with a (user, time) key and searchsorted."""
    n, width = len(ev.users), f.max_len
    out = np.full((n, width), PAD, dtype=np.int64)
    if log.timestamp is None or ev.timestamps is None:
        raise ValueError(f"history field {f.name!r} needs timestamps on both the rows and the log")
    if not len(log) or not n:
        return out
    t_lo, t_hi = int(log.timestamp.min()), int(log.timestamp.max())
    span = t_hi - t_lo + 2
    n_users = int(max(log.user.max(), ev.users.max())) + 1
    if n_users * span >= 2**62:
        raise OverflowError("user x time key does not fit int64")
    order = np.lexsort((log.order, log.timestamp, log.user))
    key = log.user[order] * span + (log.timestamp[order] - t_lo)
    hist_items = log.item[order]
    known = ev.users >= 0
    u = np.where(known, ev.users, 0)
    t_rel = np.clip(np.asarray(ev.timestamps, np.int64) - t_lo, 0, span - 1)
    end = np.searchsorted(key, u * span + t_rel, side="left")  # first log event not strictly earlier
    start = np.searchsorted(key, u * span, side="left")
    start = np.maximum(start, end - width)
    idx = end[:, None] - width + np.arange(width)[None, :]
    valid = (idx >= start[:, None]) & known[:, None]
    codes = _gather(item_codes, hist_items[np.clip(idx, 0, len(order) - 1)], UNK)
    out[valid] = codes[valid]
    return out


def _table_codes(dataset: Dataset, f: FittedField) -> np.ndarray:
    """Codes of every row of the field's user/item table (index i -> code)."""
    n = dataset.n_users if f.source == "user" else dataset.n_items
    ev = _Events(np.arange(n), np.arange(n), None)
    spec = Categorical(f.name, f.source, f.column, prefix=f.prefix)  # type: ignore[arg-type]
    return _encode_values(_scalar_values(dataset, spec, ev), f.vocab)


def encode_events(
    schema: FieldSchema,
    dataset: Dataset,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    log: Interactions | None = None,
) -> FieldBatch:
    """Encode arbitrary (user, item, time) events: dataset rows, or candidate pairs at request time.

    Args:
        users, items: int64 [n] vocabulary indices; -1 for an id the dataset does not know (its
            table values are UNK and its history empty).
        timestamps: int64 [n] unix seconds, or None when no field reads the event time.
        log: interactions that histories read (all known events; only strictly earlier ones are
            used for each row). Defaults to the dataset's interactions.
    """
    ev = _Events(np.asarray(users, np.int64), np.asarray(items, np.int64), timestamps)
    log = dataset.interactions if log is None else log
    out: dict[str, torch.Tensor] = {}
    for f in schema:
        if f.kind == "sequence":
            item_codes = _table_codes(dataset, schema[f.shares])  # type: ignore[index]
            out[f.name] = torch.from_numpy(_history(f, item_codes, ev, log))
        elif f.kind == "multi_hot":
            spec = MultiHot(f.name, f.source, f.column)  # type: ignore[arg-type]
            flat, offsets = _list_values(dataset, spec, ev)
            out[f.name] = torch.from_numpy(_padded(_encode_values(flat, f.vocab), offsets, f.max_len))
        elif f.kind == "numeric":
            x = _scalar_values(dataset, Numeric(f.name, f.source, f.column), ev)  # type: ignore[arg-type]
            z = np.nan_to_num((x - f.mean) / f.std, nan=0.0)
            out[f.name] = torch.from_numpy(z.astype(np.float32))
        elif f.edges is not None:
            spec = Categorical(f.name, f.source, f.column, buckets=f.edges)  # type: ignore[arg-type]
            x = _scalar_values(dataset, spec, ev)
            codes = np.where(np.isnan(x), UNK, np.searchsorted(np.asarray(f.edges), x, side="right") + 2)
            out[f.name] = torch.from_numpy(codes.astype(np.int64))
        else:
            spec = Categorical(f.name, f.source, f.column, prefix=f.prefix)  # type: ignore[arg-type]
            if f.source == "event":
                codes = _encode_values(_scalar_values(dataset, spec, ev), f.vocab)
            else:  # encode the table once, then gather: strings touched n_table times, not n rows
                index = ev.users if f.source == "user" else ev.items
                codes = _gather(_table_codes(dataset, f), index, UNK)
            out[f.name] = torch.from_numpy(codes)
    return FieldBatch(out)


def encode_rows(
    schema: FieldSchema, dataset: Dataset, rows: np.ndarray, log: Interactions | None = None
) -> FieldBatch:
    """Encode the dataset's interaction `rows` (histories from `log`, default all interactions)."""
    ints = dataset.interactions.take(rows)
    return encode_events(schema, dataset, ints.user, ints.item, ints.timestamp, log)


# --------------------------------------------------------------------------------------------------
# MovieLens as a CTR task


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


# MovieLens-1M's age groups (under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), used for 100K too.
ML_AGE_EDGES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)
# Release-year buckets: coarse before the 1990s, by year after (most of the catalogue is 1990s).
ML_YEAR_EDGES = (1940.0, 1960.0, 1970.0, 1980.0, 1990.0, 1993.0, 1994.0, 1995.0, 1996.0, 1997.0, 1998.0)


def movielens_fields(
    zip_prefix: int = 2, history: int = 10, dense: bool = True, min_count: int = 1
) -> tuple[FieldSpec, ...]:
    """MovieLens-100K/1M as a CTR task: user_id, item_id, age bucket, gender, occupation, zip
    prefix, genres (multi-hot), release-year bucket, hour and weekday of the rating, the user's
    last `history` items before it. `dense`: add age and release year as standardised numerics
    too (DLRM's dense features; other models embed them as value x vector)."""
    specs: list[FieldSpec] = [
        Categorical("user_id", "user", "id", min_count=min_count),
        Categorical("item_id", "item", "id", min_count=min_count),
        Categorical("age", "user", "age", buckets=ML_AGE_EDGES),
        Categorical("gender", "user", "gender"),
        Categorical("occupation", "user", "occupation"),
        Categorical("zip", "user", "zip", prefix=zip_prefix),
        MultiHot("genres", "item", "genres", pooling="mean"),
        Categorical("year", "item", "year", buckets=ML_YEAR_EDGES),
        Categorical("hour", "event", "hour"),
        Categorical("weekday", "event", "weekday"),
        ItemHistory("history", shares="item_id", max_len=history, pooling="mean"),
    ]
    if dense:
        specs += [Numeric("age_value", "user", "age"), Numeric("year_value", "item", "year")]
    return tuple(specs)


def ctr_parts(
    dataset: Dataset,
    split: Split,
    specs: Sequence[FieldSpec] | None = None,
    threshold: float = 4.0,
) -> tuple[FieldSchema, dict[str, CTRPart]]:
    """Fit `specs` (default :func:`movielens_fields`) on the split's train part and encode train,
    valid and test with label = rating >= threshold. Histories read all interactions, but only
    those strictly earlier than each row, so no row sees its own or a later event."""
    ratings = dataset.interactions.rating
    if ratings is None:
        raise ValueError(f"dataset {dataset.name!r} has no ratings to derive CTR labels from")
    specs = movielens_fields() if specs is None else specs
    schema = fit_schema(specs, dataset, split.train)
    parts = {}
    for name in ("train", "valid", "test"):
        rows = split.rows(name)
        ints = dataset.interactions.take(rows)
        parts[name] = CTRPart(
            encode_rows(schema, dataset, rows),
            torch.from_numpy((ratings[rows] >= threshold).astype(np.float32)),
            ints.user,
            ints.item,
            rows,
        )
    return schema, parts
