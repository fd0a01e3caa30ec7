"""Readers: every supported format from small files in tmp_path, every bad-input error, real data."""

import csv
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recfunnel.data.errors import DataError
from recfunnel.data.readers import (
    DATASETS,
    SEQUENCE_NOTE,
    load_dataset,
    load_dataset_from_mapping,
    read_ml1m,
    read_ml100k,
    read_sequences,
    read_table,
)
from recfunnel.data.schema import ColumnMapping
from recfunnel.settings import data_root


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def rows(ds, col):
    """Interactions as (raw user, raw item, col) tuples in file order."""
    ints = ds.interactions
    users, items = ds.users.decode(ints.user), ds.items.decode(ints.item)
    values = getattr(ints, col).tolist() if col else [None] * len(users)
    return list(zip(users, items, values, strict=True))


def csv_mapping(path: Path, **kw) -> ColumnMapping:
    return ColumnMapping(path=path, **{"user": "user", "item": "item", "rating": "rating", **kw})


# ------------------------------------------------------------------------------------------
# MovieLens 100K / 1M folders
# ------------------------------------------------------------------------------------------

GENRES = "unknown|0\nAction|1\nComedy|2\n\n"  # the release's u.genre ends in a blank line


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    d = tmp_path / "ml"
    d.mkdir()
    write(d / "u.data", "10\t2\t4\t881250949\n2\t1\t3\t881250950\n10\t1\t5\t881250951\n")
    write(d / "u.genre", GENRES)
    write(
        d / "u.item",
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
        "2|Café Noir (1991)|||http://y|0|1|1\n"
        "3|unknown||||1|0|0\n",
        encoding="latin-1",
    )
    write(d / "u.user", "\n2|53|F|other|94043\n10|24|M|technician|T8H1N\n")  # leading blank, as shipped
    return d


def test_ml100k_reads_ratings_with_numeric_vocabulary_order(ml100k):
    ds = read_ml100k(ml100k)
    assert ds.name == "ml-100k"
    assert ds.users.ids == ("2", "10")  # numeric order, not "10" < "2"
    assert rows(ds, "rating") == [("10", "2", 4.0), ("2", "1", 3.0), ("10", "1", 5.0)]
    assert ds.interactions.timestamp.tolist() == [881250949, 881250950, 881250951]


def test_ml100k_item_table_has_title_date_year_and_genre_lists(ml100k):
    ds = read_ml100k(ml100k)
    assert ds.items.ids == ("1", "2", "3")  # item 3 has no ratings but keeps an index
    feats = ds.item_features
    assert feats.columns == ["id", "title", "release_date", "year", "genres"]
    assert feats.row(0) == ("1", "Toy Story (1995)", "01-Jan-1995", 1995, ["Comedy"])
    # Latin-1 title decoded; no release date -> year from the title
    assert feats.row(1) == ("2", "Café Noir (1991)", None, 1991, ["Action", "Comedy"])
    assert feats.row(2) == ("3", "unknown", None, None, ["unknown"])


def test_ml100k_user_table_has_age_gender_occupation_zip(ml100k):
    ds = read_ml100k(ml100k)
    assert ds.user_features.columns == ["id", "age", "gender", "occupation", "zip"]
    assert ds.user_features.row(ds.users.index("10")) == ("10", 24, "M", "technician", "T8H1N")
    assert ds.user_features["age"].dtype == pl.Int64


def test_ml100k_blank_lines_in_metadata_files_are_skipped_and_noted(ml100k):
    notes = read_ml100k(ml100k).notes
    assert "u.genre: skipped 1 blank line(s): 4" in notes
    assert "u.user: skipped 1 blank line(s): 1" in notes


def test_ml100k_blank_line_in_ratings_is_an_error(ml100k):
    write(ml100k / "u.data", "10\t2\t4\t881250949\n\n2\t1\t3\t881250950\n")
    with pytest.raises(DataError, match=re.escape(f"{ml100k / 'u.data'}:2: line 2 is blank")):
        read_ml100k(ml100k)


def test_ml100k_genre_flag_other_than_0_or_1_names_line_and_genre(ml100k):
    write(ml100k / "u.item", "1|A (1995)|||x|0|0|1\n2|B (1995)|||x|0|2|0\n")
    with pytest.raises(DataError) as e:
        read_ml100k(ml100k)
    msg = str(e.value)
    assert f"{ml100k / 'u.item'}:2 (column 'Action')" in msg
    assert "got '2'; expected 0 or 1" in msg


