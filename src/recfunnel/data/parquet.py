"""Out-of-core reading of a Parquet dataset (a folder of part files, or a glob) into a
:class:`~recfunnel.data.dataset.Dataset`, without the table (or a Python object per row) in memory.

The files are read in record batches (``pyarrow.parquet.ParquetFile.iter_batches``, only the mapped
columns); each batch's columns are checked and converted by the same rules as the single-file
Parquet reader of :mod:`recfunnel.data.tables` (errors name the file, the 1-based row within it,
the column and the value). One pass collects the distinct ids of each batch and writes the numeric
columns (integer ids, timestamps, ratings, weights) into preallocated numpy arrays; the
vocabularies are the sorted distinct ids (numerically when every id is an integer), as the eager
reader's; integer ids are then encoded with ``np.searchsorted``, string ids in a second pass over
the id columns (a polars join against the vocabulary frame). Duplicate rows follow
``mapping.duplicates`` exactly as in :func:`~recfunnel.data.tables.read_table`.

Memory: about 36 bytes a row for the interaction arrays (user, item, timestamp, order as int64 and
a float32 weight), written once and handed to the Dataset without a copy, plus one batch of Arrow
data and the vocabularies (one Python string per distinct id, not per row); the duplicate check
(:meth:`~recfunnel.data.dataset.Dataset.repeated_rows`) briefly needs three more int64 arrays.
"""

from __future__ import annotations

import glob as globlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recfunnel.data.dataset import Dataset, Interactions, sealed
from recfunnel.data.errors import DataError
from recfunnel.data.schema import PARQUET_SUFFIXES, ColumnMapping
from recfunnel.data.tables import _parquet_column, _resolve
from recfunnel.data.vocab import Vocab

__all__ = [
    "DEFAULT_COLUMNS",
    "is_parquet_dataset",
    "mapping_for_folder",
    "parquet_files",
    "read_parquet_dataset",
]

#: Column names looked up when a Parquet folder is named without a mapping (first present wins).
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userId"),
    "item": ("item", "item_id", "itemId"),
    "timestamp": ("timestamp", "time", "ts"),
    "rating": ("rating",),
    "weight": ("weight",),
}
GLOB_CHARS = "*?["
BATCH_ROWS = 1 << 20


def _is_glob(path: Path) -> bool:
    return any(c in str(path) for c in GLOB_CHARS)


def parquet_files(path: str | Path) -> list[Path]:
    """The part files of a Parquet dataset, sorted by name: a folder's ``*.parquet`` / ``*.pq``
    files (not recursive), the files a glob matches, or one file. A DataError when there are none."""
    path = Path(path).expanduser()
    if _is_glob(path):
        files = sorted(Path(p) for p in globlib.glob(str(path)) if Path(p).is_file())
        where = f"the glob {str(path)!r} matches no file"
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)
        where = "the folder holds no .parquet / .pq file"
    elif path.is_file():
        return [path]
    else:
        raise DataError("file or folder not found", path=path, expected="a Parquet file, folder or glob")
    if not files:
        raise DataError(where, path=path, expected="Parquet part files (*.parquet)")
    return files


def is_parquet_dataset(mapping: ColumnMapping) -> bool:
    """Whether `mapping` names a Parquet folder or glob (read by :func:`read_parquet_dataset`)."""
    return mapping.resolved_format == "parquet" and (mapping.path.is_dir() or _is_glob(mapping.path))


