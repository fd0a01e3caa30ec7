"""How to read a user's own interaction file: which columns hold what, and how they are written."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from recfunnel.data.dataset import DuplicatePolicy
from recfunnel.data.text_table import COMPRESSED_SUFFIXES  # read directly: r.csv.gz is a csv file "r"

#: A column named by its header name, or by its 0-based position (the only choice without a header).
ColumnRef = str | int

#: File suffixes (lower case) that `format="auto"` reads as Parquet and as tab-separated text.
PARQUET_SUFFIXES = (".parquet", ".pq")
TSV_SUFFIXES = (".tsv", ".tab")


class ColumnMapping(BaseModel):
    """Where the user, item and optional rating / timestamp / weight live in one interaction file.

    Text files (CSV/TSV) with a one-character separator are read as real CSV: a field in double
    quotes may hold the separator ("Smith, John"), a line break, or a doubled quote. With a longer
    separator such as "::" a field wholly wrapped in double quotes is unquoted, but a separator
    inside it is read as a separator. Text files may be compressed (.gz, .zst, .bz2, .xz).
    Parquet files are read by column name (or position in the file's schema).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    path: Path
    """The interaction file (CSV, TSV or other delimited text, optionally compressed, or Parquet), or a
    Parquet dataset: a folder of part files or a glob such as "dir/*.parquet"."""

    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    """File format. "auto" decides by suffix: .parquet/.pq -> parquet, .tsv/.tab -> tsv, else csv; a
    folder is a Parquet dataset of part files. A folder or a glob ("dir/*.parquet") of Parquet files
    is read out of core (:mod:`recfunnel.data.parquet`)."""

    sep: str | None = None
    """Field separator for text files; default "," for csv and a tab for tsv. Multi-character
    separators such as "::" are allowed. Not used for Parquet."""

    header: bool = True
    """Whether the first line of a text file names the columns. Without a header, columns are
    given by 0-based position."""

    user: ColumnRef
    """Column holding the user (or session) id: a header name, or a 0-based position."""

    item: ColumnRef
    """Column holding the item id: a header name, or a 0-based position."""

    rating: ColumnRef | None = None
    """Optional column with an explicit numeric rating (read as a float)."""

    timestamp: ColumnRef | None = None
    """Optional column with the event time: integer unix seconds, or dates parsed with
    `timestamp_format`."""

    weight: ColumnRef | None = None
    """Optional column with an implicit-feedback strength such as a play count (read as a float;
    every weight must be > 0: a row of weight 0 would still count as an interaction for models
    that ignore weights)."""

    timestamp_format: str | None = None
    """None: the timestamp column holds integer unix seconds. Otherwise a strptime format (for
    example "%Y-%m-%d %H:%M:%S") for timestamps written as dates; times without a zone are UTC."""

    encoding: Literal["utf8", "latin1"] = "utf8"
    """Text encoding of a text file."""

    name: str | None = None
    """Dataset name; defaults to the file name without its suffix."""

    duplicates: DuplicatePolicy = "aggregate"
    """Rows repeating an earlier (user, item) pair. "aggregate": one row per pair, weights summed
    (a weight column of counts is added where the file has none), the latest timestamp and its
    rating kept, and a note says how many rows were merged. "refuse": a DataError naming the
    first repeating line. "keep": every row stays (sequence and session logs, where a repeat is a
    new event)."""

    @field_validator("user", "item", "rating", "timestamp", "weight", mode="before")
    @classmethod
    def _column_ref(cls, v: object) -> object:
        if isinstance(v, bool):
            raise ValueError("a column is a header name (str) or a 0-based position (int), not a bool")
        if isinstance(v, int) and v < 0:
            raise ValueError(f"a column position is 0-based and cannot be negative; got {v}")
        if isinstance(v, str) and v == "":
            raise ValueError("a column name cannot be empty")
        return v

    @field_validator("sep")
    @classmethod
    def _sep(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v == "":
            raise ValueError("the separator cannot be empty")
        if "\n" in v or "\r" in v:
            raise ValueError("the separator cannot contain a line break")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ColumnMapping:
        fmt = self.resolved_format
        if fmt == "parquet" and self.sep is not None:
            raise ValueError(f"sep={self.sep!r} was given but {self.path} is read as Parquet (no separator)")
        if fmt != "parquet" and not self.header:
            named = [role for role, ref in self.columns.items() if isinstance(ref, str)]
            if named:
                raise ValueError(
                    f"header=False, so columns must be 0-based positions; {', '.join(named)} given by name"
                )
        if self.timestamp_format is not None and self.timestamp is None:
            raise ValueError("timestamp_format was given but no timestamp column is mapped")
        if self.user == self.item:
            raise ValueError(f"user and item are mapped to the same column {self.user!r}")
        return self

    @property
    def resolved_format(self) -> Literal["csv", "tsv", "parquet"]:
        """The format actually used: `format`, or the one the suffix implies when it is "auto"."""
        if self.format != "auto":
            return self.format
        if self.path.is_dir():  # a folder of part files (recfunnel.data.parquet)
            return "parquet"
        suffix = self._plain_path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            return "parquet"
        if suffix in TSV_SUFFIXES:
            return "tsv"
        return "csv"

    @property
    def resolved_sep(self) -> str:
        """The separator actually used for a text file."""
        if self.sep is not None:
            return self.sep
        return "\t" if self.resolved_format == "tsv" else ","

    @property
    def _plain_path(self) -> Path:
        """The path without a compression suffix (r.csv.gz -> r.csv)."""
        if self.path.suffix.lower() in COMPRESSED_SUFFIXES:
            return self.path.with_suffix("")
        return self.path

    @property
    def dataset_name(self) -> str:
        return self.name if self.name is not None else self._plain_path.stem

    @property
    def columns(self) -> dict[str, ColumnRef]:
        """Mapped roles in reading order: user, item, then rating / timestamp / weight if mapped."""
        roles = {
            "user": self.user,
            "item": self.item,
            "rating": self.rating,
            "timestamp": self.timestamp,
            "weight": self.weight,
        }
        return {role: ref for role, ref in roles.items() if ref is not None}
