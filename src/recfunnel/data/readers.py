"""Readers: MovieLens 100K / 1M release folders, SASRec sequence files, and any CSV/TSV/Parquet
file described by a :class:`~recfunnel.data.schema.ColumnMapping`.

Every reader is vectorised (polars), keeps every row, and reports bad input as a
:class:`~recfunnel.data.errors.DataError` naming file, 1-based line, column, the bad value and what
was expected. Text files are split on a literal separator with no quote handling.

Id columns follow one rule everywhere: Int64 when every id is a plain integer (so vocabularies sort
numerically), else the ids are kept as strings. Surrounding whitespace is stripped from ids and
numbers. Ids with leading zeros ("007") or a sign stay strings, so "007" and "7" never merge.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset, build_dataset
from recfunnel.data.errors import DataError
from recfunnel.data.schema import ColumnMapping
from recfunnel.settings import data_root as _data_root
from recfunnel.settings import dataset_dir

__all__ = [
    "DATASETS",
    "load_dataset",
    "load_dataset_from_mapping",
    "read_ml100k",
    "read_ml1m",
    "read_sequences",
    "read_table",
]

#: The 19 genres of the MovieLens 100K release, in u.item flag order (used when u.genre is absent).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

SEQUENCE_NOTE = "timestamps are the file's row order (the format has no time)"

_MAX_SHOWN = 200  # characters of a bad line shown in an error


# --------------------------------------------------------------------------------------------
# Shared text-table parser
# --------------------------------------------------------------------------------------------


def _listing(folder: Path) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "nothing readable"
    return ", ".join(names) if names else "nothing (empty folder)"


def _not_found(path: Path, what: str = "file") -> DataError:
    parent = path.parent
    if parent.is_dir():
        detail = f"{what} not found; the folder {parent} holds: {_listing(parent)}"
    else:
        detail = f"{what} not found (its folder {parent} does not exist either)"
    return DataError(detail, path=path)


def _read_text(path: Path, encoding: str) -> str:
    """The file's text. encoding: "utf8", "latin1", or "auto" (UTF-8, else Latin-1)."""
    if not path.exists():
        raise _not_found(path)
    if path.is_dir():
        raise DataError("is a folder", path=path, expected="a file")
    data = path.read_bytes()
    if encoding == "latin1":
        return data.decode("latin-1")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
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
class _Split:
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


def _split_text(
    path: Path,
    *,
    sep: str,
    names: Sequence[str] | None = None,
    header: bool = False,
    encoding: str = "utf8",
    skip_blank: bool = False,
    unquote: bool = False,
) -> _Split:
    """Read and split a delimited text file, checking that every line has the same field count.

    names: the expected fields (their count is checked, and they are shown in errors); without
    names the header's field count, or else the first data line's, is expected.
    skip_blank: skip (and report in `skipped`) blank lines instead of failing on them.
    """
    text = _read_text(path, encoding)
    lines = pl.Series("line", [text]).str.split("\n").explode().str.strip_suffix("\r")
    if len(lines) and lines[-1] == "":
        lines = lines.head(len(lines) - 1)  # the final newline
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    if len(lines) == 0:
        raise DataError("empty file", path=path, expected="at least one data row")

    header_names: tuple[str, ...] | None = None
    if header:
        first = lines[0]
        if first.strip() == "":
            raise DataError("line 1 is blank", path=path, line=1, expected="a header line naming the columns")
        raw_names = pl.Series(first.split(sep)).str.strip_chars()
        if unquote:
            raw_names = _unquote(raw_names).str.strip_chars()
        header_names = tuple(raw_names.to_list())
        lines, numbers = lines.slice(1), numbers[1:]
        if len(lines) == 0:
            raise DataError(
                "empty file: a header but no data rows", path=path, expected="at least one data row"
            )

    blank = (lines.str.strip_chars() == "").to_numpy()
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
        lines, numbers = lines.filter(pl.Series(~blank)), numbers[~blank]
        if len(lines) == 0:
            raise DataError("empty file: only blank lines", path=path, expected="at least one data row")

    parts = lines.str.split(sep)
    counts = parts.list.len().to_numpy()
    if names is not None:
        n_fields, described = len(names), ", ".join(names)
    elif header_names is not None:
        n_fields = len(header_names)
        shown = ", ".join(header_names[:8]) + (", ..." if len(header_names) > 8 else "")
        described = f"as in the header: {shown}"
    else:
        n_fields, described = int(counts[0]), f"as on line {int(numbers[0])}"
    bad = np.flatnonzero(counts != n_fields)
    if len(bad):
        row = int(bad[0])
        ln, got = int(numbers[row]), int(counts[row])
        hint = "; quoted fields holding the separator are not supported" if '"' in lines[row] else ""
        raise DataError(
            f"line {ln} has {got} field{'s' if got != 1 else ''}, expected {n_fields} ({described})",
            path=path,
            line=ln,
            value=lines[row][:_MAX_SHOWN],
            expected=f"fields separated by {sep!r}{hint}",
        )
    return _Split(path, sep, header_names, numbers, parts, n_fields, skipped, unquote)