def test_ml100k_item_listed_twice_is_an_error_naming_both_lines(ml100k):
    write(ml100k / "u.item", "1|A (1995)|||x|0|0|1\n1|B (1995)|||x|0|1|0\n")
    with pytest.raises(
        DataError, match=r"u\.item:2 \(column 'id'\): item id 1 is listed twice \(first on line 1\)"
    ):
        read_ml100k(ml100k)


def test_ml100k_folder_without_u_data_lists_the_files_present(ml100k):
    (ml100k / "u.data").unlink()
    with pytest.raises(DataError) as e:
        read_ml100k(ml100k)
    msg = str(e.value)
    assert str(ml100k / "u.data") in msg
    assert "file not found" in msg
    assert "u.genre, u.item, u.user" in msg


def test_ml100k_metadata_files_are_optional_and_their_absence_noted(ml100k):
    for f in ("u.item", "u.user", "u.genre"):
        (ml100k / f).unlink()
    ds = read_ml100k(ml100k)
    assert ds.item_features is None and ds.user_features is None
    assert "u.item absent: no item features" in ds.notes


@pytest.fixture
def ml1m(tmp_path: Path) -> Path:
    d = tmp_path / "ml-1m"
    d.mkdir()
    write(d / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        d / "movies.dat",
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "3000::Amélie (2001)::Comedy|Romance\n",
        encoding="latin-1",
    )
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return d


def test_ml1m_reads_double_colon_ratings(ml1m):
    ds = read_ml1m(ml1m)
    assert ds.name == "ml-1m"
    assert rows(ds, "rating") == [("1", "1193", 5.0), ("1", "661", 3.0), ("2", "1193", 4.0)]
    assert ds.interactions.timestamp.tolist() == [978300760, 978302109, 978298413]


def test_ml1m_movies_have_title_year_and_genre_lists_in_the_ml100k_schema(ml1m):
    feats = read_ml1m(ml1m).item_features
    assert feats.columns == ["id", "title", "release_date", "year", "genres"]
    assert feats.row(0) == (
        "661",
        "James and the Giant Peach (1996)",
        None,
        1996,
        ["Animation", "Children's", "Musical"],
    )
    assert feats.row(2) == ("3000", "Amélie (2001)", None, 2001, ["Comedy", "Romance"])  # Latin-1, unrated


def test_ml1m_users_keep_occupation_code_as_string(ml1m):
    users = read_ml1m(ml1m).user_features
    assert users.columns == ["id", "age", "gender", "occupation", "zip"]
    assert users.row(1) == ("2", 56, "M", "16", "70072")


def test_ml1m_line_with_wrong_field_count_names_line_and_fields(ml1m):
    write(ml1m / "ratings.dat", "1::1193::5::978300760\n1::661::3\n")
    with pytest.raises(DataError) as e:
        read_ml1m(ml1m)
    assert str(e.value).startswith(
        f"{ml1m / 'ratings.dat'}:2: line 2 has 3 fields, expected 4 (user, item, rating, timestamp)"
    )
    assert "expected fields separated by '::'" in str(e.value)


# ------------------------------------------------------------------------------------------
# Sequence files
# ------------------------------------------------------------------------------------------


def test_sequence_file_timestamps_are_row_positions_and_noted(tmp_path):
    p = write(tmp_path / "Games.txt", "1 5\n1 3\n2 5\n1 9\n")
    ds = read_sequences(p)
    assert ds.name == "Games"
    assert rows(ds, "timestamp") == [("1", "5", 0), ("1", "3", 1), ("2", "5", 2), ("1", "9", 3)]
    assert ds.interactions.timestamp.dtype == np.int64
    assert SEQUENCE_NOTE in ds.notes
    assert ds.interactions.rating is None


def test_sequence_file_with_two_spaces_is_a_field_count_error(tmp_path):
    p = write(tmp_path / "s.txt", "1 5\n1  3\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:2: line 2 has 3 fields, expected 2 (user, item)")):
        read_sequences(p)


def test_sequence_file_without_final_newline_keeps_its_last_row(tmp_path):
    assert len(read_sequences(write(tmp_path / "s.txt", "1 5\n2 6")).interactions) == 2


# ------------------------------------------------------------------------------------------
# User tables: CSV / TSV / Parquet
# ------------------------------------------------------------------------------------------


