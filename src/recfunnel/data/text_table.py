"""Delimited text files split into typed columns, with errors that name file, line and column.

The readers of :mod:`recfunnel.data.movielens`, :mod:`recfunnel.data.seqfiles` and
:mod:`recfunnel.data.tables` share this tokenizer: :func:`split_text` reads a file into a
:class:`TextTable` (one list of strings per data row, with its 1-based line), checking that every
row has the same field count; the casts (:func:`text_ids`, :func:`text_floats`, ...) turn one field
into a typed polars Series or the :class:`~recfunnel.data.errors.DataError` of its first bad row,
and :func:`collect` raises the error on the earliest line.

Id columns follow one rule everywhere: Int64 when every id is a plain integer (so vocabularies sort
numerically), else the ids are kept as strings. Surrounding whitespace is stripped from ids and
numbers. Ids with leading zeros ("007") or a sign stay strings, so "007" and "7" never merge.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.data.csv_quoting import MAX_SHOWN, quoted_fields
from recfunnel.data.errors import DataError


def listing(folder: Path) -> str:
    """The names in `folder`, for an error saying what is there instead."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "nothing readable"
    return ", ".join(names) if names else "nothing (empty folder)"


def not_found(path: Path, what: str = "file") -> DataError:
    """The error of a missing file or folder, listing what its folder holds."""
    parent = path.parent
    if parent.is_dir():
        detail = f"{what} not found; the folder {parent} holds: {listing(parent)}"
    else:
        detail = f"{what} not found (its folder {parent} does not exist either)"
    return DataError(detail, path=path)


#: Compressed formats read directly: (name, magic bytes at the start of the file, file suffix).
COMPRESSIONS = (
    ("gzip", b"\x1f\x8b", ".gz"),
    ("zstd", b"\x28\xb5\x2f\xfd", ".zst"),
    ("bzip2", b"BZh", ".bz2"),
    ("xz", b"\xfd7zXZ\x00", ".xz"),
)
COMPRESSED_SUFFIXES = tuple(suffix for _, _, suffix in COMPRESSIONS)