# --- casts of text fields: each returns the typed Series or the DataError for its first bad row ---


def _first(mask: pl.Series) -> int | None:
    idx = np.flatnonzero(mask.fill_null(True).to_numpy())
    return int(idx[0]) if len(idx) else None


def _id_dtype(s: pl.Series) -> pl.Series:
    """Int64 when every (stripped, non-null) id is a plain integer, else the strings."""
    ints = s.str.to_integer(strict=False)
    if ints.null_count() == 0 and bool((ints.cast(pl.Utf8) == s).all()):
        return ints
    return s


def _text_ids(split: _Split, index: int, column: str | int, role: str) -> pl.Series | DataError:
    raw = split.field(index)
    s = raw.str.strip_chars()
    row = _first(s == "")
    if row is not None:
        return split.error(f"empty {role} id", row, column, raw, f"a non-empty {role} id")
    return _id_dtype(s).alias(role)


def _text_floats(split: _Split, index: int, column: str | int, role: str) -> pl.Series | DataError:
    raw = split.field(index)
    vals = raw.str.strip_chars().cast(pl.Float64, strict=False)
    row = _first(vals.is_null() | ~vals.is_finite())
    if row is not None:
        return split.error(f"{role} is not a number", row, column, raw, f"a finite number for {role}")
    return vals.alias(role)


def _text_ints(
    split: _Split, index: int, column: str | int, role: str, expected: str = ""
) -> pl.Series | DataError:
    raw = split.field(index)
    vals = raw.str.strip_chars().str.to_integer(strict=False)
    row = _first(vals.is_null())
    if row is not None:
        return split.error(
            f"{role} is not an integer", row, column, raw, expected or f"an integer for {role}"
        )
    return vals.alias(role)


def _text_timestamps(split: _Split, index: int, column: str | int, fmt: str | None) -> pl.Series | DataError:
    if fmt is None:
        return _text_ints(
            split,
            index,
            column,
            "timestamp",
            "an integer unix timestamp in seconds (set timestamp_format to read dates)",
        )
    raw = split.field(index)
    parsed = raw.str.strip_chars().str.strptime(pl.Datetime("us"), fmt, strict=False)
    row = _first(parsed.is_null())
    if row is not None:
        return split.error(
            f"timestamp does not match timestamp_format {fmt!r}",
            row,
            column,
            raw,
            f"a date written as {fmt!r}",
        )
    return parsed.dt.epoch("s").cast(pl.Int64).alias("timestamp")


def _collect(results: dict[str, pl.Series | DataError]) -> pl.DataFrame:
    """The frame of typed columns, or raise the error on the earliest line (then column order)."""
    errors = [r for r in results.values() if isinstance(r, DataError)]
    if errors:
        raise min(errors, key=lambda e: e.line if e.line is not None else 0)
    return pl.DataFrame([s.alias(k) for k, s in results.items()])  # type: ignore[union-attr]