def test_csv_with_header_reads_columns_by_name_in_any_order(tmp_path):
    p = write(tmp_path / "r.csv", "ts,rating,item,user,extra\n100,4.5,b,u1,x\n90,3,a,u2,y\n")
    ds = read_table(csv_mapping(p, timestamp="ts"))
    assert ds.name == "r"
    assert rows(ds, "rating") == [("u1", "b", 4.5), ("u2", "a", 3.0)]
    assert ds.interactions.timestamp.tolist() == [100, 90]
    assert ds.interactions.weight is None


def test_tsv_without_header_reads_columns_by_position(tmp_path):
    p = write(tmp_path / "r.tsv", "7\t100\t2.5\n3\t200\t1\n")
    ds = read_table(ColumnMapping(path=p, header=False, user=0, item=1, rating=2))
    assert rows(ds, "rating") == [("7", "100", 2.5), ("3", "200", 1.0)]
    assert ds.users.ids == ("3", "7")


def test_custom_multi_character_separator_and_crlf_line_ends(tmp_path):
    p = write(tmp_path / "r.dat", "1::10::5\r\n2::20::4\r\n")
    ds = read_table(ColumnMapping(path=p, sep="::", header=False, user=0, item=1, rating=2))
    assert rows(ds, "rating") == [("1", "10", 5.0), ("2", "20", 4.0)]


def test_quoted_fields_and_surrounding_spaces_are_stripped(tmp_path):
    p = write(tmp_path / "r.csv", '"user", "item"\n"a", 1\n b ,"2"\n')
    ds = read_table(ColumnMapping(path=p, user="user", item="item"))
    assert rows(ds, None) == [("a", "1", None), ("b", "2", None)]


def test_string_ids_stay_strings_and_mixed_ids_are_not_merged(tmp_path):
    p = write(tmp_path / "r.csv", "user,item\n007,x\n7,y\nabc,z\n")
    ds = read_table(ColumnMapping(path=p, user="user", item="item"))
    assert set(ds.users.ids) == {"007", "7", "abc"}


def test_integer_ids_get_numeric_vocabulary_order(tmp_path):
    p = write(tmp_path / "r.csv", "user,item\n10,100\n9,20\n")
    ds = read_table(ColumnMapping(path=p, user="user", item="item"))
    assert ds.users.ids == ("9", "10")
    assert ds.items.ids == ("20", "100")


def test_string_dates_are_parsed_with_timestamp_format_as_utc_seconds(tmp_path):
    p = write(tmp_path / "r.csv", "user;item;when\n1;2;2016-05-09 10:00:00\n1;3;1970-01-01 00:01:00\n")
    ds = read_table(
        ColumnMapping(
            path=p, sep=";", user="user", item="item", timestamp="when", timestamp_format="%Y-%m-%d %H:%M:%S"
        )
    )
    assert ds.interactions.timestamp.tolist() == [1462788000, 60]


