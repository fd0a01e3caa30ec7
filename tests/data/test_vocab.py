"""Vocab: raw ids <-> indices, unknown handling, duplicates, JSON round trip, "7" meets 7."""

import numpy as np
import pytest

from recfunnel.data.vocab import UNKNOWN, Vocab


@pytest.fixture
def vocab() -> Vocab:
    return Vocab(("u10", "u2", "x", "7"), name="user")


def test_encode_then_decode_gives_the_raw_ids_back(vocab):
    raws = ["x", "u10", "7", "u2", "x"]
    idx = vocab.encode(raws)
    assert idx.dtype == np.int64
    assert idx.tolist() == [2, 0, 3, 1, 2]
    assert vocab.decode(idx) == raws
    assert vocab.decode(np.arange(len(vocab))) == list(vocab.ids)


def test_indices_follow_the_order_given(vocab):
    assert [vocab.index(r) for r in vocab.ids] == [0, 1, 2, 3]
    assert len(vocab) == 4


def test_unknown_ids_are_marked_with_unknown_when_asked(vocab):
    idx = vocab.encode(["x", "nope", "u2"], unknown="mark")
    assert idx.tolist() == [2, UNKNOWN, 1]
    assert vocab.decode(idx) == ["x", "<unknown>", "u2"]


def test_unknown_ids_raise_a_key_error_naming_the_id_by_default(vocab):
    with pytest.raises(KeyError, match="nope") as err:
        vocab.encode(["x", "nope"])
    assert "user" in str(err.value)
    with pytest.raises(KeyError, match="ghost"):
        vocab.index("ghost")
    with pytest.raises(KeyError, match="nope"):
        vocab.encode(["nope"], unknown="raise")


def test_an_invalid_unknown_policy_is_rejected(vocab):
    with pytest.raises(ValueError, match="'raise' or 'mark'"):
        vocab.encode(["x"], unknown="ignore")


def test_duplicate_ids_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(("a", "b", "a"))


def test_from_values_keeps_first_appearance_order_and_collapses_repeats():
    v = Vocab.from_values([3, "b", 3, "a", "b"], name="item")
    assert v.ids == ("3", "b", "a")
    assert v.name == "item"


def test_json_round_trip_keeps_ids_and_order(vocab):
    back = Vocab.from_json(vocab.to_json(), name="user")
    assert back == vocab
    assert back.ids == vocab.ids
    assert back.sha256 == vocab.sha256
    assert back.encode(["7", "u10"]).tolist() == [3, 0]


@pytest.mark.parametrize("text", ['{"a": 1}', "[1, 2]", '["a", null]'])
def test_json_that_is_not_a_list_of_strings_is_rejected(text):
    with pytest.raises(ValueError, match="JSON list of strings"):
        Vocab.from_json(text)


def test_string_and_integer_forms_of_an_id_are_the_same_id(vocab):
    assert vocab.index(7) == vocab.index("7") == 3
    assert 7 in vocab and "7" in vocab
    assert vocab.encode([7, "7", np.int64(7)]).tolist() == [3, 3, 3]
    v = Vocab.from_values([7, "7", 8])
    assert v.ids == ("7", "8")


def test_sha256_differs_when_order_differs():
    assert Vocab(("a", "b")).sha256 != Vocab(("b", "a")).sha256
