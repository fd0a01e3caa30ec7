"""The immutable Dataset: interactions as columnar arrays, vocabularies, and feature tables."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import polars as pl
import scipy.sparse as sp

from recfunnel.data.errors import DataError
from recfunnel.data.vocab import Vocab

#: What to do with rows repeating an earlier (user, item) pair: "aggregate" them into one row,
#: "refuse" the data, or "keep" every row (sequence and session logs, where a repeat is an event).
DuplicatePolicy = Literal["aggregate", "refuse", "keep"]
DUPLICATE_POLICIES: tuple[str, ...] = get_args(DuplicatePolicy)


def _frozen(a: np.ndarray | None, dtype: type) -> np.ndarray | None:
    """`a` as a read-only contiguous array of `dtype`: a copy, unless `a` is already a read-only
    array owning its memory (fresh from :func:`sealed`), which nobody can write into, so it is
    taken as is (a 20M-row column is 160 MB; copying it doubled a reader's peak)."""
    if a is None:
        return None
    out = np.ascontiguousarray(a, dtype=dtype)
    if out is a and (a.flags.writeable or not a.flags.owndata):
        out = out.copy()
    out.flags.writeable = False
    return out


def sealed(a: np.ndarray | None) -> np.ndarray | None:
    """`a` (an array only the caller holds, e.g. fresh from fancy indexing) made read-only, so that
    :class:`Interactions` takes it without a copy."""
    if a is not None:
        a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Interactions:
    """Interaction rows as parallel read-only arrays (indices, not raw ids).

    Attributes:
        user, item: int64 [n] vocabulary indices.
        timestamp: int64 [n] or None when the source has no time.
        rating: float32 [n] explicit rating or None.
        weight: float32 [n] implicit strength (play count, ...) or None (all 1).
        order: int64 [n] position of the row in its source file, the documented tie-break for
            events with equal timestamps.
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray | None = None
    rating: np.ndarray | None = None
    weight: np.ndarray | None = None
    order: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.user)
        object.__setattr__(self, "user", _frozen(self.user, np.int64))
        object.__setattr__(self, "item", _frozen(self.item, np.int64))
        object.__setattr__(self, "timestamp", _frozen(self.timestamp, np.int64))
        object.__setattr__(self, "rating", _frozen(self.rating, np.float32))
        object.__setattr__(self, "weight", _frozen(self.weight, np.float32))
        order = self.order if self.order is not None else sealed(np.arange(n))
        object.__setattr__(self, "order", _frozen(order, np.int64))
        for name in ("item", "timestamp", "rating", "weight", "order"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise ValueError(f"interaction column {name} has {len(col)} rows, user has {n}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> Interactions:
        """The rows at `rows` (an index or boolean array), in that order."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else sealed(a[rows])

        return Interactions(
            pick(self.user),
            pick(self.item),
            pick(self.timestamp),
            pick(self.rating),
            pick(self.weight),
            pick(self.order),
        )

    def concat(self, other: Interactions) -> Interactions:
        def cat(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else np.concatenate([a, b])

        return Interactions(
            np.concatenate([self.user, other.user]),
            np.concatenate([self.item, other.item]),
            cat(self.timestamp, other.timestamp),
            cat(self.rating, other.rating),
            cat(self.weight, other.weight),
            cat(self.order, other.order),
        )

    def matrix(self, n_users: int, n_items: int, values: str = "binary") -> sp.csr_matrix:
        """User x item CSR matrix. values: "binary" (1 per pair), "weight" or "rating" (summed)."""
        if values not in ("binary", "weight", "rating"):
            raise ValueError(f"values must be 'binary', 'weight' or 'rating', got {values!r}")
        if values == "binary":
            data = np.ones(len(self), dtype=np.float32)
        else:
            col = getattr(self, values)
            data = np.ones(len(self), np.float32) if col is None else np.asarray(col, np.float32)
        m = sp.csr_matrix((data, (self.user, self.item)), shape=(n_users, n_items), dtype=np.float32)
        m.sum_duplicates()
        if values == "binary":
            m.data[:] = 1.0
        return m


@dataclass(frozen=True)
class Dataset:
    """Interactions plus the user/item vocabularies and optional feature tables.

    `user_features` / `item_features` are polars frames whose row i describes index i of the
    vocabulary (raw id in column "id"). The item vocabulary is the union of items seen in
    interactions and items listed in the item table, so catalogue items without interactions
    (cold start) keep an index.
    """

    name: str
    interactions: Interactions
    users: Vocab
    items: Vocab
    user_features: pl.DataFrame | None = None
    item_features: pl.DataFrame | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_time(self) -> bool:
        return self.interactions.timestamp is not None

    def user_items(self, values: str = "binary") -> sp.csr_matrix:
        return self.interactions.matrix(self.n_users, self.n_items, values)

    def item_titles(self) -> list[str] | None:
        """Item titles in index order where the item table has a "title" column."""
        if self.item_features is None or "title" not in self.item_features.columns:
            return None
        return self.item_features["title"].to_list()

    def fingerprint(self) -> str:
        """sha256 over the interaction arrays and vocabularies: two datasets with the same
        fingerprint give identical splits for identical split settings."""
        h = hashlib.sha256()
        ints = self.interactions
        for a in (ints.user, ints.item, ints.timestamp, ints.rating, ints.weight):
            if a is not None:  # the array's own buffer (C-contiguous, see _frozen): no copy
                h.update(memoryview(a) if a.flags.c_contiguous else a.tobytes())
        h.update(self.users.sha256.encode())
        h.update(self.items.sha256.encode())
        return h.hexdigest()

    def with_notes(self, notes: Sequence[str]) -> Dataset:
        """This dataset with `notes` appended (the readers' remarks on what they did)."""
        return replace(self, notes=self.notes + tuple(notes)) if notes else self

    def with_positive_threshold(self, threshold: float) -> Dataset:
        """Keep only interactions with rating >= threshold (explicit ratings -> implicit positives).

        Vocabularies are kept, so every user and item keeps its index; the note records how many
        rows were turned away."""
        if self.interactions.rating is None:
            raise DataError(
                f"dataset {self.name!r} has no rating column, so a rating threshold cannot apply",
                expected="a column mapping that names the rating column",
            )
        ratings = self.interactions.rating
        keep = ratings >= threshold
        if not keep.any():
            low, high = (float(ratings.min()), float(ratings.max())) if len(ratings) else (None, None)
            span = f"its ratings run from {low:g} to {high:g}" if len(ratings) else "it has no interactions"
            raise DataError(
                f"the rating threshold {threshold:g} removes every interaction of dataset {self.name!r}: "
                f"{span}, so no positive would be left to train or evaluate on",
                path=self.source or None,
                expected=f"a threshold of at most {high:g}"
                if len(ratings)
                else "a dataset with interactions",
            )
        note = f"rating >= {threshold}: kept {int(keep.sum())} of {len(keep)} interactions as positives"
        return replace(
            self, interactions=self.interactions.take(np.flatnonzero(keep)), notes=self.notes + (note,)
        )

    def repeated_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows repeating an earlier (user, item) pair: (rows, the first row of each one's pair),
        both int64 [n_repeats] in row (file) order."""
        ints = self.interactions
        key = np.multiply(ints.user, np.int64(self.n_items))
        np.add(key, ints.item, out=key)
        # rows of a pair together, in row order (stable): a pair's first row starts its run. Three
        # row-sized arrays at most (np.unique with index and inverse took six)
        by_pair = np.argsort(key, kind="stable")
        key = key[by_pair]
        repeat = np.zeros(len(key), dtype=bool)
        np.equal(key[1:], key[:-1], out=repeat[1:])
        del key
        at = np.flatnonzero(repeat)  # sorted positions of the repeating rows
        starts = np.flatnonzero(~repeat)
        first = by_pair[starts[np.searchsorted(starts, at, side="right") - 1]]
        rows = by_pair[at]
        in_row_order = np.argsort(rows, kind="stable")
        return rows[in_row_order], first[in_row_order]

    def deduplicated(self, policy: DuplicatePolicy = "aggregate", lines: np.ndarray | None = None) -> Dataset:
        """Apply a duplicate policy to rows repeating an earlier (user, item) pair.

        "aggregate": one row per pair, at the place of its latest event (latest timestamp, ties
        and data without time by file order), keeping that event's timestamp and rating; weights
        are summed (rows without a weight column count 1 each, and the sums become the weight
        column). "refuse": a DataError naming the first repeating row. "keep": every row stays.
        Where a pair repeats, a note says what was done; otherwise the dataset is returned as is.

        lines: int64 [n] the source line of each row, for the refusal (default: the row's
        1-based position among the data rows).
        """
        if policy not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}; got {policy!r}")
        rows, firsts = self.repeated_rows()
        if not len(rows):
            return self
        ints = self.interactions
        pairs = len(np.unique(firsts))
        if policy == "keep":
            return self.with_notes(
                [
                    f"duplicates kept: {len(rows)} rows repeat an earlier (user, item) pair ({pairs} pairs); "
                    "in a sequence or session log a repeat is a new event"
                ]
            )
        if policy == "refuse":
            r, f = int(rows[0]), int(firsts[0])
            where = (lambda i: int(lines[i])) if lines is not None else (lambda i: i + 1)
            what = "line" if lines is not None else "data row"
            raise DataError(
                f"user {self.users.ids[ints.user[r]]!r} and item {self.items.ids[ints.item[r]]!r} appear "
                f"again (first on {what} {where(f)}); {len(rows)} rows repeat an earlier pair",
                path=self.source or None,
                line=where(r) if lines is not None else None,
                expected="one row per (user, item) pair (duplicates='aggregate' merges them, "
                "duplicates='keep' keeps repeats as events)",
            )
        key = ints.user * np.int64(self.n_items) + ints.item
        time = ints.timestamp if ints.timestamp is not None else np.zeros(len(key), np.int64)
        by_pair = np.lexsort((ints.order, time, key))  # within a pair: the latest event last
        last = np.r_[key[by_pair][1:] != key[by_pair][:-1], True]
        kept = np.sort(by_pair[last])
        _, inverse = np.unique(key, return_inverse=True)
        weight = ints.weight if ints.weight is not None else np.ones(len(key), np.float32)
        sums = np.bincount(inverse.reshape(-1), weights=weight.astype(np.float64))
        merged = Interactions(
            ints.user[kept],
            ints.item[kept],
            None if ints.timestamp is None else ints.timestamp[kept],
            None if ints.rating is None else ints.rating[kept],
            sums[inverse.reshape(-1)[kept]].astype(np.float32),
            ints.order[kept],
        )
        summed = "weights summed" if ints.weight is not None else "a weight column of row counts added"
        note = (
            f"duplicates aggregated: {len(rows)} rows repeating an earlier (user, item) pair were merged "
            f"({len(key)} rows -> {len(kept)}, {pairs} pairs affected); {summed}, the latest timestamp "
            "and its rating kept"
        )
        return replace(self, interactions=merged, notes=self.notes + (note,))

    def subset(self, rows: np.ndarray, name: str | None = None, note: str | None = None) -> Dataset:
        """A new dataset of the interaction `rows` (file order kept) whose vocabularies hold only
        the users and items left, re-indexed; feature rows of the kept ids come along."""
        rows = np.asarray(rows, dtype=np.int64)
        sub = self.interactions.take(rows)
        user_raw, item_raw = _raw_ids(self.users), _raw_ids(self.items)
        columns: dict[str, Any] = {"user": user_raw[sub.user], "item": item_raw[sub.item]}
        for c in ("timestamp", "rating", "weight"):
            if getattr(sub, c) is not None:
                columns[c] = getattr(sub, c)

        def kept(table: pl.DataFrame | None, raw: np.ndarray, used: np.ndarray) -> pl.DataFrame | None:
            # row i of a feature table describes vocabulary index i; ids typed as the interactions'
            if table is None:
                return None
            keep = pl.Series(np.isin(np.arange(len(table)), used))
            return table.with_columns(pl.Series("id", raw)).filter(keep)

        return build_dataset(
            name or self.name,
            pl.DataFrame(columns),
            user_features=kept(self.user_features, user_raw, np.unique(sub.user)),
            item_features=kept(self.item_features, item_raw, np.unique(sub.item)),
            source=self.source,
            notes=self.notes + ((note,) if note else ()),
        )

    def min_counts(self, user: int = 1, item: int = 1) -> Dataset:
        """Drop users with fewer than `user` interactions and items with fewer than `item`,
        repeatedly until both hold (a k-core; the usual session-data cleaning, e.g. SR-GNN's
        Diginetica: sessions of length >= 2, items seen >= 5 times). The note says how many
        rows, users and items went."""
        ints = self.interactions
        keep = np.ones(len(ints), bool)
        while True:
            u = np.bincount(ints.user[keep], minlength=self.n_users)
            i = np.bincount(ints.item[keep], minlength=self.n_items)
            drop = keep & ((u[ints.user] < user) | (i[ints.item] < item))
            if not drop.any():
                break
            keep &= ~drop
        rows = np.flatnonzero(keep)
        out = self.subset(rows)
        note = (
            f"min counts user >= {user}, item >= {item}: kept {len(rows)} of {len(ints)} interactions, "
            f"{out.n_users} of {self.n_users} users, {out.n_items} of {self.n_items} items"
        )
        return replace(out, notes=out.notes + (note,))

    def summary(self) -> dict[str, object]:
        ints = self.interactions
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(ints),
            "density": len(ints) / max(1, self.n_users * self.n_items),
            "has_time": self.has_time,
            "has_rating": ints.rating is not None,
            "source": self.source,
            "notes": list(self.notes),
        }


def _raw_ids(vocab: Vocab) -> np.ndarray:
    """The vocabulary's raw ids as int64 where every id is a canonical integer (so a rebuilt
    dataset sorts them numerically again), else as strings."""
    ids = list(vocab.ids)
    try:
        as_int = np.array([int(x) for x in ids], dtype=np.int64)
    except (ValueError, OverflowError):
        return np.array(ids, dtype=str)
    if all(str(v) == x for v, x in zip(as_int.tolist(), ids, strict=True)):
        return as_int
    return np.array(ids, dtype=str)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    return np.unique(values)


def _ids(column: pl.Series, table: pl.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Raw ids of interactions and the pool (interactions + feature table) they index into.

    Integer ids stay integers (vocabularies sort numerically) when the table's ids are integers
    too; otherwise both sides become strings so "7" and 7 meet."""
    if table is None:
        raw = column.to_numpy()
        return raw, raw
    other = table["id"]
    if column.dtype.is_integer() and other.dtype.is_integer():
        raw = column.cast(pl.Int64).to_numpy()
        return raw, np.concatenate([raw, other.cast(pl.Int64).to_numpy()])
    raw = column.cast(pl.Utf8).to_numpy()
    return raw, np.concatenate([raw, other.cast(pl.Utf8).to_numpy()])


def build_dataset(
    name: str,
    frame: pl.DataFrame,
    *,
    user_features: pl.DataFrame | None = None,
    item_features: pl.DataFrame | None = None,
    source: str | Path = "",
    notes: tuple[str, ...] = (),
) -> Dataset:
    """Build a Dataset from a frame with columns user, item and optional timestamp, rating, weight.

    Raw ids are sorted (numerically when the column is numeric) to define indices, so the
    same file always gives the same vocabulary. Feature frames need an "id" column of raw ids;
    their rows are reordered to vocabulary order (rows for ids absent from both interactions
    and the table are null).
    """
    for label, table in (("user", user_features), ("item", item_features)):
        if table is not None:
            dup = table["id"].cast(pl.Utf8).is_duplicated()
            if dup.any():
                raise DataError(
                    f"{label} feature table lists id {table['id'][int(dup.arg_max())]!r} more than once",
                    path=source or None,
                    expected="one row per id",
                )
    users_raw, user_pool = _ids(frame["user"], user_features)
    items_raw, item_pool = _ids(frame["item"], item_features)
    user_ids = _sorted_unique(user_pool)
    item_ids = _sorted_unique(item_pool)
    users = Vocab(tuple(str(x) for x in user_ids.tolist()), name="user")
    items = Vocab(tuple(str(x) for x in item_ids.tolist()), name="item")
    u = np.searchsorted(user_ids, users_raw)
    i = np.searchsorted(item_ids, items_raw)

    def col(c: str) -> np.ndarray | None:
        return frame[c].to_numpy() if c in frame.columns else None

    interactions = Interactions(u, i, col("timestamp"), col("rating"), col("weight"))

    def align(table: pl.DataFrame | None, vocab: Vocab) -> pl.DataFrame | None:
        if table is None:
            return None
        table = table.with_columns(pl.col("id").cast(pl.Utf8))
        order = pl.DataFrame({"id": list(vocab.ids)})
        return order.join(table, on="id", how="left", maintain_order="left")

    return Dataset(
        name=name,
        interactions=interactions,
        users=users,
        items=items,
        user_features=align(user_features, users),
        item_features=align(item_features, items),
        source=str(source),
        notes=tuple(notes),
    )