def _decompress(name: str, data: bytes) -> bytes:
    if name == "gzip":
        return gzip.decompress(data)
    if name == "bzip2":
        return bz2.decompress(data)
    if name == "xz":
        return lzma.decompress(data)
    import pyarrow as pa  # zstd: pyarrow (a dependency) has the codec, the standard library has not

    return pa.input_stream(pa.py_buffer(data), compression="zstd").read()


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when they start with a gzip / zstd / bzip2 / xz header."""
    if not path.exists():
        raise not_found(path)
    if path.is_dir():
        raise DataError("is a folder", path=path, expected="a file")
    data = path.read_bytes()
    for name, magic, suffix in COMPRESSIONS:
        if data.startswith(magic):
            try:
                return _decompress(name, data)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
                raise DataError(
                    f"not a readable {name} file ({type(e).__name__}: {e})",
                    path=path,
                    expected=f"a complete {name}-compressed text file (or plain text without the {suffix})",
                ) from None
    return data


def read_text(path: Path, encoding: str) -> str:
    """The file's text (decompressed first, see :func:`read_bytes`). encoding: "utf8", "latin1",
    or "auto" (UTF-8, else Latin-1). A UTF-8 byte order mark is dropped."""
    data = read_bytes(path)
    if encoding == "latin1":
        return data.decode("latin-1")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            "text is UTF-16 (it starts with a UTF-16 byte order mark)",
            path=path,
            line=1,
            expected="UTF-8 or Latin-1 text (save the file as UTF-8)",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if encoding == "auto":
            return data.decode("latin-1")
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            "text is not valid UTF-8",
            path=path,
            line=line,
            value=data[e.start : e.start + 8],
            expected="UTF-8 text (set encoding='latin1' for a Latin-1 file)",
        ) from None


def _unquote(s: pl.Series) -> pl.Series:
    """Strip one pair of double quotes wrapping a whole field ('"a b"' -> 'a b')."""
    quoted = s.str.starts_with('"') & s.str.ends_with('"') & (s.str.len_chars() >= 2)
    return (
        pl.DataFrame({"s": s, "q": quoted})
        .select(
            pl.when(pl.col("q"))
            .then(pl.col("s").str.slice(1, pl.col("s").str.len_chars() - 2))
            .otherwise(pl.col("s"))
        )
        .to_series()
        .alias(s.name)
    )


@dataclass(frozen=True)
class TextTable:
    """A text file split into fields: one list of strings per data row, with its 1-based line."""

    path: Path
    sep: str
    header: tuple[str, ...] | None
    line_numbers: np.ndarray  # int64 [rows]
    parts: pl.Series  # List[str] [rows]
    n_fields: int
    skipped: tuple[int, ...]  # blank lines skipped (only where the caller allowed it)
    unquote: bool = False

    def __len__(self) -> int:
        return len(self.line_numbers)

    def line(self, row: int) -> int:
        return int(self.line_numbers[row])

    def field(self, index: int) -> pl.Series:
        s = self.parts.list.get(index)
        return _unquote(s.str.strip_chars()) if self.unquote else s

    def error(self, message: str, row: int, column: str | int, raw: pl.Series, expected: str) -> DataError:
        """The DataError of data row `row`: this file, its line, `column`, the raw value."""
        return DataError(
            message, path=self.path, line=self.line(row), column=column, value=raw[row], expected=expected
        )


def split_text(
    path: Path,
    *,
    sep: str,
    names: Sequence[str] | None = None,
    header: bool = False,
    encoding: str = "utf8",
    skip_blank: bool = False,
    unquote: bool = False,
) -> TextTable:
    """Read and split a delimited text file, checking that every line has the same field count.

    names: the expected fields (their count is checked, and they are shown in errors); without
    names the header's field count, or else the first data line's, is expected.
    skip_blank: skip (and report in `skipped`) blank lines instead of failing on them.
    unquote: CSV quoting. With a one-character separator and a double quote anywhere in the file,
    the file is read as real CSV (:func:`~recfunnel.data.csv_quoting.quoted_fields`: quoted
    fields may hold the separator, line breaks and doubled quotes);
    otherwise (and for separators such as "::") a field wholly wrapped in quotes is unquoted.
    """
    text = read_text(path, encoding)
    lines = pl.Series("line", [text]).str.split("\n").explode().str.strip_suffix("\r")
    if len(lines) and lines[-1] == "":
        lines = lines.head(len(lines) - 1)  # the final newline
    if len(lines) == 0:
        raise DataError("empty file", path=path, expected="at least one data row")
    as_csv = unquote and len(sep) == 1 and '"' in text
    if as_csv:
        parts, numbers = quoted_fields(lines, sep, path)
        blank = (
            (parts.list.len() == 0) | ((parts.list.len() == 1) & (parts.list.first().str.strip_chars() == ""))
        ).to_numpy()
        unquote = False  # the quotes are gone already
    else:
        numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
        parts = lines.str.split(sep)
        blank = (lines.str.strip_chars() == "").to_numpy()

    def shown(row: int) -> str:
        return lines[int(numbers[row]) - 1][:MAX_SHOWN]

    header_names: tuple[str, ...] | None = None
    if header:
        if blank[0]:
            ln = int(numbers[0])
            raise DataError(
                f"line {ln} is blank", path=path, line=ln, expected="a header line naming the columns"
            )
        raw_names = pl.Series(parts[0]).cast(pl.Utf8).str.strip_chars()
        if unquote:
            raw_names = _unquote(raw_names).str.strip_chars()
        header_names = tuple(raw_names.to_list())
        parts, numbers, blank = parts.slice(1), numbers[1:], blank[1:]
        if len(parts) == 0:
            raise DataError(
                "empty file: a header but no data rows", path=path, expected="at least one data row"
            )

    skipped: tuple[int, ...] = ()
    if blank.any():
        if not skip_blank:
            ln = int(numbers[np.flatnonzero(blank)[0]])
            raise DataError(
                f"line {ln} is blank",
                path=path,
                line=ln,
                expected="a data row (only the file's final newline may end in an empty line)",
            )
        skipped = tuple(int(x) for x in numbers[blank])
        parts, numbers = parts.filter(pl.Series(~blank)), numbers[~blank]
        if len(parts) == 0:
            raise DataError("empty file: only blank lines", path=path, expected="at least one data row")

    counts = parts.list.len().to_numpy()
    if names is not None:
        n_fields, described = len(names), ", ".join(names)
    elif header_names is not None:
        n_fields = len(header_names)
        listed = ", ".join(header_names[:8]) + (", ..." if len(header_names) > 8 else "")
        described = f"as in the header: {listed}"
    else:
        n_fields, described = int(counts[0]), f"as on line {int(numbers[0])}"
    bad = np.flatnonzero(counts != n_fields)
    if len(bad):
        row = int(bad[0])
        ln, got = int(numbers[row]), int(counts[row])
        hint = ""
        if '"' in shown(row) and not as_csv:
            hint = (
                "; quoted fields holding the separator are read only with a one-character "
                f"separator, not {sep!r}"
            )
        raise DataError(
            f"line {ln} has {got} field{'s' if got != 1 else ''}, expected {n_fields} ({described})",
            path=path,
            line=ln,
            value=shown(row),
            expected=f"fields separated by {sep!r}{hint}",
        )
    return TextTable(path, sep, header_names, numbers, parts, n_fields, skipped, unquote)


# --- casts of text fields: each returns the typed Series or the DataError for its first bad row ---


def first_true(mask: pl.Series) -> int | None:
    """The first row where `mask` is true or null, else None."""
    idx = np.flatnonzero(mask.fill_null(True).to_numpy())
    return int(idx[0]) if len(idx) else None


def id_dtype(s: pl.Series) -> pl.Series:
    """Int64 when every (stripped, non-null) id is a plain integer, else the strings."""
    ints = s.str.to_integer(strict=False)
    if ints.null_count() == 0 and bool((ints.cast(pl.Utf8) == s).all()):
        return ints
    return s


def text_ids(table: TextTable, index: int, column: str | int, role: str) -> pl.Series | DataError:
    raw = table.field(index)
    s = raw.str.strip_chars()
    row = first_true(s == "")
    if row is not None:
        return table.error(f"empty {role} id", row, column, raw, f"a non-empty {role} id")
    return id_dtype(s).alias(role)


def text_floats(table: TextTable, index: int, column: str | int, role: str) -> pl.Series | DataError:
    raw = table.field(index)
    vals = raw.str.strip_chars().cast(pl.Float64, strict=False)
    row = first_true(vals.is_null() | ~vals.is_finite())
    if row is not None:
        return table.error(f"{role} is not a number", row, column, raw, f"a finite number for {role}")
    return vals.alias(role)


def text_ints(
    table: TextTable, index: int, column: str | int, role: str, expected: str = ""
) -> pl.Series | DataError:
    raw = table.field(index)
    vals = raw.str.strip_chars().str.to_integer(strict=False)
    row = first_true(vals.is_null())
    if row is not None:
        return table.error(
            f"{role} is not an integer", row, column, raw, expected or f"an integer for {role}"
        )
    return vals.alias(role)


def text_timestamps(
    table: TextTable, index: int, column: str | int, fmt: str | None
) -> pl.Series | DataError:
    if fmt is None:
        return text_ints(
            table,
            index,
            column,
            "timestamp",
            "an integer unix timestamp in seconds (set timestamp_format to read dates)",
        )
    raw = table.field(index)
    try:
        parsed = raw.str.strip_chars().str.strptime(pl.Datetime("us"), fmt, strict=False)
    except pl.exceptions.PolarsError as e:
        return DataError(
            f"timestamp_format {fmt!r} cannot be used ({e})",
            path=table.path,
            column=column,
            expected="a strptime format such as '%Y-%m-%d %H:%M:%S'",
        )
    row = first_true(parsed.is_null())
    if row is not None:
        return table.error(
            f"timestamp does not match timestamp_format {fmt!r}",
            row,
            column,
            raw,
            f"a date written as {fmt!r}",
        )
    return parsed.dt.epoch("s").cast(pl.Int64).alias("timestamp")


def collect(results: dict[str, pl.Series | DataError]) -> pl.DataFrame:
    """The frame of typed columns, or raise the error on the earliest line (then column order)."""
    errors = [r for r in results.values() if isinstance(r, DataError)]
    if errors:
        raise min(errors, key=lambda e: e.line if e.line is not None else 0)
    return pl.DataFrame([s.alias(k) for k, s in results.items()])  # type: ignore[union-attr]


def check_unique_ids(ids: pl.Series, table: TextTable, column: str, what: str) -> None:
    """A DataError naming both lines where an id of a one-row-per-id table repeats."""
    dup = first_true(ids.is_duplicated() & ~ids.is_first_distinct())
    if dup is not None:
        first = first_true(ids == ids[dup])
        raise DataError(
            f"{what} id {ids[dup]!r} is listed twice (first on line {table.line(first or 0)})",
            path=table.path,
            line=table.line(dup),
            column=column,
            expected=f"one line per {what}",
        )


def skip_note(table: TextTable) -> list[str]:
    """The dataset note listing the blank lines `table` skipped (none: no note)."""
    if not table.skipped:
        return []
    shown = ", ".join(map(str, table.skipped[:10])) + (", ..." if len(table.skipped) > 10 else "")
    return [f"{table.path.name}: skipped {len(table.skipped)} blank line(s): {shown}"]
