"""The dataset registry: named datasets under the data root, and :func:`load_dataset` by name or path.

The readers themselves live by format: :mod:`recfunnel.data.movielens` (MovieLens 100K / 1M
release folders), :mod:`recfunnel.data.seqfiles` (SASRec sequence files),
:mod:`recfunnel.data.tables` (any CSV/TSV/Parquet file described by a
:class:`~recfunnel.data.schema.ColumnMapping`), all on the tokenizer of
:mod:`recfunnel.data.text_table`. They are re-exported here. Every reader keeps every row and
reports bad input as a :class:`~recfunnel.data.errors.DataError` naming file, 1-based line,
column, the bad value and what was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recfunnel.data.dataset import Dataset, DuplicatePolicy
from recfunnel.data.errors import DataError
from recfunnel.data.movielens import ML100K_GENRES, read_ml1m, read_ml100k
from recfunnel.data.parquet import is_parquet_dataset, mapping_for_folder, read_parquet_dataset
from recfunnel.data.schema import ColumnMapping
from recfunnel.data.seqfiles import SEQUENCE_NOTE, read_sequences
from recfunnel.data.tables import read_table as read_table_file
from recfunnel.data.text_table import COMPRESSED_SUFFIXES, listing, not_found
from recfunnel.settings import data_root as _data_root
from recfunnel.settings import dataset_dir

__all__ = [
    "DATASETS",
    "ML100K_GENRES",
    "SEQUENCE_NOTE",
    "load_dataset",
    "load_dataset_from_mapping",
    "read_ml100k",
    "read_ml1m",
    "read_parquet_dataset",
    "read_sequences",
    "read_table",
]


def read_table(mapping: ColumnMapping) -> Dataset:
    """A dataset from a column mapping: one CSV / TSV / Parquet file
    (:func:`~recfunnel.data.tables.read_table`), or a Parquet folder or glob read out of core
    (:func:`~recfunnel.data.parquet.read_parquet_dataset`)."""
    if is_parquet_dataset(mapping):
        return read_parquet_dataset(mapping)
    return read_table_file(mapping)


#: Alias: a dataset from a column mapping.
load_dataset_from_mapping = read_table


def _amazon_video(folder: Path, duplicates: DuplicatePolicy = "keep") -> Dataset:
    return read_sequences(Path(folder) / "Video.txt", name="amazon-video-seq", duplicates=duplicates)


def _diginetica(folder: Path, duplicates: DuplicatePolicy = "keep") -> Dataset:
    mapping = ColumnMapping(
        path=Path(folder) / "sample_train-item-views.csv",
        sep=";",
        user="session_id",
        item="item_id",
        timestamp="timeframe",
        name="diginetica-sample",
        duplicates=duplicates,  # a session viewing an item again is a new event
    )
    ds = read_table(mapping)
    return ds.with_notes(
        [
            "users are sessions (session_id); timestamps are the timeframe column, which orders "
            "events within a session only (not comparable across sessions)"
        ]
    )


#: Named datasets under the data root: name -> reader of that dataset's folder, called as
#: ``reader(folder)`` or ``reader(folder, duplicates=policy)``. Their own duplicate policies:
#: MovieLens aggregates (the releases have no repeated pair); the sequence and session logs keep
#: repeats, which are events there.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "ml-100k": read_ml100k,
    "ml-1m": read_ml1m,
    "amazon-video-seq": _amazon_video,
    "diginetica-sample": _diginetica,
}

_LAYOUTS = "an ml-100k folder (u.data), an ml-1m folder (ratings.dat) or a sequence .txt file"
_GLOB = "*?["


def _parquet_folder(path: Path, policy: dict[str, DuplicatePolicy]) -> Dataset:
    return read_parquet_dataset(mapping_for_folder(path, **policy))


def _load_path(path: Path, policy: dict[str, DuplicatePolicy]) -> Dataset:
    if path.is_dir():
        if (path / "u.data").is_file():
            return read_ml100k(path, **policy)
        if (path / "ratings.dat").is_file():
            return read_ml1m(path, **policy)
        if any(path.glob("*.parquet")) or any(path.glob("*.pq")):
            return _parquet_folder(path, policy)
        raise DataError(
            f"cannot tell the dataset layout of this folder; it holds: {listing(path)}",
            path=path,
            expected=_LAYOUTS,
        )
    if any(c in str(path) for c in _GLOB):
        return _parquet_folder(path, policy)
    if not path.exists():
        raise not_found(path)
    suffixes = [x.lower() for x in path.suffixes[-2:]]
    if suffixes[-1:] == [".txt"] or (suffixes[:1] == [".txt"] and suffixes[-1] in COMPRESSED_SUFFIXES):
        return read_sequences(path, **policy)
    raise DataError(
        "cannot tell the format of this file",
        path=path,
        expected=f"{_LAYOUTS}; describe other files with a ColumnMapping (read_table)",
    )


def load_dataset(
    name: str, data_root: str | Path | None = None, duplicates: DuplicatePolicy | None = None
) -> Dataset:
    """A dataset by registry name (its folder under the data root, see :mod:`recfunnel.settings`),
    or by path: an ml-100k folder (u.data), an ml-1m folder (ratings.dat), a sequence .txt file
    (optionally .txt.gz / .txt.zst), or a folder or glob of Parquet files with columns named user,
    item and optionally timestamp, rating, weight (read out of core, :mod:`recfunnel.data.parquet`).

    duplicates: what to do with rows repeating a (user, item) pair ("aggregate", "refuse",
    "keep"; see :meth:`~recfunnel.data.dataset.Dataset.deduplicated`); None: the dataset's own
    policy (MovieLens aggregates, sequence and session logs keep repeats)."""
    policy = {} if duplicates is None else {"duplicates": duplicates}
    if name in DATASETS:
        try:
            folder = dataset_dir(name, data_root)
        except FileNotFoundError as e:
            raise DataError(str(e), path=_data_root(data_root) / name) from None
        return DATASETS[name](folder, **policy)
    path = Path(name).expanduser()
    looks_like_path = any(c in name for c in "/\\~") or name.startswith(".") or path.suffix != ""
    if path.exists() or looks_like_path:
        return _load_path(path, policy)
    raise DataError(
        f"unknown dataset {name!r}", expected=f"one of {', '.join(sorted(DATASETS))}, or a path to {_LAYOUTS}"
    )
