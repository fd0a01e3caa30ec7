"""Encoding events into a :class:`~recfunnel.data.fields.batch.FieldBatch` with a fitted schema:
codes by vectorised lookups, histories strictly earlier than each event, and the labelled parts of
a CTR task (:func:`ctr_parts`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.fields.batch import CTRPart, FieldBatch
from recfunnel.data.fields.declare import (
    PAD,
    UNK,
    Categorical,
    FieldSchema,
    FieldSpec,
    FittedField,
    MultiHot,
    Numeric,
)
from recfunnel.data.fields.fit import fit_schema
from recfunnel.data.fields.values import Events, gather, list_values, scalar_values
from recfunnel.data.sequences import tail_codes
from recfunnel.data.splits import Split


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


class _LogIndex:
    """A log sorted by (user, time) once, for the history fields of many encode calls."""

    def __init__(self, log: Interactions) -> None:
        if log.timestamp is None:
            self.key = None
            return
        self.n = len(log)
        if not self.n:
            self.key = np.zeros(0, np.int64)
            return
        self.t_lo, t_hi = int(log.timestamp.min()), int(log.timestamp.max())
        self.span = t_hi - self.t_lo + 2
        self.max_user = int(log.user.max())
        if (self.max_user + 1) * self.span >= 2**62:
            raise OverflowError("user x time key does not fit int64")
        order = np.lexsort((log.order, log.timestamp, log.user))
        self.key = log.user[order] * self.span + (log.timestamp[order] - self.t_lo)
        self.items = log.item[order]

    def history(self, f: FittedField, item_codes: np.ndarray, ev: Events) -> np.ndarray:
        """[n, max_len] item codes of each event's user's last max_len log events strictly earlier
        in time (most recent last, PAD on the left)."""
        n, width = len(ev.users), f.max_len
        out = np.full((n, width), PAD, dtype=np.int64)
        if self.key is None or ev.timestamps is None:
            raise ValueError(f"history field {f.name!r} needs timestamps on both the rows and the log")
        if not self.n or not n:
            return out
        if (max(self.max_user, int(ev.users.max())) + 1) * self.span >= 2**62:
            raise OverflowError("user x time key does not fit int64")
        known = ev.users >= 0
        u = np.where(known, ev.users, 0)
        t_rel = np.clip(np.asarray(ev.timestamps, np.int64) - self.t_lo, 0, self.span - 1)
        end = np.searchsorted(self.key, u * self.span + t_rel, side="left")  # first not strictly earlier
        start = np.searchsorted(self.key, u * self.span, side="left")
        start = np.maximum(start, end - width)
        idx = end[:, None] - width + np.arange(width)[None, :]
        valid = (idx >= start[:, None]) & known[:, None]
        codes = gather(item_codes, self.items[np.clip(idx, 0, self.n - 1)], UNK)
        out[valid] = codes[valid]
        return out


def _table_codes(dataset: Dataset, f: FittedField) -> np.ndarray:
    """Codes of every row of the field's user/item table (index i -> code)."""
    n = dataset.n_users if f.source == "user" else dataset.n_items
    ev = Events(np.arange(n), np.arange(n), None)
    spec = Categorical(f.name, f.source, f.column, prefix=f.prefix)  # type: ignore[arg-type]
    return _encode_values(scalar_values(dataset, spec, ev), f.vocab)


def _gather_rows(table: np.ndarray, index: np.ndarray, missing: object) -> np.ndarray:
    """table[index] along the first axis, index -1 -> a row of `missing`."""
    unknown = index < 0
    out = (
        table[np.where(unknown, 0, index)]
        if len(table)
        else np.empty((len(index), *table.shape[1:]), table.dtype)
    )
    out[unknown] = missing
    return out