def test_date_not_matching_timestamp_format_names_line_column_and_format(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,when\n1,2,2016-05-09\n1,3,09/05/2016\n")
    with pytest.raises(DataError) as e:
        read_table(
            ColumnMapping(path=p, user="user", item="item", timestamp="when", timestamp_format="%Y-%m-%d")
        )
    assert str(e.value) == (
        f"{p}:3 (column 'when'): timestamp does not match timestamp_format '%Y-%m-%d'; "
        "got '09/05/2016'; expected a date written as '%Y-%m-%d'"
    )


def test_play_count_weights_without_timestamps(tmp_path):
    p = write(tmp_path / "plays.tsv", "user\tartist\tplays\nann\tabba\t12\nann\tbowie\t3\nbob\tabba\t1\n")
    ds = read_table(ColumnMapping(path=p, user="user", item="artist", weight="plays"))
    assert not ds.has_time
    assert rows(ds, "weight") == [("ann", "abba", 12.0), ("ann", "bowie", 3.0), ("bob", "abba", 1.0)]
    assert ds.user_items("weight")[0].toarray().tolist() == [[12.0, 3.0]]


def test_parquet_reads_only_mapped_columns_with_native_types(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame(
        {
            "uid": [5, 3, 5],
            "iid": ["x", "y", "y"],
            "score": [1, 2, 3],  # integer ratings become floats
            "when": pl.Series([0, 86_400_000, 1000], dtype=pl.Int64).cast(pl.Datetime("ms")),
            "nested": [[1], [2], [3]],  # a type readers do not handle; never read
        }
    ).write_parquet(p)
    ds = load_dataset_from_mapping(
        ColumnMapping(path=p, user="uid", item="iid", rating="score", timestamp="when")
    )
    assert rows(ds, "rating") == [("5", "x", 1.0), ("3", "y", 2.0), ("5", "y", 3.0)]
    assert ds.interactions.timestamp.tolist() == [0, 86400, 1]
    assert ds.users.ids == ("3", "5")


def test_parquet_columns_by_position(tmp_path):
    p = tmp_path / "r.pq"
    pl.DataFrame({"a": ["u"], "b": ["i"], "c": [2.0]}).write_parquet(p)
    ds = read_table(ColumnMapping(path=p, user=0, item=1, weight=2))
    assert rows(ds, "weight") == [("u", "i", 2.0)]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**12), st.text("abcXYZ_-09", min_size=1, max_size=6), st.floats(-1e6, 1e6)
        ),
        min_size=1,
        max_size=30,
    )
)
def test_csv_round_trip_keeps_every_row_in_order(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("rt") / "r.csv"
    p.write_text("user,item,rating\n" + "".join(f"{u},{i},{r!r}\n" for u, i, r in data))
    ds = read_table(csv_mapping(p, duplicates="keep"))
    assert [(u, i) for u, i, _ in rows(ds, "rating")] == [(str(u), i) for u, i, _ in data]
    np.testing.assert_allclose(ds.interactions.rating, np.array([r for *_, r in data], np.float32))


# ------------------------------------------------------------------------------------------
# Errors in user tables
# ------------------------------------------------------------------------------------------


def test_missing_file_names_path_and_lists_the_folder(tmp_path):
    write(tmp_path / "other.csv", "a,b\n")
    p = tmp_path / "nope.csv"
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p))
    assert str(e.value) == f"{p}: file not found; the folder {tmp_path} holds: other.csv"
    assert e.value.path == p


def test_line_with_wrong_field_count_names_first_bad_line_and_expected_columns(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n1,2\n1\n")
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p))
    assert str(e.value).startswith(
        f"{p}:3: line 3 has 2 fields, expected 3 (as in the header: user, item, rating); got '1,2'"
    )
    assert e.value.line == 3


def test_quoted_fields_may_hold_the_separator_quotes_and_line_breaks(tmp_path):
    # fails before issue 11: the separator inside "Smith, John" split the field
    p = write(
        tmp_path / "r.csv", 'user,item,rating\n"Smith, John",a,4\n"O""Brien",b,3\n"x\ny",c,"5"\nz,d,1\n'
    )
    ds = read_table(csv_mapping(p))
    assert rows(ds, "rating") == [
        ("Smith, John", "a", 4.0),
        ('O"Brien', "b", 3.0),
        ("x\ny", "c", 5.0),
        ("z", "d", 1.0),
    ]


ID_TEXT = st.text(alphabet='ab1 ,"\n\t;', min_size=1, max_size=5).filter(lambda t: t.strip() != "")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(ID_TEXT, ID_TEXT, st.floats(-100, 100)), min_size=1, max_size=12),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
)
def test_what_the_csv_module_writes_is_read_back(tmp_path_factory, data, quoting):
    # each quoting path (whole-field quotes, quoted separators, fields over line ends) agrees
    p = tmp_path_factory.mktemp("q") / "r.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f, quoting=quoting, lineterminator="\n")
        w.writerow(["user", "item", "rating"])
        w.writerows(data)
    ds = read_table(csv_mapping(p, duplicates="keep"))
    assert [(u, i) for u, i, _ in rows(ds, "rating")] == [(u.strip(), i.strip()) for u, i, _ in data]
    np.testing.assert_allclose(ds.interactions.rating, np.array([r for *_, r in data], np.float32))


def test_errors_after_a_multi_line_quoted_field_name_the_physical_line(tmp_path):
    p = write(tmp_path / "r.csv", 'user,item,rating\n"a\nb",x,4\nc,y,four\n')
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p))
    assert (e.value.line, e.value.column, e.value.value) == (4, "rating", "four")


