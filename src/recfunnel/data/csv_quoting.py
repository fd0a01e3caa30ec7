"""CSV quoting (RFC 4180) for the text tokenizer: a field in double quotes may hold the separator
("Smith, John"), a line break, or a doubled quote.

Three paths, fastest first, all giving the same fields: lines whose quotes only wrap whole fields
are split and unquoted by vectorised polars ops (files that quote every field, as R's write.csv
does); other lines of a file whose every line closes its quotes go through Python's csv reader
one line each; a file with a field spanning lines is read record by record. Errors name the line
a record starts on.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.data.errors import DataError

MAX_SHOWN = 200  # characters of a bad line shown in an error
QUOTE = '"'


class _SpansLines(Exception):
    """A record of the line-by-line pass ran over its line end."""


def _wraps_whole_fields(parts: pl.Series) -> np.ndarray:
    """bool [rows]: every field holds no quote, or is wholly wrapped in one pair of quotes."""
    e = pl.element().str.strip_chars()
    n = e.str.count_matches(QUOTE, literal=True)
    wrapped = (n == 2) & e.str.starts_with(QUOTE) & e.str.ends_with(QUOTE) & (e.str.len_chars() >= 2)
    return parts.list.eval((n == 0) | wrapped).list.all().fill_null(True).to_numpy()


def _unquoted(parts: pl.Series) -> pl.Series:
    """Fields stripped of surrounding spaces and of one pair of quotes wrapping them."""
    e = pl.element().str.strip_chars()
    wrapped = e.str.starts_with(QUOTE) & e.str.ends_with(QUOTE) & (e.str.len_chars() >= 2)
    return parts.list.eval(pl.when(wrapped).then(e.str.slice(1, e.str.len_chars() - 2)).otherwise(e))


def _records(
    lines: Sequence[str], numbers: Sequence[int], sep: str, path: Path, one_per_line: bool
) -> tuple[list[list[str]], list[int]]:
    """Records read by Python's csv reader from `lines` (numbered `numbers`), with the number of
    the line each starts on. one_per_line: raise _SpansLines if a record runs over a line end."""
    reader = csv.reader(
        (s + "\n" for s in lines), delimiter=sep, quotechar=QUOTE, skipinitialspace=True, strict=True
    )
    records: list[list[str]] = []
    starts: list[int] = []
    consumed = 0
    try:
        for record in reader:
            if one_per_line and reader.line_num != consumed + 1:
                raise _SpansLines
            records.append(record)
            starts.append(numbers[consumed])
            consumed = reader.line_num
    except csv.Error as e:
        if one_per_line:
            raise _SpansLines from None
        line = numbers[min(consumed, len(numbers) - 1)]
        raise DataError(
            f"line {line}: malformed quoted field ({e})",
            path=path,
            line=line,
            value=lines[min(consumed, len(lines) - 1)][:MAX_SHOWN],
            expected="a quoted field that ends at its closing quote, followed by the separator or the end "
            'of the line; a quote inside a quoted field is written twice ("")',
        ) from None
    return records, starts


def _as_lists(records: list[list[str]]) -> pl.Series:
    """List[str] Series of `records`; column-wise (fast) when every record has the same length."""
    widths = {len(r) for r in records}
    if len(widths) == 1 and 0 not in widths:
        columns = [pl.Series(f"c{j}", col, dtype=pl.Utf8) for j, col in enumerate(zip(*records, strict=True))]
        return pl.DataFrame(columns).select(pl.concat_list(pl.all()).alias("parts")).to_series()
    return pl.Series("parts", records, dtype=pl.List(pl.Utf8))


def _merged(pieces: Iterable[tuple[np.ndarray, pl.Series]]) -> pl.Series:
    """One List[str] Series from (row indices, their parts) pieces covering every row once."""
    frames = [pl.DataFrame({"row": rows, "parts": parts}) for rows, parts in pieces if len(rows)]
    return pl.concat(frames).sort("row")["parts"]


def quoted_fields(lines: pl.Series, sep: str, path: Path) -> tuple[pl.Series, np.ndarray]:
    """Split the physical `lines` of a CSV file (separator `sep`, one character) into records.

    Returns:
        parts: List[str] [records], the fields unquoted (and for quote-wrapped fields stripped).
        numbers: int64 [records], the 1-based line each record starts on.
    Raises:
        DataError: a malformed quoted field, naming its line.
    """
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    parts = lines.str.split(sep)
    simple = _wraps_whole_fields(parts)
    if simple.all():
        return _unquoted(parts), numbers
    rows = np.flatnonzero(~simple)
    odd = (lines.gather(rows).str.count_matches(QUOTE, literal=True) % 2 == 1).any()
    if not odd:
        hard = lines.gather(rows).to_list()
        try:
            records, _ = _records(hard, numbers[rows].tolist(), sep, path, one_per_line=True)
        except _SpansLines:
            pass  # read the whole file record by record below
        else:
            keep = np.flatnonzero(simple)
            return _merged([(keep, _unquoted(parts.gather(keep))), (rows, _as_lists(records))]), numbers
    records, starts = _records(lines.to_list(), numbers.tolist(), sep, path, one_per_line=False)
    return _as_lists(records), np.asarray(starts, dtype=np.int64)