def mapping_for_folder(path: str | Path, **updates: object) -> ColumnMapping:
    """A mapping for a Parquet folder or glob whose columns use the :data:`DEFAULT_COLUMNS` names
    (``user``, ``item``, optional ``timestamp``, ``rating``, ``weight``)."""
    path = Path(path).expanduser()
    names = list(pl.read_parquet_schema(parquet_files(path)[0]).keys())
    roles: dict[str, str] = {}
    for role, candidates in DEFAULT_COLUMNS.items():
        hit = next((c for c in candidates if c in names), None)
        if hit is not None:
            roles[role] = hit
    for role in ("user", "item"):
        if role not in roles:
            raise DataError(
                f"no {role} column found in the Parquet dataset",
                path=path,
                expected=f"a column named one of {', '.join(DEFAULT_COLUMNS[role])} (columns present: "
                f"{', '.join(map(repr, names))}), or a [data.table] mapping naming the columns",
            )
    return ColumnMapping(path=path, format="parquet", **roles, **updates)  # type: ignore[arg-type]


def _dataset_name(mapping: ColumnMapping) -> str:
    if mapping.name is not None:
        return mapping.name
    path = mapping.path
    if _is_glob(path):
        parent = next((p for p in path.parents if not _is_glob(p)), Path("."))
        return parent.resolve().name or "parquet"
    return path.stem if path.is_file() else path.resolve().name


def _schema_names(files: list[Path]) -> list[str]:
    names: list[str] | None = None
    for f in files:
        try:
            these = list(pl.read_parquet_schema(f).keys())
        except Exception as e:  # polars raises several kinds for a file that is not Parquet
            raise DataError(
                f"not a readable Parquet file ({type(e).__name__}: {e})", path=f, expected="a Parquet file"
            ) from None
        if names is None:
            names = these
        elif these != names:
            raise DataError(
                f"the part files disagree on their columns: {files[0].name} has {names}, this one {these}",
                path=f,
                expected="part files with the same columns in the same order",
            )
    assert names is not None
    return names


_ROW = re.compile(r"\brow (\d+)")


def _batches(
    files: list[Path], columns: list[str], batch_rows: int
) -> Iterator[tuple[Path, int, pl.DataFrame]]:
    """(file, offset of the batch's first row in that file, batch) over every part file."""
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            offset = 0
            for rb in pf.iter_batches(batch_size=batch_rows, columns=columns):
                frame = pl.from_arrow(rb)
                assert isinstance(frame, pl.DataFrame)
                yield f, offset, frame
                offset += frame.height
        except DataError:
            raise
        except Exception as e:  # a damaged file can fail on its data pages after a readable schema
            raise DataError(
                f"not a readable Parquet file ({type(e).__name__}: {e})", path=f, expected="a Parquet file"
            ) from None


def _convert(s: pl.Series, m: ColumnMapping, f: Path, offset: int, column: str, role: str) -> pl.Series:
    """The single-file reader's conversion of one batch column; its errors renumbered to file rows."""
    try:
        return _parquet_column(s, m.model_copy(update={"path": f}), column, role)
    except DataError as e:
        if offset == 0:
            raise
        message = str(e.args[0]) if e.args else str(e)
        # the message starts with "<path> (column ...): "; rebuild it from the parts, rows shifted
        text = message.split(": ", 1)[1] if e.path is not None and ": " in message else message
        if e.value is not None:
            text = text.rsplit(f"; got {e.value!r}", 1)[0]
        if e.expected:
            text = text.rsplit(f"; expected {e.expected}", 1)[0]
        text = _ROW.sub(lambda g: f"row {int(g.group(1)) + offset}", text)
        raise DataError(text, path=f, column=column, value=e.value, expected=e.expected) from None


def _ids_vocab(chunks: list[pl.Series], name: str) -> tuple[np.ndarray, Vocab, bool]:
    """Sorted distinct raw ids (int64, or str when any id is not a plain integer), their Vocab,
    and whether they are integers."""
    if all(c.dtype == pl.Int64 for c in chunks):
        ids = np.unique(np.concatenate([c.to_numpy() for c in chunks]))
        return ids, Vocab(tuple(str(x) for x in ids.tolist()), name=name), True
    text = pl.concat([c.cast(pl.Utf8) for c in chunks]).unique()
    as_int = text.str.to_integer(strict=False)
    if as_int.null_count() == 0 and bool((as_int.cast(pl.Utf8) == text).all()):
        ids = np.unique(as_int.to_numpy())  # every id a plain integer: numeric order, as eagerly
        return ids, Vocab(tuple(str(x) for x in ids.tolist()), name=name), True
    ids = np.unique(text.to_numpy().astype(str))
    return ids, Vocab(tuple(ids.tolist()), name=name), False


