"""Sequence files: SASRec-style ``user item`` lines, each user's lines in time order."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recfunnel.data.dataset import Dataset, DuplicatePolicy, build_dataset
from recfunnel.data.text_table import COMPRESSED_SUFFIXES, collect, split_text, text_ids

__all__ = ["SEQUENCE_NOTE", "read_sequences"]

SEQUENCE_NOTE = "timestamps are the file's row order (the format has no time)"


def read_sequences(path: Path, name: str | None = None, duplicates: DuplicatePolicy = "keep") -> Dataset:
    """A SASRec-style sequence file: one ``user item`` pair per line, separated by a single space,
    each user's lines in time order. The timestamp of a row is its 0-based position among the
    file's rows, so ordering by time (leave-one-out) follows the file. A user meeting an item
    again is a new event, so repeated pairs are kept by default (`duplicates`, see
    :meth:`Dataset.deduplicated`; a note counts them). The file may be compressed (.gz, .zst)."""
    path = Path(path)
    table = split_text(path, sep=" ", names=("user", "item"))
    frame = collect({"user": text_ids(table, 0, "user", "user"), "item": text_ids(table, 1, "item", "item")})
    frame = frame.with_columns(timestamp=pl.int_range(0, pl.len(), dtype=pl.Int64))
    plain = path.with_suffix("") if path.suffix.lower() in COMPRESSED_SUFFIXES else path
    ds = build_dataset(name or plain.stem, frame, source=path)
    return ds.with_notes([SEQUENCE_NOTE]).deduplicated(duplicates, lines=table.line_numbers)
