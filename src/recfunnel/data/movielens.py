"""MovieLens: the 100K and 1M release folders, and the MovieLens features as model inputs.

One place for the MovieLens task: the readers (:func:`read_ml100k`, :func:`read_ml1m`), the bucket
edges of age and release year, and the field declarations that the CTR models
(:func:`movielens_fields`) and the two-tower model (:func:`movielens_tower_fields`, the same
declarations without event-time and dense fields) read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset, DuplicatePolicy, build_dataset
from recfunnel.data.errors import DataError
from recfunnel.data.fields.declare import Categorical, FieldSpec, ItemHistory, MultiHot, Numeric
from recfunnel.data.text_table import (
    TextTable,
    check_unique_ids,
    collect,
    first_true,
    listing,
    not_found,
    skip_note,
    split_text,
    text_floats,
    text_ids,
    text_ints,
    text_timestamps,
)

__all__ = [
    "ML100K_GENRES",
    "ML_AGE_EDGES",
    "ML_YEAR_EDGES",
    "movielens_fields",
    "movielens_tower_fields",
    "read_ml100k",
    "read_ml1m",
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


_RATING_NAMES = ("user", "item", "rating", "timestamp")


def _read_ratings(path: Path, sep: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The ratings, and the line of each."""
    split = split_text(path, sep=sep, names=_RATING_NAMES)
    frame = collect(
        {
            "user": text_ids(split, 0, "user", "user"),
            "item": text_ids(split, 1, "item", "item"),
            "rating": text_floats(split, 2, "rating", "rating"),
            "timestamp": text_timestamps(split, 3, "timestamp", None),
        }
    )
    return frame, split.line_numbers