def test_quoted_field_with_a_wrong_field_count_names_its_line(tmp_path):
    p = write(tmp_path / "r.csv", 'user,item,rating\n"Smith, John",a,4\n"Doe, Jane",b\n')
    with pytest.raises(DataError, match=re.escape(f"{p}:3: line 3 has 2 fields, expected 3")):
        read_table(csv_mapping(p))


@pytest.mark.parametrize(
    "body, line",
    [('1,"unterminated,4\n2,b,3\n', 2), ('1,a,4\n"x"y,b,3\n', 3)],
    ids=["unterminated quote", "text after a closing quote"],
)
def test_malformed_quoting_is_a_data_error_naming_the_line(tmp_path, body, line):
    p = write(tmp_path / "r.csv", "user,item,rating\n" + body)
    with pytest.raises(DataError, match="malformed quoted field") as e:
        read_table(csv_mapping(p))
    assert e.value.line == line and e.value.path == p


def test_a_multi_character_separator_says_quoted_separators_need_a_one_character_one(tmp_path):
    p = write(tmp_path / "r.dat", 'user::item\n1::"a::b"\n')
    with pytest.raises(DataError, match="read only with a one-character separator"):
        read_table(ColumnMapping(path=p, sep="::", user="user", item="item"))


def test_non_numeric_rating_names_line_column_value_and_expectation(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n1,3,four\n")
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p))
    assert str(e.value) == (
        f"{p}:3 (column 'rating'): rating is not a number; got 'four'; expected a finite number for rating"
    )
    assert (e.value.line, e.value.column, e.value.value) == (3, "rating", "four")


def test_non_numeric_timestamp_without_header_names_line_and_position(tmp_path):
    p = write(tmp_path / "r.tsv", "1\t2\t100\n1\t3\t2016-05-09\n")
    with pytest.raises(DataError) as e:
        read_table(ColumnMapping(path=p, header=False, user=0, item=1, timestamp=2))
    assert str(e.value) == (
        f"{p}:2 (column 2): timestamp is not an integer; got '2016-05-09'; "
        "expected an integer unix timestamp in seconds (set timestamp_format to read dates)"
    )


def test_id_in_a_rating_column_is_rejected_as_non_numeric(tmp_path):
    # columns swapped by mistake: the rating column holds item ids such as "tt0114709"
    p = write(tmp_path / "r.csv", "user,item,rating\n1,4,tt0114709\n")
    with pytest.raises(
        DataError, match=r"r\.csv:2 \(column 'rating'\).*got 'tt0114709'; expected a finite number"
    ):
        read_table(csv_mapping(p))


def test_non_finite_rating_is_rejected(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n1,2,nan\n")
    with pytest.raises(DataError, match=r":2 \(column 'rating'\).*got 'nan'"):
        read_table(csv_mapping(p))


def test_earliest_bad_line_is_reported_across_columns(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating,ts\n1,2,3,100\n1,2,3,x\n1,2,y,5\n")
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p, timestamp="ts"))
    assert (e.value.line, e.value.column) == (3, "ts")


def test_empty_id_names_line_and_column(tmp_path):
    p = write(tmp_path / "r.csv", "user,item\n1,2\n,3\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:3 (column 'user'): empty user id; got ''")):
        read_table(ColumnMapping(path=p, user="user", item="item"))


def test_empty_file_is_an_error(tmp_path):
    p = write(tmp_path / "r.csv", "")
    with pytest.raises(DataError, match=re.escape(f"{p}: empty file; expected at least one data row")):
        read_table(csv_mapping(p))


def test_header_only_file_is_an_empty_file_error(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n")
    with pytest.raises(DataError, match=re.escape(f"{p}: empty file: a header but no data rows")):
        read_table(csv_mapping(p))


def test_blank_line_inside_the_file_names_its_line(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n\n1,3,4\n")
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p))
    assert str(e.value).startswith(f"{p}:3: line 3 is blank; expected a data row")


def test_two_trailing_newlines_leave_a_blank_last_line_error(tmp_path):
    p = write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:3: line 3 is blank")):
        read_table(csv_mapping(p))


def test_header_column_not_found_lists_the_columns_present(tmp_path):
    p = write(tmp_path / "r.csv", "userId,movieId,rating\n1,2,3\n")
    with pytest.raises(DataError) as e:
        read_table(csv_mapping(p))
    assert str(e.value) == (
        f"{p} (column 'user'): user column 'user' not found; "
        "expected one of the columns present: 'userId', 'movieId', 'rating'"
    )