def _check_unique_ids(ids: pl.Series, split: _Split, column: str, what: str) -> None:
    dup = _first(ids.is_duplicated() & ~ids.is_first_distinct())
    if dup is not None:
        first = _first(ids == ids[dup])
        raise DataError(
            f"{what} id {ids[dup]!r} is listed twice (first on line {split.line(first or 0)})",
            path=split.path,
            line=split.line(dup),
            column=column,
            expected=f"one line per {what}",
        )


def _with_notes(ds: Dataset, notes: Sequence[str]) -> Dataset:
    return replace(ds, notes=ds.notes + tuple(notes)) if notes else ds


def _skip_note(split: _Split) -> list[str]:
    if not split.skipped:
        return []
    shown = ", ".join(map(str, split.skipped[:10])) + (", ..." if len(split.skipped) > 10 else "")
    return [f"{split.path.name}: skipped {len(split.skipped)} blank line(s): {shown}"]


def _same_id_dtype(
    frame: pl.DataFrame, col: str, table: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Interactions and feature table ids must share a dtype for build_dataset: else both become str."""
    if table is None or frame[col].dtype == table["id"].dtype:
        return frame, table
    return (frame.with_columns(pl.col(col).cast(pl.Utf8)), table.with_columns(pl.col("id").cast(pl.Utf8)))


def _title_year(title: pl.Expr) -> pl.Expr:
    """The year of the last "(1995)" in a MovieLens title, or null."""
    return title.str.extract(r".*\((\d{4})\)", 1).cast(pl.Int64)


# --------------------------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------------------------

_RATING_NAMES = ("user", "item", "rating", "timestamp")


def _read_ratings(path: Path, sep: str) -> pl.DataFrame:
    split = _split_text(path, sep=sep, names=_RATING_NAMES)
    return _collect(
        {
            "user": _text_ids(split, 0, "user", "user"),
            "item": _text_ids(split, 1, "item", "item"),
            "rating": _text_floats(split, 2, "rating", "rating"),
            "timestamp": _text_timestamps(split, 3, "timestamp", None),
        }
    )


def _require_folder(folder: Path, must_hold: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise _not_found(folder, "dataset folder")
    if not (folder / must_hold).is_file():
        raise DataError(f"file not found; the folder holds: {_listing(folder)}", path=folder / must_hold)
    return folder


def _ml100k_genres(path: Path) -> tuple[tuple[str, ...], list[str]]:
    if not path.exists():
        return ML100K_GENRES, [f"{path.name} absent: the standard 19 MovieLens 100K genre names were used"]
    split = _split_text(path, sep="|", names=("genre", "index"), encoding="auto", skip_blank=True)
    table = _collect({"genre": split.field(0), "index": _text_ints(split, 1, "index", "genre index")})
    order = table["index"].to_numpy()
    if sorted(order.tolist()) != list(range(len(order))):
        raise DataError(
            "genre indices are not 0..n-1, each once",
            path=path,
            column="index",
            value=order.tolist(),
            expected=f"0..{len(order) - 1}",
        )
    names = tuple(table.sort("index")["genre"].to_list())
    return names, _skip_note(split)


def _ml100k_items(path: Path, genres: Sequence[str]) -> tuple[pl.DataFrame, list[str]]:
    head = ("id", "title", "release_date", "video_release_date", "imdb_url")
    split = _split_text(path, sep="|", names=head + tuple(genres), encoding="auto", skip_blank=True)
    results: dict[str, pl.Series | DataError] = {
        "id": _text_ids(split, 0, "id", "item"),
        "title": split.field(1),
        "release_date": split.field(2),
    }
    for j, g in enumerate(genres):
        flag = split.field(len(head) + j)
        row = _first(~flag.is_in(["0", "1"]))
        results[f"g{j}"] = (
            flag
            if row is None
            else DataError(
                f"genre flag {g!r} is not 0 or 1",
                path=path,
                line=split.line(row),
                column=g,
                value=flag[row],
                expected="0 or 1",
            )
        )
    raw = _collect(results)
    _check_unique_ids(raw["id"], split, "id", "item")
    release = pl.when(pl.col("release_date") == "").then(None).otherwise(pl.col("release_date"))
    flags = [pl.when(pl.col(f"g{j}") == "1").then(pl.lit(g)) for j, g in enumerate(genres)]
    items = raw.select(
        "id",
        "title",
        release.alias("release_date"),
        pl.coalesce(
            pl.col("release_date").str.extract(r"(\d{4})\s*$", 1).cast(pl.Int64), _title_year(pl.col("title"))
        ).alias("year"),
        pl.concat_list(flags).list.drop_nulls().alias("genres"),
    )
    return items, _skip_note(split)


def _users_table(split: _Split, cols: dict[str, int]) -> pl.DataFrame:
    users = _collect(
        {
            "id": _text_ids(split, cols["id"], "id", "user"),
            "age": _text_ints(split, cols["age"], "age", "age"),
            "gender": split.field(cols["gender"]),
            "occupation": split.field(cols["occupation"]),
            "zip": split.field(cols["zip"]),
        }
    )
    _check_unique_ids(users["id"], split, "id", "user")
    return users


def read_ml100k(folder: Path, name: str = "ml-100k") -> Dataset:
    """The MovieLens 100K release folder: u.data (required), u.item, u.user, u.genre.

    item_features: id, title, release_date (str or null), year (int or null: the release date's
    year, else the title's), genres (list[str]). user_features: id, age, gender, occupation, zip.
    Blank lines in the metadata files (the release has some) are skipped and listed in the notes.
    """
    folder = _require_folder(folder, "u.data")
    frame = _read_ratings(folder / "u.data", "\t")
    notes: list[str] = []
    items = users = None
    if (folder / "u.item").exists():
        genres, genre_notes = _ml100k_genres(folder / "u.genre")
        items, item_notes = _ml100k_items(folder / "u.item", genres)
        notes += genre_notes + item_notes
    else:
        notes.append("u.item absent: no item features")
    if (folder / "u.user").exists():
        split = _split_text(
            folder / "u.user",
            sep="|",
            names=("id", "age", "gender", "occupation", "zip"),
            encoding="auto",
            skip_blank=True,
        )
        users = _users_table(split, {"id": 0, "age": 1, "gender": 2, "occupation": 3, "zip": 4})
        notes += _skip_note(split)
    else:
        notes.append("u.user absent: no user features")
    frame, items = _same_id_dtype(frame, "item", items)
    frame, users = _same_id_dtype(frame, "user", users)
    ds = build_dataset(name, frame, user_features=users, item_features=items, source=folder)
    return _with_notes(ds, notes)


def read_ml1m(folder: Path, name: str = "ml-1m") -> Dataset:
    """The MovieLens 1M release folder (``::``-separated): ratings.dat (required), movies.dat,
    users.dat. Same feature schema as :func:`read_ml100k` (release_date is null: the release has
    none; year comes from the "(1995)" ending the title; occupation is the release's int code,
    kept as a string)."""
    folder = _require_folder(folder, "ratings.dat")
    frame = _read_ratings(folder / "ratings.dat", "::")
    notes: list[str] = []
    items = users = None
    if (folder / "movies.dat").exists():
        split = _split_text(folder / "movies.dat", sep="::", names=("id", "title", "genres"), encoding="auto")
        raw = _collect(
            {"id": _text_ids(split, 0, "id", "item"), "title": split.field(1), "genres": split.field(2)}
        )
        _check_unique_ids(raw["id"], split, "id", "item")
        items = raw.select(
            "id",
            "title",
            pl.lit(None, dtype=pl.Utf8).alias("release_date"),
            _title_year(pl.col("title")).alias("year"),
            pl.col("genres")
            .str.split("|")
            .list.eval(pl.element().filter(pl.element() != ""))
            .alias("genres"),
        )
    else:
        notes.append("movies.dat absent: no item features")
    if (folder / "users.dat").exists():
        split = _split_text(
            folder / "users.dat",
            sep="::",
            names=("id", "gender", "age", "occupation", "zip"),
            encoding="auto",
        )
        users = _users_table(split, {"id": 0, "gender": 1, "age": 2, "occupation": 3, "zip": 4})
    else:
        notes.append("users.dat absent: no user features")
    frame, items = _same_id_dtype(frame, "item", items)
    frame, users = _same_id_dtype(frame, "user", users)
    ds = build_dataset(name, frame, user_features=users, item_features=items, source=folder)
    return _with_notes(ds, notes)


# --------------------------------------------------------------------------------------------
# Sequences and user tables
# --------------------------------------------------------------------------------------------


def read_sequences(path: Path, name: str | None = None) -> Dataset:
    """A SASRec-style sequence file: one ``user item`` pair per line, separated by a single space,
    each user's lines in time order. The timestamp of a row is its 0-based position among the
    file's rows, so ordering by time (leave-one-out) follows the file."""
    path = Path(path)
    split = _split_text(path, sep=" ", names=("user", "item"))
    frame = _collect(
        {"user": _text_ids(split, 0, "user", "user"), "item": _text_ids(split, 1, "item", "item")}
    )
    frame = frame.with_columns(timestamp=pl.int_range(0, pl.len(), dtype=pl.Int64))
    ds = build_dataset(name or path.stem, frame, source=path)
    return _with_notes(ds, [SEQUENCE_NOTE])


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


def _read_text_table(m: ColumnMapping) -> pl.DataFrame:
    split = _split_text(m.path, sep=m.resolved_sep, header=m.header, encoding=m.encoding, unquote=True)
    names = split.header or tuple(str(i) for i in range(split.n_fields))
    results: dict[str, pl.Series | DataError] = {}
    for role, ref in m.columns.items():
        i = _resolve(ref, names, m.path, role, "columns" if split.header else "fields per line")
        label: str | int = names[i] if split.header else i
        if role in ("user", "item"):
            results[role] = _text_ids(split, i, label, role)
        elif role == "timestamp":
            results[role] = _text_timestamps(split, i, label, m.timestamp_format)
        else:
            results[role] = _text_floats(split, i, label, role)
    return _collect(results)


def _parquet_error(path: Path, column: str, message: str, expected: str, value: object = None) -> DataError:
    return DataError(message, path=path, column=column, value=value, expected=expected)


def _first_null(s: pl.Series, path: Path, column: str, role: str) -> None:
    row = _first(s.is_null())
    if row is not None:
        raise _parquet_error(path, column, f"row {row + 1} has a null {role}", f"a {role} value in every row")


def _parquet_column(s: pl.Series, m: ColumnMapping, column: str, role: str) -> pl.Series:
    path, dt = m.path, s.dtype
    _first_null(s, path, column, role)
    if role in ("user", "item"):
        if dt.is_integer():
            return s.cast(pl.Int64).alias(role)
        if dt in (pl.Utf8, pl.Categorical) or isinstance(dt, pl.Enum):
            text = s.cast(pl.Utf8).str.strip_chars()
            row = _first(text == "")
            if row is not None:
                raise _parquet_error(
                    path, column, f"row {row + 1} has an empty {role} id", f"a non-empty {role} id"
                )
            return _id_dtype(text).alias(role)
        if dt.is_float() and bool((s == s.round(0)).all()):
            return s.cast(pl.Int64).alias(role)
        raise _parquet_error(path, column, f"{role} id column has type {dt}", "integer or string ids")
    if role == "timestamp":
        if dt.is_integer():
            return s.cast(pl.Int64).alias(role)
        if isinstance(dt, pl.Datetime):
            return s.dt.epoch("s").cast(pl.Int64).alias(role)
        if dt == pl.Date:
            return s.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Int64).alias(role)
        if dt == pl.Utf8 and m.timestamp_format is not None:
            parsed = s.str.strip_chars().str.strptime(pl.Datetime("us"), m.timestamp_format, strict=False)
            row = _first(parsed.is_null())
            if row is not None:
                raise _parquet_error(
                    path,
                    column,
                    f"row {row + 1}: timestamp does not match timestamp_format",
                    f"a date written as {m.timestamp_format!r}",
                    s[row],
                )
            return parsed.dt.epoch("s").cast(pl.Int64).alias(role)
        if dt.is_float() and bool((s == s.round(0)).all()):
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
    row = _first(~vals.is_finite())
    if row is not None:
        raise _parquet_error(
            path, column, f"row {row + 1} has a non-finite {role}", f"a finite number for {role}", vals[row]
        )
    return vals.alias(role)


def _read_parquet_table(m: ColumnMapping) -> pl.DataFrame:
    path = m.path
    if not path.exists():
        raise _not_found(path)
    try:
        names = list(pl.read_parquet_schema(path).keys())
    except Exception as e:  # polars/pyarrow raise several kinds for a file that is not Parquet
        raise DataError(
            f"not a readable Parquet file ({type(e).__name__}: {e})", path=path, expected="a Parquet file"
        ) from None
    cols = {role: names[_resolve(ref, names, path, role, "columns")] for role, ref in m.columns.items()}
    table = pl.read_parquet(path, columns=list(dict.fromkeys(cols.values())))
    if table.height == 0:
        raise DataError("empty file", path=path, expected="at least one data row")
    return pl.DataFrame([_parquet_column(table[c], m, c, role) for role, c in cols.items()])


def read_table(mapping: ColumnMapping) -> Dataset:
    """A user's own CSV / TSV / delimited text or Parquet file, read as `mapping` describes.
    Only the mapped columns are converted; every row is kept."""
    if mapping.resolved_format == "parquet":
        frame = _read_parquet_table(mapping)
    else:
        frame = _read_text_table(mapping)
    return build_dataset(mapping.dataset_name, frame, source=mapping.path)


#: Alias: a dataset from a column mapping.
load_dataset_from_mapping = read_table


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _amazon_video(folder: Path) -> Dataset:
    return read_sequences(Path(folder) / "Video.txt", name="amazon-video-seq")


def _diginetica(folder: Path) -> Dataset:
    mapping = ColumnMapping(
        path=Path(folder) / "sample_train-item-views.csv",
        sep=";",
        user="session_id",
        item="item_id",
        timestamp="timeframe",
        name="diginetica-sample",
    )
    ds = read_table(mapping)
    return _with_notes(
        ds,
        [
            "users are sessions (session_id); timestamps are the timeframe column, which orders "
            "events within a session only (not comparable across sessions)"
        ],
    )


#: Named datasets under the data root: name -> reader of that dataset's folder.
DATASETS: dict[str, Callable[[Path], Dataset]] = {
    "ml-100k": read_ml100k,
    "ml-1m": read_ml1m,
    "amazon-video-seq": _amazon_video,
    "diginetica-sample": _diginetica,
}

_LAYOUTS = "an ml-100k folder (u.data), an ml-1m folder (ratings.dat) or a sequence .txt file"


def _load_path(path: Path) -> Dataset:
    if path.is_dir():
        if (path / "u.data").is_file():
            return read_ml100k(path)
        if (path / "ratings.dat").is_file():
            return read_ml1m(path)
        raise DataError(
            f"cannot tell the dataset layout of this folder; it holds: {_listing(path)}",
            path=path,
            expected=_LAYOUTS,
        )
    if not path.exists():
        raise _not_found(path)
    if path.suffix.lower() == ".txt":
        return read_sequences(path)
    raise DataError(
        "cannot tell the format of this file",
        path=path,
        expected=f"{_LAYOUTS}; describe other files with a ColumnMapping (read_table)",
    )


def load_dataset(name: str, data_root: str | Path | None = None) -> Dataset:
    """A dataset by registry name (its folder under the data root, see :mod:`recfunnel.settings`),
    or by path: an ml-100k folder (u.data), an ml-1m folder (ratings.dat) or a sequence .txt file."""
    if name in DATASETS:
        try:
            folder = dataset_dir(name, data_root)
        except FileNotFoundError as e:
            raise DataError(str(e), path=_data_root(data_root) / name) from None
        return DATASETS[name](folder)
    path = Path(name).expanduser()
    looks_like_path = any(c in name for c in "/\\~") or name.startswith(".") or path.suffix != ""
    if path.exists() or looks_like_path:
        return _load_path(path)
    raise DataError(
        f"unknown dataset {name!r}", expected=f"one of {', '.join(sorted(DATASETS))}, or a path to {_LAYOUTS}"
    )