def _require_folder(folder: Path, must_hold: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise not_found(folder, "dataset folder")
    if not (folder / must_hold).is_file():
        raise DataError(f"file not found; the folder holds: {listing(folder)}", path=folder / must_hold)
    return folder


def _ml100k_genres(path: Path) -> tuple[tuple[str, ...], list[str]]:
    if not path.exists():
        return ML100K_GENRES, [f"{path.name} absent: the standard 19 MovieLens 100K genre names were used"]
    split = split_text(path, sep="|", names=("genre", "index"), encoding="auto", skip_blank=True)
    table = collect({"genre": split.field(0), "index": text_ints(split, 1, "index", "genre index")})
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
    return names, skip_note(split)


def _ml100k_items(path: Path, genres: Sequence[str]) -> tuple[pl.DataFrame, list[str]]:
    head = ("id", "title", "release_date", "video_release_date", "imdb_url")
    split = split_text(path, sep="|", names=head + tuple(genres), encoding="auto", skip_blank=True)
    results: dict[str, pl.Series | DataError] = {
        "id": text_ids(split, 0, "id", "item"),
        "title": split.field(1),
        "release_date": split.field(2),
    }
    for j, g in enumerate(genres):
        flag = split.field(len(head) + j)
        row = first_true(~flag.is_in(["0", "1"]))
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
    raw = collect(results)
    check_unique_ids(raw["id"], split, "id", "item")
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
    return items, skip_note(split)


def _users_table(split: TextTable, cols: dict[str, int]) -> pl.DataFrame:
    users = collect(
        {
            "id": text_ids(split, cols["id"], "id", "user"),
            "age": text_ints(split, cols["age"], "age", "age"),
            "gender": split.field(cols["gender"]),
            "occupation": split.field(cols["occupation"]),
            "zip": split.field(cols["zip"]),
        }
    )
    check_unique_ids(users["id"], split, "id", "user")
    return users


def read_ml100k(folder: Path, name: str = "ml-100k", duplicates: DuplicatePolicy = "aggregate") -> Dataset:
    """The MovieLens 100K release folder: u.data (required), u.item, u.user, u.genre.

    item_features: id, title, release_date (str or null), year (int or null: the release date's
    year, else the title's), genres (list[str]). user_features: id, age, gender, occupation, zip.
    Blank lines in the metadata files (the release has some) are skipped and listed in the notes.
    `duplicates`: rows repeating a (user, item) pair, see :meth:`Dataset.deduplicated` (the
    release has none).
    """
    folder = _require_folder(folder, "u.data")
    frame, lines = _read_ratings(folder / "u.data", "\t")
    notes: list[str] = []
    items = users = None
    if (folder / "u.item").exists():
        genres, genre_notes = _ml100k_genres(folder / "u.genre")
        items, item_notes = _ml100k_items(folder / "u.item", genres)
        notes += genre_notes + item_notes
    else:
        notes.append("u.item absent: no item features")
    if (folder / "u.user").exists():
        split = split_text(
            folder / "u.user",
            sep="|",
            names=("id", "age", "gender", "occupation", "zip"),
            encoding="auto",
            skip_blank=True,
        )
        users = _users_table(split, {"id": 0, "age": 1, "gender": 2, "occupation": 3, "zip": 4})
        notes += skip_note(split)
    else:
        notes.append("u.user absent: no user features")
    frame, items = _same_id_dtype(frame, "item", items)
    frame, users = _same_id_dtype(frame, "user", users)
    ds = build_dataset(name, frame, user_features=users, item_features=items, source=folder)
    return ds.with_notes(notes).deduplicated(duplicates, lines=lines)


def read_ml1m(folder: Path, name: str = "ml-1m", duplicates: DuplicatePolicy = "aggregate") -> Dataset:
    """The MovieLens 1M release folder (``::``-separated): ratings.dat (required), movies.dat,
    users.dat. Same feature schema as :func:`read_ml100k` (release_date is null: the release has
    none; year comes from the "(1995)" ending the title; occupation is the release's int code,
    kept as a string)."""
    folder = _require_folder(folder, "ratings.dat")
    frame, lines = _read_ratings(folder / "ratings.dat", "::")
    notes: list[str] = []
    items = users = None
    if (folder / "movies.dat").exists():
        split = split_text(folder / "movies.dat", sep="::", names=("id", "title", "genres"), encoding="auto")
        raw = collect(
            {"id": text_ids(split, 0, "id", "item"), "title": split.field(1), "genres": split.field(2)}
        )
        check_unique_ids(raw["id"], split, "id", "item")
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
        split = split_text(
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
    return ds.with_notes(notes).deduplicated(duplicates, lines=lines)


# --------------------------------------------------------------------------------------------
# MovieLens as model input

# MovieLens-1M's age groups (under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), used for 100K too.
ML_AGE_EDGES = (18.0, 25.0, 35.0, 45.0, 50.0, 56.0)
# Release-year buckets: coarse before the 1990s, by year after (most of the catalogue is 1990s).
ML_YEAR_EDGES = (1940.0, 1960.0, 1970.0, 1980.0, 1990.0, 1993.0, 1994.0, 1995.0, 1996.0, 1997.0, 1998.0)


def movielens_fields(
    zip_prefix: int = 2, history: int = 10, dense: bool = True, min_count: int = 1, events: bool = True
) -> tuple[FieldSpec, ...]:
    """MovieLens-100K/1M as a CTR task: user_id, item_id, age bucket, gender, occupation, zip
    prefix, genres (multi-hot), release-year bucket, hour and weekday of the rating, the user's
    last `history` items before it. `dense`: add age and release year as standardised numerics
    too (DLRM's dense features; other models embed them as value x vector). `events`: the hour
    and weekday of the event (False for a model that scores a user, not an event)."""
    specs: list[FieldSpec] = [
        Categorical("user_id", "user", "id", min_count=min_count),
        Categorical("item_id", "item", "id", min_count=min_count),
        Categorical("age", "user", "age", buckets=ML_AGE_EDGES),
        Categorical("gender", "user", "gender"),
        Categorical("occupation", "user", "occupation"),
        Categorical("zip", "user", "zip", prefix=zip_prefix),
        MultiHot("genres", "item", "genres", pooling="mean"),
        Categorical("year", "item", "year", buckets=ML_YEAR_EDGES),
        *(
            [Categorical("hour", "event", "hour"), Categorical("weekday", "event", "weekday")]
            if events
            else []
        ),
        ItemHistory("history", shares="item_id", max_len=history, pooling="mean"),
    ]
    if dense:
        specs += [Numeric("age_value", "user", "age"), Numeric("year_value", "item", "year")]
    return tuple(specs)


def movielens_tower_fields(zip_prefix: int = 2, history_len: int = 20) -> tuple[FieldSpec, ...]:
    """The two-tower model's MovieLens fields: :func:`movielens_fields` without the event-time and
    dense fields (ids, user features, item features, the user's `history_len` recent items)."""
    return movielens_fields(zip_prefix, history_len, dense=False, events=False)
