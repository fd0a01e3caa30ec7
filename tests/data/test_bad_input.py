"""Malformed input of every kind ends in a DataError naming the file (and the line where there is
one), never another exception: a generated corpus of broken tables, and a property test over any
bytes written to a .csv."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recfunnel.data.errors import DataError
from recfunnel.data.readers import read_ml100k, read_sequences, read_table
from recfunnel.data.schema import ColumnMapping

HEADER = b"user,item,rating,ts,plays\n"
GOOD = b"1,10,4,100,2\n"


def mapping(path: Path, **kw) -> ColumnMapping:
    roles = {"user": "user", "item": "item", "rating": "rating", "timestamp": "ts", "weight": "plays"}
    return ColumnMapping(path=path, **{**roles, **kw})


#: (name, file bytes, the line the error must name or None where the fault has no line)
TEXT_CASES = [
    ("empty", b"", None),
    ("header only", HEADER, None),
    ("only blank lines", HEADER + b"\n\n", 2),
    ("blank line inside", HEADER + GOOD + b"\n" + GOOD, 3),
    ("whitespace line", HEADER + GOOD + b"   \t \n", 3),
    ("too many fields", HEADER + GOOD + b"1,10,4,100,2,9\n", 3),
    ("too few fields", HEADER + GOOD + b"1,10\n", 3),
    ("header shorter than rows", b"user,item\n1,10,4\n", 2),
    ("non-numeric rating", HEADER + GOOD + b"1,11,good,100,2\n", 3),
    ("NaN rating", HEADER + b"1,11,NaN,100,2\n", 2),
    ("inf rating", HEADER + b"1,11,inf,100,2\n", 2),
    ("-inf rating", HEADER + b"1,11,-inf,100,2\n", 2),
    ("overflowing rating", HEADER + b"1,11,1e999,100,2\n", 2),
    ("overflowing timestamp", HEADER + b"1,11,4,99999999999999999999,2\n", 2),
    ("float timestamp", HEADER + b"1,11,4,100.5,2\n", 2),
    ("empty timestamp", HEADER + b"1,11,4,,2\n", 2),
    ("negative weight", HEADER + GOOD + b"1,11,4,100,-3\n", 3),
    ("zero weight", HEADER + b"1,11,4,100,0\n", 2),
    ("NaN weight", HEADER + b"1,11,4,100,nan\n", 2),
    ("empty user id", HEADER + GOOD + b",11,4,100,2\n", 3),
    ("blank item id", HEADER + b"1,  ,4,100,2\n", 2),
    ("BOM then a bad value", b"\xef\xbb\xbf" + HEADER + GOOD + b"1,11,x,100,2\n", 3),
    ("CRLF then a bad value", (HEADER + GOOD + b"1,11,x,100,2\n").replace(b"\n", b"\r\n"), 3),
    ("Latin-1 read as UTF-8", HEADER + b"1,caf\xe9,4,100,2\n", 2),
    ("UTF-16", (HEADER + GOOD).decode().encode("utf-16"), 1),
    ("binary garbage", bytes(range(256)) * 4, None),
    ("NUL bytes", HEADER + b"1\x00,10,4,100,2\n1,10,x\x00,100,2\n", 3),
    ("unterminated quote", HEADER + b'1,"10,4,100,2\n2,10,4,100,2\n', 2),
    ("text after a closing quote", HEADER + b'1,"10"x,4,100,2\n', 2),
    ("quoted separator, wrong count", HEADER + b'"1,2",10,4,100\n', 2),
    ("duplicate mapped header", b"user,item,rating,ts,plays,user\n1,10,4,100,2,3\n", None),
    ("mapped column missing", b"user,item,rating\n1,10,4\n", None),
    ("wrong separator", b"user;item;rating;ts;plays\n1;10;4;100;2\n", None),
    ("long garbage line", HEADER + b"x" * 100_000 + b"\n", 2),
    ("truncated gzip", gzip.compress(HEADER + GOOD * 500)[:30], None),
    ("gzip of garbage", gzip.compress(bytes(range(256)) * 8), None),
]


@pytest.mark.parametrize("name, content, line", TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_a_malformed_text_table_is_a_data_error_naming_file_and_line(tmp_path, name, content, line):
    p = tmp_path / ("r.csv.gz" if "gzip" in name else "r.csv")
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_table(mapping(p))
    assert e.value.path == p, str(e.value)
    assert str(e.value).startswith(str(p))
    if line is not None:
        assert e.value.line == line, str(e.value)


def test_a_bad_timestamp_format_is_a_data_error(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"user,item,when\n1,2,2020-01-01\n")
    for fmt in ("%d/%m/%Y", "%Q%Q"):
        with pytest.raises(DataError) as e:
            read_table(
                ColumnMapping(path=p, user="user", item="item", timestamp="when", timestamp_format=fmt)
            )
        assert e.value.path == p


def test_a_utf8_bom_and_crlf_line_ends_read_cleanly(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes((b"\xef\xbb\xbf" + HEADER + GOOD + b"2,11,5,101,1\n").replace(b"\n", b"\r\n"))
    ds = read_table(mapping(p))
    assert ds.interactions.rating.tolist() == [4.0, 5.0]
    assert ds.interactions.timestamp.tolist() == [100, 101]


def _parquet(path: Path, **columns) -> Path:
    pl.DataFrame(columns).write_parquet(path)
    return path


PARQUET_CASES = [
    ("string rating", {"user": [1], "item": [2], "rating": ["5"]}),
    ("list ids", {"user": [[1]], "item": [2], "rating": [5.0]}),
    ("bool ids", {"user": [True], "item": [2], "rating": [5.0]}),
    ("fractional float ids", {"user": [1.5], "item": [2], "rating": [5.0]}),
    ("infinite float ids", {"user": [float("inf")], "item": [2], "rating": [5.0]}),
    ("NaN float ids", {"user": [float("nan")], "item": [2], "rating": [5.0]}),
    ("uint64 beyond int64", {"user": pl.Series([2**64 - 1], dtype=pl.UInt64), "item": [2], "rating": [5.0]}),
    ("struct rating", {"user": [1], "item": [2], "rating": [{"a": 1}]}),
    ("null user", {"user": [1, None], "item": [2, 3], "rating": [5.0, 4.0]}),
    ("null rating", {"user": [1, 2], "item": [2, 3], "rating": [5.0, None]}),
    ("NaN rating", {"user": [1, 2], "item": [2, 3], "rating": [5.0, float("nan")]}),
    ("empty string id", {"user": ["a", " "], "item": [2, 3], "rating": [5.0, 4.0]}),
    ("no rows", {"user": pl.Series([], dtype=pl.Int64), "item": pl.Series([], dtype=pl.Int64), "rating": []}),
    ("string timestamps without a format", {"user": [1], "item": [2], "rating": [5.0], "ts": ["2020"]}),
    ("float timestamps", {"user": [1], "item": [2], "rating": [5.0], "ts": [1.5]}),
    ("negative weight", {"user": [1], "item": [2], "rating": [5.0], "plays": [-1.0]}),
    ("missing column", {"user": [1], "rating": [5.0]}),
]


@pytest.mark.parametrize("name, columns", PARQUET_CASES, ids=[c[0] for c in PARQUET_CASES])
def test_a_parquet_file_of_wrong_types_or_nulls_is_a_data_error_naming_the_file(tmp_path, name, columns):
    p = _parquet(tmp_path / "r.parquet", **columns)
    roles = {"user": "user", "item": "item", "rating": "rating"}
    if "ts" in columns:
        roles["timestamp"] = "ts"
    if "plays" in columns:
        roles["weight"] = "plays"
    with pytest.raises(DataError) as e:
        read_table(ColumnMapping(path=p, **roles))
    assert e.value.path == p


@pytest.mark.parametrize("cut", [0, 4, 0.5, -8])
def test_a_damaged_parquet_file_is_a_data_error(tmp_path, cut):
    good = _parquet(tmp_path / "good.parquet", user=list(range(50)), item=list(range(50)))
    data = good.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    p = tmp_path / "r.parquet"
    p.write_bytes(data[:n] if n >= 0 else data[:n])
    with pytest.raises(DataError) as e:
        read_table(ColumnMapping(path=p, user="user", item="item"))
    assert e.value.path == p


@pytest.mark.parametrize(
    "content, line",
    [(b"1 5\n1\n", 2), (b"1 5\n\n2 3\n", 2), (b" 5\n", 1), (b"", None), (b"\xff\xfe1 2\n", 1)],
)
def test_a_malformed_sequence_file_is_a_data_error(tmp_path, content, line):
    p = tmp_path / "s.txt"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_sequences(p)
    assert e.value.path == p and e.value.line == line


def test_a_malformed_movielens_ratings_file_is_a_data_error(tmp_path):
    (tmp_path / "u.data").write_bytes(b"1\t2\t3\t100\n1\t2\tx\t101\n")
    with pytest.raises(DataError) as e:
        read_ml100k(tmp_path)
    assert e.value.path == tmp_path / "u.data" and e.value.line == 2


# ------------------------------------------------------------------------------------------
# property: any bytes -> a dataset or a DataError
# ------------------------------------------------------------------------------------------

FIELD = st.one_of(
    st.sampled_from(["1", "42", "007", "-3", "0", "1e3", "nan", "inf", "", " ", '"', '""', '"a,b"', "x"]),
    st.text(alphabet='0123456789abc.,;"\t\r\n \x00é-', max_size=6),
)
ROWS = st.lists(st.lists(FIELD, min_size=0, max_size=6), min_size=0, max_size=8)
ENDINGS = st.sampled_from(["\n", "\r\n", ""])


@st.composite
def csv_bytes(draw) -> bytes:
    """Either raw bytes, or lines of fields under a (possibly wrong) header, in UTF-8 or Latin-1."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    header = draw(
        st.sampled_from(["user,item,rating,ts,plays", "user,item", "user,item,rating,ts,plays,x", ""])
    )
    end = draw(ENDINGS)
    lines = [header] + [",".join(r) for r in draw(ROWS)]
    text = "\n".join(lines) + end
    return text.encode(draw(st.sampled_from(["utf-8", "latin-1"])), errors="replace")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=csv_bytes(), header=st.booleans())
def test_any_bytes_in_a_csv_parse_or_raise_a_data_error(tmp_path, content, header):
    p = tmp_path / "r.csv"
    p.write_bytes(content)
    m = mapping(p) if header else ColumnMapping(path=p, header=False, user=0, item=1, rating=2, weight=4)
    try:
        ds = read_table(m)
    except DataError as e:
        assert e.path == p  # the error names the file
        return
    assert len(ds.interactions) > 0
    assert np.isfinite(ds.interactions.rating).all()
    assert (ds.interactions.weight > 0).all()