def test_column_position_beyond_the_line_is_an_error(tmp_path):
    p = write(tmp_path / "r.tsv", "1\t2\n")
    with pytest.raises(
        DataError, match=r"rating column position 2 is out of range: the file has 2 fields per line"
    ):
        read_table(ColumnMapping(path=p, header=False, user=0, item=1, rating=2))


def test_invalid_utf8_names_the_line_and_suggests_latin1(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes(b"user,item\n1,caf\xe9\n")
    with pytest.raises(DataError, match=re.escape(f"{p}:2: text is not valid UTF-8")) as e:
        read_table(ColumnMapping(path=p, user="user", item="item"))
    assert "encoding='latin1'" in str(e.value)
    ds = read_table(ColumnMapping(path=p, user="user", item="item", encoding="latin1"))
    assert ds.items.ids == ("café",)


def test_parquet_missing_column_lists_the_columns_present(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"user_id": [1], "item_id": [2]}).write_parquet(p)
    with pytest.raises(DataError) as e:
        read_table(ColumnMapping(path=p, user="user_id", item="item_id", rating="stars"))
    assert str(e.value) == (
        f"{p} (column 'stars'): rating column 'stars' not found; "
        "expected one of the columns present: 'user_id', 'item_id'"
    )


def test_parquet_string_rating_column_is_rejected_naming_the_column(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"u": [1], "i": [2], "stars": ["5"]}).write_parquet(p)
    with pytest.raises(
        DataError, match=r"\(column 'stars'\): rating column has type String; expected a numeric"
    ):
        read_table(ColumnMapping(path=p, user="u", item="i", rating="stars"))


def test_parquet_null_item_id_names_the_first_null_row(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"u": [1, 2, 3, 4], "i": ["a", "b", None, None]}).write_parquet(p)
    with pytest.raises(DataError, match=r"\(column 'i'\): row 3 has a null item"):
        read_table(ColumnMapping(path=p, user="u", item="i"))


def test_file_that_is_not_parquet_is_an_error(tmp_path):
    p = write(tmp_path / "r.parquet", "user,item\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(ColumnMapping(path=p, user="user", item="item"))


# ------------------------------------------------------------------------------------------
# load_dataset
# ------------------------------------------------------------------------------------------


def test_unknown_dataset_name_lists_the_valid_names():
    with pytest.raises(DataError) as e:
        load_dataset("movielens")
    msg = str(e.value)
    assert "unknown dataset 'movielens'" in msg
    for name in ("amazon-video-seq", "diginetica-sample", "ml-100k", "ml-1m"):
        assert name in msg
    assert set(DATASETS) == {"amazon-video-seq", "diginetica-sample", "ml-100k", "ml-1m"}


def test_registered_dataset_absent_under_data_root_names_the_folder(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "ml-1m"))):
        load_dataset("ml-1m", data_root=tmp_path)


def test_registered_dataset_is_read_from_the_given_data_root(tmp_path, ml1m):
    assert load_dataset("ml-1m", data_root=ml1m.parent).name == "ml-1m"


def test_load_dataset_detects_folder_layouts_and_sequence_files(ml100k, ml1m, tmp_path):
    assert load_dataset(str(ml100k)).name == "ml-100k"
    assert load_dataset(str(ml1m)).name == "ml-1m"
    seq = write(tmp_path / "Beauty.txt", "1 2\n")
    assert load_dataset(str(seq)).name == "Beauty"


def test_load_dataset_on_an_unrecognised_folder_lists_its_files(tmp_path):
    write(tmp_path / "plays.csv", "a,b\n")
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path))
    assert str(e.value) == (
        f"{tmp_path}: cannot tell the dataset layout of this folder; it holds: plays.csv; expected an "
        "ml-100k folder (u.data), an ml-1m folder (ratings.dat) or a sequence .txt file"
    )


