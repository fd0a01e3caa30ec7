"""The synthetic Parquet generator and the out-of-core Parquet reader (recfunnel.data.parquet)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recfunnel.data.errors import DataError
from recfunnel.data.parquet import read_parquet_dataset
from recfunnel.data.readers import load_dataset, read_table
from recfunnel.data.schema import ColumnMapping
from recfunnel.data.splits import make_split
from recfunnel.data.synthetic import generate_synthetic
from recfunnel.data.tables import read_table as read_one_file

COLS = {"user": "user", "item": "item", "timestamp": "timestamp", "weight": "weight"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    stats = generate_synthetic(out, 6000, 400, 300, files=3, seed=7, batch_rows=1000)
    return out, stats


def _same(a, b) -> None:
    assert a.users == b.users and a.items == b.items
    for c in ("user", "item", "timestamp", "rating", "weight", "order"):
        x, y = getattr(a.interactions, c), getattr(b.interactions, c)
        assert (x is None) == (y is None), c
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=c)
    assert a.notes == b.notes


def test_generator_is_seeded_heavy_tailed_and_documented(synth, tmp_path):
    out, stats = synth
    files = sorted(out.glob("part-*.parquet"))
    assert len(files) == 3 and (out / "SOURCE.md").is_file()
    assert "generate-synthetic" in (out / "SOURCE.md").read_text()
    df = pl.read_parquet(files)
    assert df.height == 6000 and df.columns == ["user", "item", "timestamp", "weight"]
    assert df["timestamp"].is_sorted() and (df["weight"] >= 1).all()
    assert df["user"].min() >= 1 and df["user"].max() <= 400 and df["item"].max() <= 300
    items = np.sort(df.group_by("item").len()["len"].to_numpy())[::-1]
    assert items[:3].sum() / 6000 > 0.08  # the top 1% of 300 items: far beyond their 1% share
    assert stats["top_1pct_items_share"] > 0.08
    again = tmp_path / "again"
    generate_synthetic(again, 6000, 400, 300, files=3, seed=7, batch_rows=1000)
    assert pl.read_parquet(sorted(again.glob("*.parquet"))).equals(df)
    other = tmp_path / "other"
    generate_synthetic(other, 6000, 400, 300, files=3, seed=8, batch_rows=1000)
    assert not pl.read_parquet(sorted(other.glob("*.parquet"))).equals(df)
    with pytest.raises(FileExistsError):
        generate_synthetic(out, 10, 5, 5, files=1)


@pytest.mark.parametrize("duplicates", ["aggregate", "keep"])
def test_folder_and_glob_read_as_the_eager_reader_reads_one_file(synth, tmp_path, duplicates):
    out, _ = synth
    one = tmp_path / "all.parquet"
    pl.read_parquet(sorted(out.glob("*.parquet"))).write_parquet(one)
    eager = read_one_file(ColumnMapping(path=one, duplicates=duplicates, **COLS))
    folder = read_parquet_dataset(
        ColumnMapping(path=out, duplicates=duplicates, **COLS), batch_rows=700
    )  # batches cross no file boundary but split every file
    glob = read_table(ColumnMapping(path=out / "part-*.parquet", duplicates=duplicates, **COLS))
    _same(eager, folder)
    _same(eager, glob)
    assert folder.name == out.name and glob.name == out.name
    by_name = load_dataset(str(out), duplicates=duplicates)  # data.dataset = "path/to/folder"
    _same(eager, by_name)


def test_string_ids_and_positions_match_the_eager_reader(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    rows = pl.DataFrame(
        {
            "u": ["b", " a", "c", "10", "a", "2"],
            "i": [3, 1, 2, 3, 3, 1],
            "r": [1.0, 2.0, 3.0, 4.0, 5.0, 1.5],
        }
    )
    rows[:3].write_parquet(folder / "p0.parquet")
    rows[3:].write_parquet(folder / "p1.parquet")  # this part's ids alone would look like integers
    rows.write_parquet(tmp_path / "one.parquet")
    eager = read_one_file(ColumnMapping(path=tmp_path / "one.parquet", user=0, item="i", rating="r"))
    ooc = read_parquet_dataset(ColumnMapping(path=folder, user=0, item="i", rating="r"), batch_rows=2)
    _same(eager, ooc)
    assert ooc.users.ids == ("10", "2", "a", "b", "c")


def test_wrong_column_names_and_bad_values_are_named(synth, tmp_path):
    out, _ = synth
    with pytest.raises(DataError, match=r"user column 'uid' not found.*'user', 'item', 'timestamp'"):
        read_table(ColumnMapping(path=out, user="uid", item="item"))
    bad = tmp_path / "bad"
    bad.mkdir()
    pl.DataFrame({"user": [1, 2, 3, 4], "item": [1, 2, 3, 4], "weight": [1.0, 1.0, 1.0, 0.0]}).write_parquet(
        bad / "p0.parquet", row_group_size=2
    )
    with pytest.raises(DataError, match=r"p0.parquet \(column 'weight'\): row 4: weight is not positive"):
        read_parquet_dataset(ColumnMapping(path=bad, user="user", item="item", weight="weight"), batch_rows=2)
    with pytest.raises(DataError, match="matches no file"):
        read_table(ColumnMapping(path=tmp_path / "nothing" / "*.parquet", user="user", item="item"))
    pl.DataFrame({"uid": [1], "item": [1]}).write_parquet(tmp_path / "nouser.parquet")
    (tmp_path / "nouser").mkdir()
    (tmp_path / "nouser.parquet").rename(tmp_path / "nouser" / "a.parquet")
    with pytest.raises(DataError, match="no user column found"):
        load_dataset(str(tmp_path / "nouser"))


def test_splits_of_a_parquet_dataset(synth):
    out, _ = synth
    ds = load_dataset(str(out), duplicates="keep")
    for method in ("leave_one_out", "random_holdout"):
        sp = make_split(ds, method)
        assert len(sp.train) + len(sp.valid) + len(sp.test) == len(ds.interactions)
        assert len(sp.test) == len(np.unique(ds.interactions.user[sp.test]))


def test_cli_generates_a_dataset_and_still_lists_the_named_ones(tmp_path):
    from typer.testing import CliRunner

    from recfunnel.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["datasets", "--data-root", str(tmp_path)])
    assert listed.exit_code == 0 and "ml-100k" in listed.output
    args = ["datasets", "generate-synthetic", "--rows", "500", "--users", "30", "--items", "20"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "d"), "--files", "2", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "d").glob("part-*.parquet"))) == 2
    assert len(load_dataset(str(tmp_path / "d"), duplicates="keep").interactions) == 500
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "d")])
    assert again.exit_code == 2 and "already holds part files" in again.output