class EventEncoder:
    """Encodes (user, item, time) events with a fitted schema, the per-table work done once.

    Every user/item-table field is encoded for the whole table on first use (codes, padded
    multi-hot codes, standardised numbers) and then gathered per event, and the log that history
    fields read is sorted by (user, time) once: encoding B x C candidate pairs at request time
    costs O(B C), not O(table + log) as a fresh :func:`encode_events` does. The dataset and log
    must not change while the encoder is in use (build a new one for a new log).
    """

    def __init__(self, schema: FieldSchema, dataset: Dataset, log: Interactions | None = None) -> None:
        self.schema, self.dataset = schema, dataset
        self.log = dataset.interactions if log is None else log
        self._tables: dict[str, np.ndarray] = {}
        self._log_index: _LogIndex | None = None

    def _table(self, f: FittedField) -> np.ndarray:
        """The field's encoding of every row of its user/item table."""
        if f.name in self._tables:
            return self._tables[f.name]
        ds = self.dataset
        n = ds.n_users if f.source == "user" else ds.n_items
        rows = Events(np.arange(n), np.arange(n), None)
        if f.kind == "multi_hot":
            spec = MultiHot(f.name, f.source, f.column)  # type: ignore[arg-type]
            flat, offsets = list_values(ds, spec, rows)
            table = _padded(_encode_values(flat, f.vocab), offsets, f.max_len)
        elif f.kind == "numeric":
            x = scalar_values(ds, Numeric(f.name, f.source, f.column), rows)  # type: ignore[arg-type]
            table = np.nan_to_num((x - f.mean) / f.std, nan=0.0).astype(np.float32)
        elif f.edges is not None:
            spec = Categorical(f.name, f.source, f.column, buckets=f.edges)  # type: ignore[arg-type]
            x = scalar_values(ds, spec, rows)
            table = np.where(np.isnan(x), UNK, np.searchsorted(np.asarray(f.edges), x, side="right") + 2)
            table = table.astype(np.int64)
        else:
            table = _table_codes(ds, f)
        self._tables[f.name] = table
        return table

    def encode(
        self,
        users: np.ndarray,
        items: np.ndarray,
        timestamps: np.ndarray | None,
        recent: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> FieldBatch:
        """The events' FieldBatch; arguments as :func:`encode_events`."""
        ev = Events(np.asarray(users, np.int64), np.asarray(items, np.int64), timestamps)
        out: dict[str, torch.Tensor] = {}
        for f in self.schema:
            if f.kind == "sequence":
                item_codes = self._table(self.schema[f.shares])  # type: ignore[index]
                if recent is not None:
                    hist = tail_codes(recent[0], recent[1], item_codes, f.max_len, PAD)
                else:
                    if self._log_index is None:
                        self._log_index = _LogIndex(self.log)
                    hist = self._log_index.history(f, item_codes, ev)
                out[f.name] = torch.from_numpy(hist)
                continue
            if f.source == "event":
                out[f.name] = torch.from_numpy(self._event_field(f, ev))
                continue
            index = ev.users if f.source == "user" else ev.items
            table = self._table(f)
            missing = PAD if f.kind == "multi_hot" else (0.0 if f.kind == "numeric" else UNK)
            out[f.name] = torch.from_numpy(_gather_rows(table, index, missing))
        return FieldBatch(out)

    def _event_field(self, f: FittedField, ev: Events) -> np.ndarray:
        """A field of the event itself (its time): computed per event."""
        if f.kind == "multi_hot":
            raise ValueError(f"multi-hot field {f.name!r}: source must be 'user' or 'item'")
        if f.kind == "numeric":
            x = scalar_values(self.dataset, Numeric(f.name, f.source, f.column), ev)  # type: ignore[arg-type]
            return np.nan_to_num((x - f.mean) / f.std, nan=0.0).astype(np.float32)
        if f.edges is not None:
            spec = Categorical(f.name, f.source, f.column, buckets=f.edges)  # type: ignore[arg-type]
            x = scalar_values(self.dataset, spec, ev)
            codes = np.where(np.isnan(x), UNK, np.searchsorted(np.asarray(f.edges), x, side="right") + 2)
            return codes.astype(np.int64)
        spec = Categorical(f.name, f.source, f.column, prefix=f.prefix)  # type: ignore[arg-type]
        return _encode_values(scalar_values(self.dataset, spec, ev), f.vocab)


def encode_events(
    schema: FieldSchema,
    dataset: Dataset,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray | None,
    log: Interactions | None = None,
    recent: tuple[np.ndarray, np.ndarray] | None = None,
) -> FieldBatch:
    """Encode arbitrary (user, item, time) events: dataset rows, or candidate pairs at request time.
    For repeated calls over the same dataset and log, keep an :class:`EventEncoder`.

    Args:
        users, items: int64 [n] vocabulary indices; -1 for an id the dataset does not know (its
            table values are UNK and its history empty).
        timestamps: int64 [n] unix seconds, or None when no field reads the event time.
        log: interactions that histories read (all known events; only strictly earlier ones are
            used for each row). Defaults to the dataset's interactions.
        recent: each event's history given directly instead of read from `log` (indptr [n + 1],
            item indices, oldest first): a request's recent items at serving time, events the log
            does not hold yet included, for an anonymous visitor too.
    """
    return EventEncoder(schema, dataset, log).encode(users, items, timestamps, recent)


def encode_rows(
    schema: FieldSchema, dataset: Dataset, rows: np.ndarray, log: Interactions | None = None
) -> FieldBatch:
    """Encode the dataset's interaction `rows` (histories from `log`, default all interactions)."""
    ints = dataset.interactions.take(rows)
    return encode_events(schema, dataset, ints.user, ints.item, ints.timestamp, log)


def ctr_parts(
    dataset: Dataset,
    split: Split,
    specs: Sequence[FieldSpec] | None = None,
    threshold: float = 4.0,
) -> tuple[FieldSchema, dict[str, CTRPart]]:
    """Fit `specs` (default :func:`recfunnel.data.movielens.movielens_fields`) on the split's train
    part and encode train, valid and test with label = rating >= threshold. Histories read all
    interactions, but only those strictly earlier than each row, so no row sees its own or a later
    event."""
    ratings = dataset.interactions.rating
    if ratings is None:
        raise ValueError(f"dataset {dataset.name!r} has no ratings to derive CTR labels from")
    if specs is None:
        from recfunnel.data.movielens import movielens_fields  # the MovieLens task imports this module

        specs = movielens_fields()
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