def read_parquet_dataset(mapping: ColumnMapping, batch_rows: int = BATCH_ROWS) -> Dataset:
    """A Parquet dataset (``mapping.path``: a folder of part files, a glob, or one file) read out of
    core as `mapping` describes; the same Dataset as :func:`~recfunnel.data.tables.read_table`
    gives on the same rows (files concatenated in name order)."""
    files = parquet_files(mapping.path)
    names = _schema_names(files)
    cols = {
        role: names[_resolve(ref, names, mapping.path, role, "columns")]
        for role, ref in mapping.columns.items()
    }
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if n == 0:
        raise DataError("empty dataset", path=mapping.path, expected="at least one data row")
    read = list(dict.fromkeys(cols.values()))
    numeric: dict[str, np.ndarray] = {}
    for role in cols:
        if role in ("user", "item", "timestamp"):
            numeric[role] = np.empty(n, np.int64)
        else:
            numeric[role] = np.empty(n, np.float32)
    uniques: dict[str, list[pl.Series]] = {"user": [], "item": []}
    is_int = {"user": True, "item": True}
    start = 0
    for f, offset, frame in _batches(files, read, batch_rows):
        h = frame.height
        for role, c in cols.items():
            s = _convert(frame[c], mapping, f, offset, c, role)
            if role in ("user", "item"):
                uniques[role].append(s.unique())
                if s.dtype == pl.Int64:
                    numeric[role][start : start + h] = s.to_numpy()
                else:
                    is_int[role] = False
            else:
                numeric[role][start : start + h] = s.to_numpy()
        start += h
    vocabs: dict[str, Vocab] = {}
    for role in ("user", "item"):
        ids, vocab, int_ids = _ids_vocab(uniques.pop(role), role)
        vocabs[role] = vocab
        if is_int[role]:  # every batch held integer ids: encode in place, a batch at a time
            col = numeric[role]
            for lo in range(0, n, batch_rows):
                col[lo : lo + batch_rows] = np.searchsorted(ids, col[lo : lo + batch_rows])
        else:
            _encode_strings(files, mapping, cols[role], role, ids, int_ids, numeric[role], batch_rows)
    # sealed (read-only, owned by nobody else): Interactions takes them without a copy
    owned = {role: sealed(a) for role, a in numeric.items()}
    numeric.clear()
    ints = Interactions(
        owned["user"], owned["item"], owned.get("timestamp"), owned.get("rating"), owned.get("weight")
    )
    owned.clear()
    ds = Dataset(
        name=_dataset_name(mapping),
        interactions=ints,
        users=vocabs["user"],
        items=vocabs["item"],
        source=str(mapping.path),
    )
    return ds.deduplicated(mapping.duplicates)


def _encode_strings(
    files: list[Path],
    mapping: ColumnMapping,
    column: str,
    role: str,
    ids: np.ndarray,
    int_ids: bool,
    out: np.ndarray,
    batch_rows: int,
) -> None:
    """Second pass over one id column: each row's vocabulary index (a join against the vocabulary
    frame, row order kept) written into `out`."""
    dtype = pl.Int64 if int_ids else pl.Utf8
    vocab = pl.DataFrame({"id": pl.Series(ids, dtype=dtype), "index": np.arange(len(ids), dtype=np.int64)})
    start = 0
    for f, offset, frame in _batches(files, [column], batch_rows):
        s = _convert(frame[column], mapping, f, offset, column, role).cast(dtype)
        joined = pl.DataFrame({"id": s}).join(vocab, on="id", how="left", maintain_order="left")
        out[start : start + frame.height] = joined["index"].to_numpy()
        start += frame.height