def test_load_dataset_on_a_missing_path_says_file_not_found(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset(str(tmp_path / "missing.txt"))


# ------------------------------------------------------------------------------------------
# Real data (skipped where the shared data root is absent)
# ------------------------------------------------------------------------------------------


def real(name: str):
    if not (data_root() / name).is_dir():
        pytest.skip(f"dataset {name} not under the data root {data_root()}")
    return load_dataset(name)


def test_real_ml100k_counts_titles_genres_and_users():
    ds = real("ml-100k")
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100000)
    assert set(np.unique(ds.interactions.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    item = ds.item_features.row(ds.items.index("1"), named=True)
    assert item["title"] == "Toy Story (1995)"
    assert "Animation" in item["genres"]
    user = ds.user_features.row(ds.users.index("1"), named=True)
    assert (user["age"], user["occupation"]) == (24, "technician")
    assert ds.item_features["title"].null_count() == 0


def test_real_amazon_video_sequences():
    ds = real("amazon-video-seq")
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (287107, 31013, 23715)
    assert SEQUENCE_NOTE in ds.notes


def test_real_diginetica_sample_keeps_every_row():
    ds = real("diginetica-sample")
    # SOURCE.md says 12,390 rows, but the file holds 12,391 data lines after its header (the last
    # has no final newline); every one is kept.
    assert len(ds.interactions) == 12391
    assert ds.has_time


def test_parquet_categorical_ids_and_string_dates_with_timestamp_format(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame(
        {
            "u": pl.Series(["b", "a"], dtype=pl.Categorical),
            "i": pl.Series([2.0, 1.0]),  # float ids holding integers (pandas with nulls writes these)
            "day": ["1970-01-02", "1970-01-01"],
        }
    ).write_parquet(p)
    ds = read_table(ColumnMapping(path=p, user="u", item="i", timestamp="day", timestamp_format="%Y-%m-%d"))
    assert rows(ds, "timestamp") == [("b", "2", 86400), ("a", "1", 0)]


# ------------------------------------------------------------------------------------------
# Weights and compressed files (issue 11; each failed before)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["-2", "0", "0.0"])
def test_a_weight_of_zero_or_below_names_file_line_and_column(tmp_path, bad):
    p = write(tmp_path / "plays.csv", f"user,item,plays\na,x,3\na,y,{bad}\n")
    with pytest.raises(DataError) as e:
        read_table(ColumnMapping(path=p, user="user", item="item", weight="plays"))
    assert (e.value.path, e.value.line, e.value.column, e.value.value) == (p, 3, "plays", bad)
    assert "weight is not positive" in str(e.value) and "a weight > 0" in str(e.value)


def test_a_parquet_weight_of_zero_or_below_names_the_row(tmp_path):
    p = tmp_path / "r.parquet"
    pl.DataFrame({"u": [1, 2], "i": [1, 1], "w": [1.5, -1.0]}).write_parquet(p)
    with pytest.raises(DataError, match=r"\(column 'w'\): row 2: weight is not positive"):
        read_table(ColumnMapping(path=p, user="u", item="i", weight="w"))


def _compress(kind: str, data: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    import pyarrow as pa

    if kind == "gz":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    return pa.Codec("zstd").compress(data, asbytes=True)


@pytest.mark.parametrize("kind", ["gz", "zst", "bz2", "xz"])
@pytest.mark.parametrize("fmt, sep", [("csv", ","), ("tsv", "\t")])
def test_compressed_text_files_are_read_directly(tmp_path, kind, fmt, sep):
    p = tmp_path / f"plays.{fmt}.{kind}"
    p.write_bytes(_compress(kind, f"user{sep}item{sep}rating\n1{sep}a{sep}4\n2{sep}b{sep}3\n".encode()))
    m = csv_mapping(p)
    assert m.resolved_format == fmt and m.dataset_name == "plays"
    ds = read_table(m)
    assert ds.name == "plays"
    assert rows(ds, "rating") == [("1", "a", 4.0), ("2", "b", 3.0)]


def test_a_truncated_gzip_file_is_a_data_error_saying_so(tmp_path):
    p = tmp_path / "r.csv.gz"
    p.write_bytes(_compress("gz", b"user,item\n" + b"1,2\n" * 1000)[:40])
    with pytest.raises(DataError, match=re.escape(f"{p}: not a readable gzip file")):
        read_table(ColumnMapping(path=p, user="user", item="item"))


def test_compressed_sequence_files_load_by_path(tmp_path):
    p = tmp_path / "Games.txt.gz"
    p.write_bytes(_compress("gz", b"1 5\n1 3\n"))
    ds = load_dataset(str(p))
    assert ds.name == "Games" and len(ds.interactions) == 2


def test_utf16_text_says_it_is_utf16(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes("user,item\n1,2\n".encode("utf-16"))
    with pytest.raises(DataError, match="text is UTF-16"):
        read_table(ColumnMapping(path=p, user="user", item="item"))
