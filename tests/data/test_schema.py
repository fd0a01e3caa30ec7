"""ColumnMapping: defaults, format detection and the checks it makes before any file is read."""

from pathlib import Path

import pydantic
import pytest

from recfunnel.data.schema import ColumnMapping


def test_csv_suffix_defaults_to_comma_separated_with_header():
    m = ColumnMapping(path=Path("plays.csv"), user="u", item="i")
    assert m.resolved_format == "csv"
    assert m.resolved_sep == ","
    assert m.header is True
    assert m.encoding == "utf8"
    assert m.timestamp_format is None


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.tsv", "tsv"), ("a.tab", "tsv"), ("a.txt", "csv")],
)
def test_auto_format_is_decided_by_suffix(filename, fmt):
    assert ColumnMapping(path=Path(filename), user=0, item=1).resolved_format == fmt


def test_tsv_defaults_to_tab_separator():
    assert ColumnMapping(path=Path("a.tsv"), user=0, item=1).resolved_sep == "\t"


def test_explicit_format_overrides_suffix():
    m = ColumnMapping(path=Path("a.dat"), format="tsv", user=0, item=1)
    assert m.resolved_format == "tsv"


def test_multi_character_separator_is_allowed():
    assert ColumnMapping(path=Path("r.dat"), sep="::", header=False, user=0, item=1).resolved_sep == "::"


def test_dataset_name_defaults_to_file_stem_and_can_be_set():
    assert ColumnMapping(path=Path("/x/my-plays.csv"), user=0, item=1).dataset_name == "my-plays"
    assert ColumnMapping(path=Path("/x/p.csv"), user=0, item=1, name="shop").dataset_name == "shop"


def test_path_is_accepted_as_a_string():
    assert ColumnMapping(path="a.csv", user="u", item="i").path == Path("a.csv")


def test_columns_lists_only_mapped_roles_in_reading_order():
    m = ColumnMapping(path=Path("a.csv"), user="u", item="i", weight="plays")
    assert m.columns == {"user": "u", "item": "i", "weight": "plays"}


def test_mapping_is_frozen():
    m = ColumnMapping(path=Path("a.csv"), user="u", item="i")
    with pytest.raises(pydantic.ValidationError):
        m.user = "x"


def test_unknown_field_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ColumnMapping(path=Path("a.csv"), user="u", item="i", score="s")


def test_columns_by_name_are_rejected_without_header():
    with pytest.raises(pydantic.ValidationError, match="0-based positions; item given by name"):
        ColumnMapping(path=Path("a.csv"), header=False, user=0, item="movie")


def test_negative_column_position_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="cannot be negative"):
        ColumnMapping(path=Path("a.csv"), header=False, user=-1, item=1)


def test_bool_column_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="not a bool"):
        ColumnMapping(path=Path("a.csv"), user=True, item=1)


def test_timestamp_format_without_timestamp_column_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="no timestamp column"):
        ColumnMapping(path=Path("a.csv"), user="u", item="i", timestamp_format="%Y-%m-%d")


def test_user_and_item_on_the_same_column_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="same column"):
        ColumnMapping(path=Path("a.csv"), user="id", item="id")


def test_separator_for_a_parquet_file_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="Parquet"):
        ColumnMapping(path=Path("a.parquet"), sep=";", user="u", item="i")


def test_empty_separator_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="empty"):
        ColumnMapping(path=Path("a.csv"), sep="", user="u", item="i")


def test_every_field_has_a_description_for_help_text():
    for name, info in ColumnMapping.model_fields.items():
        assert info.description, f"field {name} has no docstring"
