"""Dataset: vocabulary order, feature-table alignment, read-only arrays, rating threshold, matrices."""

import numpy as np
import polars as pl
import pytest

from recfunnel.data.dataset import Interactions, build_dataset
from recfunnel.data.errors import DataError


@pytest.fixture
def rated():
    frame = pl.DataFrame(
        {
            "user": [10, 2, 1, 2, 10, 2],
            "item": [100, 9, 9, 100, 9, 9],  # (2, 9) twice
            "timestamp": [5, 4, 3, 2, 1, 0],
            "rating": [5.0, 3.0, 4.0, 1.0, 4.5, 2.0],
            "weight": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    return build_dataset("rated", frame)


def test_numeric_ids_sort_numerically_not_as_strings(rated):
    assert rated.users.ids == ("1", "2", "10")
    assert rated.items.ids == ("9", "100")
    # each row's index decodes to its raw id, in file order
    assert rated.users.decode(rated.interactions.user) == ["10", "2", "1", "2", "10", "2"]
    assert rated.items.decode(rated.interactions.item) == ["100", "9", "9", "100", "9", "9"]


def test_string_ids_sort_as_strings_and_file_order_is_kept():
    ds = build_dataset("s", pl.DataFrame({"user": ["b", "a", "c"], "item": ["z", "y", "z"]}))
    assert ds.users.ids == ("a", "b", "c")
    assert ds.items.ids == ("y", "z")
    assert ds.interactions.order.tolist() == [0, 1, 2]
    assert not ds.has_time
    assert ds.interactions.timestamp is None and ds.interactions.rating is None


def test_item_feature_table_is_aligned_to_vocab_order_and_keeps_catalogue_only_items():
    frame = pl.DataFrame({"user": [1, 1, 2], "item": [30, 4, 4]})
    items = pl.DataFrame({"id": [500, 30, 4], "title": ["cold", "thirty", "four"]})
    ds = build_dataset("f", frame, item_features=items)
    assert ds.items.ids == ("4", "30", "500")  # numeric order, catalogue item 500 has an index
    assert ds.n_items == 3
    assert ds.item_features["id"].to_list() == ["4", "30", "500"]
    assert ds.item_titles() == ["four", "thirty", "cold"]
    assert ds.items.decode(ds.interactions.item) == ["30", "4", "4"]
    assert ds.user_items().shape == (2, 3)


def test_ids_missing_from_a_feature_table_get_a_null_row():
    frame = pl.DataFrame({"user": [1, 2, 3], "item": [1, 1, 1]})
    users = pl.DataFrame({"id": [3, 1], "age": [30, 10]})
    ds = build_dataset("f", frame, user_features=users)
    assert ds.user_features["id"].to_list() == ["1", "2", "3"]
    assert ds.user_features["age"].to_list() == [10, None, 30]


def test_integer_ids_meet_string_ids_of_a_feature_table():
    frame = pl.DataFrame({"user": [1, 1], "item": [7, 8]})
    items = pl.DataFrame({"id": ["7", "8"], "title": ["seven", "eight"]})
    ds = build_dataset("mixed", frame, item_features=items)
    assert ds.n_items == 2
    assert ds.item_titles()[ds.items.index(7)] == "seven"
    assert ds.item_titles()[ds.items.index("8")] == "eight"


@pytest.mark.parametrize("table", ["user_features", "item_features"])
def test_duplicate_ids_in_a_feature_table_raise_a_data_error_naming_the_id(table):
    frame = pl.DataFrame({"user": [1, 2], "item": [1, 2]})
    features = pl.DataFrame({"id": [1, 2, 2], "x": [0, 1, 2]})
    with pytest.raises(DataError, match="lists id 2 more than once"):
        build_dataset("dup", frame, **{table: features})


def test_interaction_arrays_are_read_only_and_independent_of_the_caller_arrays():
    users = np.array([0, 1, 1], dtype=np.int64)
    items = np.array([2, 0, 1], dtype=np.int64)
    ts = np.array([10, 20, 30], dtype=np.int64)
    ints = Interactions(users, items, ts)
    for name in ("user", "item", "timestamp", "order"):
        arr = getattr(ints, name)
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 5
    users[0] = 9  # the caller's arrays stay theirs
    ts[0] = 99
    assert ints.user.tolist() == [0, 1, 1]
    assert ints.timestamp.tolist() == [10, 20, 30]


def test_dataset_arrays_are_read_only(rated):
    ints = rated.interactions
    for name in ("user", "item", "timestamp", "rating", "weight", "order"):
        assert not getattr(ints, name).flags.writeable, name
    assert not ints.take(np.array([0, 2])).user.flags.writeable


def test_columns_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="item has 2 rows"):
        Interactions(np.array([0, 1, 2]), np.array([0, 1]))


def test_positive_threshold_keeps_ratings_at_or_above_it_and_records_a_note(rated):
    pos = rated.with_positive_threshold(4.0)
    assert pos.interactions.rating.tolist() == [5.0, 4.0, 4.5]
    assert pos.interactions.order.tolist() == [0, 2, 4]  # file positions survive for tie-breaks
    assert pos.users.ids == rated.users.ids and pos.items.ids == rated.items.ids
    assert len(pos.notes) == len(rated.notes) + 1
    assert "kept 3 of 6" in pos.notes[-1] and "4.0" in pos.notes[-1]
    assert len(rated.interactions) == 6  # the original is unchanged


def test_positive_threshold_on_data_without_ratings_raises_a_data_error():
    ds = build_dataset("implicit", pl.DataFrame({"user": [1], "item": [1]}))
    with pytest.raises(DataError, match="no rating column"):
        ds.with_positive_threshold(4)


def test_positive_threshold_that_removes_every_row_is_a_data_error_saying_why(rated):
    # fails before issue 11: an empty dataset went on to training and evaluation
    with pytest.raises(DataError) as e:
        rated.with_positive_threshold(6)
    msg = str(e.value)
    assert "the rating threshold 6 removes every interaction of dataset 'rated'" in msg
    assert "its ratings run from 1 to 5" in msg and "expected a threshold of at most 5" in msg


def test_matrix_binary_counts_each_pair_once_and_weight_sums_repeats(rated):
    u, i = rated.users.index, rated.items.index
    binary = rated.user_items("binary")
    assert binary.shape == (3, 2)
    assert binary[u(2), i(9)] == 1.0  # two rows, one pair
    assert binary.sum() == 5  # five distinct pairs
    weight = rated.user_items("weight")
    assert weight[u(2), i(9)] == pytest.approx(2.0 + 6.0)
    assert weight[u(10), i(100)] == pytest.approx(1.0)
    assert weight[u(1), i(100)] == 0.0
    rating = rated.user_items("rating")
    assert rating[u(2), i(100)] == pytest.approx(1.0)


def test_matrix_weight_without_a_weight_column_counts_rows():
    ds = build_dataset("w", pl.DataFrame({"user": [1, 1, 2], "item": [1, 1, 1]}))
    m = ds.user_items("weight")
    assert m[0, 0] == 2.0 and m[1, 0] == 1.0


def test_fingerprint_depends_on_interactions_and_not_on_object_identity(rated):
    frame = pl.DataFrame({"user": [1, 2], "item": [1, 2], "timestamp": [1, 2]})
    a = build_dataset("a", frame)
    b = build_dataset("b", frame)
    c = build_dataset("c", frame.with_columns(pl.Series("timestamp", [1, 3])))
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert rated.fingerprint() != rated.with_positive_threshold(4).fingerprint()


def test_summary_reports_sizes_and_density(rated):
    s = rated.summary()
    assert (s["users"], s["items"], s["interactions"]) == (3, 2, 6)
    assert s["density"] == pytest.approx(6 / 6)
    assert s["has_time"] and s["has_rating"]


def test_subset_reindexes_compactly_keeps_numeric_order_columns_and_feature_rows():
    frame = pl.DataFrame(
        {
            "user": [10, 2, 1, 2, 10, 3],
            "item": [100, 9, 9, 100, 11, 11],
            "timestamp": [5, 4, 3, 2, 1, 0],
            "rating": [5.0, 3.0, 4.0, 1.0, 4.5, 2.0],
        }
    )
    items = pl.DataFrame({"id": [9, 11, 100, 555], "title": ["nine", "eleven", "hundred", "unseen"]})
    ds = build_dataset("d", frame, item_features=items)
    sub = ds.subset(np.array([0, 3, 4]), note="some rows")  # users 10, 2, 10; items 100, 100, 11
    assert sub.users.ids == ("2", "10") and sub.items.ids == ("11", "100")  # numeric order, compact
    assert sub.interactions.user.tolist() == [1, 0, 1] and sub.interactions.item.tolist() == [1, 1, 0]
    assert sub.interactions.timestamp.tolist() == [5, 2, 1] and sub.interactions.rating.tolist() == [
        5.0,
        1.0,
        4.5,
    ]
    assert sub.item_titles() == ["eleven", "hundred"] and sub.notes[-1] == "some rows"


def test_min_counts_repeats_until_every_user_and_item_holds():
    # item 3 has 1 event -> dropped; then user "c" has 1 event left -> dropped; then item 2 has 1 -> dropped
    frame = pl.DataFrame(
        {
            "user": ["a", "a", "b", "b", "c", "c", "a"],
            "item": [1, 2, 1, 4, 2, 3, 4],
        }
    )
    ds = build_dataset("k", frame)
    core = ds.min_counts(user=2, item=2)
    pairs = sorted(
        (core.users.ids[u], core.items.ids[i])
        for u, i in zip(core.interactions.user, core.interactions.item, strict=True)
    )
    assert pairs == [("a", "1"), ("a", "4"), ("b", "1"), ("b", "4")]
    assert "kept 4 of 7 interactions, 2 of 3 users, 2 of 4 items" in core.notes[-1]
    assert ds.min_counts().n_items == ds.n_items  # defaults keep everything
