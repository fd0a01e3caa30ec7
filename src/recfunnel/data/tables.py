"""Generic interaction tables: a user's own CSV / TSV / delimited text or Parquet file, read as a
:class:`~recfunnel.data.schema.ColumnMapping` describes. Only the mapped columns are converted;
errors name the file, line (text) or row (Parquet), column and value at fault."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset, build_dataset
from recfunnel.data.errors import DataError
from recfunnel.data.schema import ColumnMapping
from recfunnel.data.text_table import (
    TextTable,
    collect,
    first_true,
    id_dtype,
    not_found,
    split_text,
    text_floats,
    text_ids,
    text_timestamps,
)

__all__ = ["read_table"]

WEIGHT_EXPECTED = (
    "a weight > 0 (drop rows of weight 0: a model that ignores weights would still count them as "
    "interactions)"
)
INT64_MAX = 2**63 - 1


def _resolve(ref: str | int, names: Sequence[str], path: Path, role: str, what: str) -> int:
    if isinstance(ref, int):
        if ref >= len(names):
            raise DataError(
                f"{role} column position {ref} is out of range: the file has {len(names)} {what}",
                path=path,
                column=ref,
                expected=f"a 0-based position below {len(names)}",
            )
        return ref
    hits = [i for i, n in enumerate(names) if n == ref]
    if not hits:
        raise DataError(
            f"{role} column {ref!r} not found",
            path=path,
            column=ref,
            expected=f"one of the columns present: {', '.join(map(repr, names))}",
        )
    if len(hits) > 1:
        raise DataError(
            f"{role} column {ref!r} appears {len(hits)} times in the header",
            path=path,
            column=ref,
            expected="a column name that appears once (or a 0-based position)",
        )
    return hits[0]


def _text_weights(table: TextTable, index: int, column: str | int) -> pl.Series | DataError:
    vals = text_floats(table, index, column, "weight")
    if isinstance(vals, DataError):
        return vals
    row = first_true(vals <= 0)
    if row is not None:
        return table.error("weight is not positive", row, column, table.field(index), WEIGHT_EXPECTED)
    return vals


def _read_text_table(m: ColumnMapping) -> tuple[pl.DataFrame, np.ndarray]:
    """The typed columns, and the source line of each row."""
    split = split_text(m.path, sep=m.resolved_sep, header=m.header, encoding=m.encoding, unquote=True)
    names = split.header or tuple(str(i) for i in range(split.n_fields))
    results: dict[str, pl.Series | DataError] = {}
    for role, ref in m.columns.items():
        i = _resolve(ref, names, m.path, role, "columns" if split.header else "fields per line")
        label: str | int = names[i] if split.header else i
        if role in ("user", "item"):
            results[role] = text_ids(split, i, label, role)
        elif role == "timestamp":
            results[role] = text_timestamps(split, i, label, m.timestamp_format)
        elif role == "weight":
            results[role] = _text_weights(split, i, label)
        else:
            results[role] = text_floats(split, i, label, role)
    return collect(results), split.line_numbers


def _parquet_error(path: Path, column: str, message: str, expected: str, value: object = None) -> DataError:
    return DataError(message, path=path, column=column, value=value, expected=expected)


def _first_null(s: pl.Series, path: Path, column: str, role: str) -> None:
    row = first_true(s.is_null())
    if row is not None:
        raise _parquet_error(path, column, f"row {row + 1} has a null {role}", f"a {role} value in every row")


def _whole_floats(s: pl.Series) -> bool:
    """Every value a finite whole number within int64 (float ids written by pandas with nulls)."""
    x = s.cast(pl.Float64)
    return bool((x.is_finite() & (x == x.round(0)) & (x.abs() < 2.0**63)).all())


def _int64(s: pl.Series, path: Path, column: str, role: str) -> pl.Series:
    if s.dtype == pl.UInt64 and (s.max() or 0) > INT64_MAX:  # type: ignore[operator]
        row = first_true(s > INT64_MAX)
        raise _parquet_error(
            path, column, f"row {(row or 0) + 1}: {role} beyond the int64 range", "integers below 2**63"
        )
    return s.cast(pl.Int64).alias(role)


def _parquet_column(s: pl.Series, m: ColumnMapping, column: str, role: str) -> pl.Series:
    path, dt = m.path, s.dtype
    _first_null(s, path, column, role)
    if role in ("user", "item"):
        if dt.is_integer():
            return _int64(s, path, column, role)
        if dt in (pl.Utf8, pl.Categorical) or isinstance(dt, pl.Enum):
            text = s.cast(pl.Utf8).str.strip_chars()
            row = first_true(text == "")
            if row is not None:
                raise _parquet_error(
                    path, column, f"row {row + 1} has an empty {role} id", f"a non-empty {role} id"
                )
            return id_dtype(text).alias(role)
        if dt.is_float() and _whole_floats(s):
            return s.cast(pl.Int64).alias(role)
        raise _parquet_error(
            path, column, f"{role} id column has type {dt}", "integer or string ids (or whole-number floats)"
        )
    if role == "timestamp":
        if dt.is_integer():
            return _int64(s, path, column, role)
        if isinstance(dt, pl.Datetime):
            return s.dt.epoch("s").cast(pl.Int64).alias(role)
        if dt == pl.Date:
            return s.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Int64).alias(role)
        if dt == pl.Utf8 and m.timestamp_format is not None:
            try:
                parsed = s.str.strip_chars().str.strptime(pl.Datetime("us"), m.timestamp_format, strict=False)
            except pl.exceptions.PolarsError as e:
                raise _parquet_error(
                    path,
                    column,
                    f"timestamp_format {m.timestamp_format!r} cannot be used ({e})",
                    "a strptime format",
                ) from None
            row = first_true(parsed.is_null())
            if row is not None:
                raise _parquet_error(
                    path,
                    column,
                    f"row {row + 1}: timestamp does not match timestamp_format",
                    f"a date written as {m.timestamp_format!r}",
                    s[row],
                )
            return parsed.dt.epoch("s").cast(pl.Int64).alias(role)
        if dt.is_float() and _whole_floats(s):
            return s.cast(pl.Int64).alias(role)
        raise _parquet_error(
            path,
            column,
            f"timestamp column has type {dt}",
            "integer unix seconds, a datetime/date column, or strings with timestamp_format",
        )
    if not dt.is_numeric():
        raise _parquet_error(path, column, f"{role} column has type {dt}", f"a numeric column for {role}")
    vals = s.cast(pl.Float64)
    row = first_true(~vals.is_finite())
    if row is not None:
        raise _parquet_error(
            path, column, f"row {row + 1} has a non-finite {role}", f"a finite number for {role}", vals[row]
        )
    if role == "weight":
        row = first_true(vals <= 0)
        if row is not None:
            raise _parquet_error(
                path, column, f"row {row + 1}: weight is not positive", WEIGHT_EXPECTED, vals[row]
            )
    return vals.alias(role)


def _read_parquet_table(m: ColumnMapping) -> pl.DataFrame:
    path = m.path
    if not path.exists():
        raise not_found(path)
    try:
        names = list(pl.read_parquet_schema(path).keys())
    except Exception as e:  # polars/pyarrow raise several kinds for a file that is not Parquet
        raise DataError(
            f"not a readable Parquet file ({type(e).__name__}: {e})", path=path, expected="a Parquet file"
        ) from None
    cols = {role: names[_resolve(ref, names, path, role, "columns")] for role, ref in m.columns.items()}
    try:
        table = pl.read_parquet(path, columns=list(dict.fromkeys(cols.values())))
    except Exception as e:  # a damaged file can fail on its data pages after a readable schema
        raise DataError(
            f"not a readable Parquet file ({type(e).__name__}: {e})", path=path, expected="a Parquet file"
        ) from None
    if table.height == 0:
        raise DataError("empty file", path=path, expected="at least one data row")
    return pl.DataFrame([_parquet_column(table[c], m, c, role) for role, c in cols.items()])


def read_table(mapping: ColumnMapping) -> Dataset:
    """A user's own CSV / TSV / delimited text (optionally compressed) or Parquet file, read as
    `mapping` describes. Only the mapped columns are converted; rows repeating a (user, item)
    pair follow ``mapping.duplicates`` (:meth:`~recfunnel.data.dataset.Dataset.deduplicated`)."""
    lines = None
    if mapping.resolved_format == "parquet":
        frame = _read_parquet_table(mapping)
    else:
        frame, lines = _read_text_table(mapping)
    ds = build_dataset(mapping.dataset_name, frame, source=mapping.path)
    return ds.deduplicated(mapping.duplicates, lines=lines)
