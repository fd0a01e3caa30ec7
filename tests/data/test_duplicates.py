"""Rows repeating a (user, item) pair: aggregated by default (weights summed, latest event kept, a
note), refused with the file and line, or kept for sequence and session logs; no split then puts
one pair in two parts. Every test here failed before issue 11 (repeats were kept without a word)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recfunnel.data.dataset import build_dataset
from recfunnel.data.errors import DataError
from recfunnel.data.readers import load_dataset, read_sequences, read_table
from recfunnel.data.schema import ColumnMapping
from recfunnel.data.splits import leave_one_out, random_holdout, ratio, temporal


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pairs(ds, rows=None) -> list[tuple[str, str]]:
    ints = ds.interactions if rows is None else ds.interactions.take(rows)
    return list(zip(ds.users.decode(ints.user), ds.items.decode(ints.item), strict=True))


PLAYS = "user,item,ts,rating,plays\na,x,10,3,2\nb,x,11,4,1\na,x,30,5,4\na,y,12,2,1\na,x,20,1,3\n"


def test_aggregate_is_the_default_one_row_per_pair_weights_summed_latest_event_kept(tmp_path):
    p = write(tmp_path / "plays.csv", PLAYS)
    ds = read_table(
        ColumnMapping(path=p, user="user", item="item", timestamp="ts", rating="rating", weight="plays")
    )
    assert pairs(ds) == [("b", "x"), ("a", "x"), ("a", "y")]  # each pair where its latest event was
    ints = ds.interactions
    assert ints.timestamp.tolist() == [11, 30, 12]
    assert ints.rating.tolist() == [4.0, 5.0, 2.0]  # the latest event's rating
    assert ints.weight.tolist() == [1.0, 9.0, 1.0]  # 2 + 4 + 3
    note = next(n for n in ds.notes if n.startswith("duplicates aggregated"))
    assert "2 rows repeating an earlier (user, item) pair were merged" in note
    assert "5 rows -> 3" in note


def test_aggregating_rows_without_a_weight_column_counts_them(tmp_path):
    p = write(tmp_path / "r.csv", "user,item\n1,2\n1,2\n1,3\n1,2\n")
    ds = read_table(ColumnMapping(path=p, user="user", item="item"))
    assert pairs(ds) == [("1", "3"), ("1", "2")]  # no time: the last row of a pair is its latest
    assert ds.interactions.weight.tolist() == [1.0, 3.0]
    assert any("a weight column of row counts added" in n for n in ds.notes)


def test_refuse_names_the_file_and_the_first_repeating_line(tmp_path):
    p = write(tmp_path / "plays.csv", PLAYS)
    m = ColumnMapping(path=p, user="user", item="item", weight="plays", duplicates="refuse")
    with pytest.raises(DataError) as e:
        read_table(m)
    assert e.value.path == p and e.value.line == 4
    assert str(e.value).startswith(f"{p}:4: user 'a' and item 'x' appear again (first on line 2)")


def test_refuse_on_a_parquet_file_names_the_data_row(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"u": [1, 2, 1], "i": [5, 5, 5]}).write_parquet(p)
    with pytest.raises(DataError, match=re.escape("appear again (first on data row 1)")):
        read_table(ColumnMapping(path=p, user="u", item="i", duplicates="refuse"))


def test_keep_leaves_every_row_and_says_so(tmp_path):
    p = write(tmp_path / "plays.csv", PLAYS)
    ds = read_table(ColumnMapping(path=p, user="user", item="item", duplicates="keep"))
    assert len(ds.interactions) == 5
    assert any(n.startswith("duplicates kept: 2 rows repeat an earlier (user, item) pair") for n in ds.notes)


def test_sequence_files_keep_repeats_by_default_and_can_aggregate(tmp_path):
    p = write(tmp_path / "s.txt", "1 5\n1 3\n1 5\n2 5\n")
    ds = read_sequences(p)
    assert len(ds.interactions) == 4
    assert any("in a sequence or session log a repeat is a new event" in n for n in ds.notes)
    agg = load_dataset(str(p), duplicates="aggregate")
    assert pairs(agg) == [("1", "3"), ("1", "5"), ("2", "5")]
    assert agg.interactions.timestamp.tolist() == [1, 2, 3]


def test_a_dataset_without_repeats_is_returned_unchanged():
    ds = build_dataset("t", pl.DataFrame({"user": [1, 2], "item": [1, 1], "timestamp": [5, 6]}))
    assert ds.deduplicated("aggregate") is ds
    assert ds.deduplicated("refuse") is ds
    assert ds.repeated_rows()[0].tolist() == []


def test_unknown_policy_is_rejected():
    ds = build_dataset("t", pl.DataFrame({"user": [1], "item": [1]}))
    with pytest.raises(ValueError, match="aggregate, refuse, keep"):
        ds.deduplicated("merge")  # type: ignore[arg-type]


@pytest.fixture
def repeated(tmp_path) -> Path:
    """60 users x 12 items, then 100 of the rows written again later (as in the issue's report)."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 12)
    items = np.concatenate([rng.choice(40, 12, replace=False) for _ in range(60)])
    again = rng.choice(len(users), 100, replace=False)
    u = np.concatenate([users, users[again]])
    i = np.concatenate([items, items[again]])
    ts = np.arange(len(u)) * 10
    lines = "".join(f"{a},{b},{t}\n" for a, b, t in zip(u, i, ts, strict=True))
    return write(tmp_path / "repeated.csv", "user,item,ts\n" + lines)


@pytest.mark.parametrize(
    "make",
    [leave_one_out, random_holdout, temporal, ratio, lambda ds: ratio(ds, (0.5, 0.25, 0.25), seed=3)],
    ids=["leave_one_out", "random_holdout", "temporal", "ratio", "ratio-halves"],
)
def test_no_split_puts_one_pair_in_two_parts_once_repeats_are_aggregated(repeated, make):
    ds = read_table(ColumnMapping(path=repeated, user="user", item="item", timestamp="ts"))
    assert len(ds.interactions) == 720
    split = make(ds)
    parts = {name: set(pairs(ds, split.rows(name))) for name in ("train", "valid", "test")}
    assert not parts["train"] & parts["test"]
    assert not parts["train"] & parts["valid"]
    assert not parts["valid"] & parts["test"]
