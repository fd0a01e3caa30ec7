"""Splits: leakage-free leave-one-out on real ml-100k, the documented tie-break, temporal / ratio /
random_holdout properties, save/load round trips and sampled-evaluation negatives."""

import numpy as np
import polars as pl
import pytest

from recfunnel.data.dataset import build_dataset
from recfunnel.data.errors import DataError
from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import Split, leave_one_out, make_split, random_holdout, ratio, temporal
from recfunnel.settings import data_root


@pytest.fixture(scope="module")
def ml100k():
    if not (data_root() / "ml-100k").is_dir():
        pytest.skip(f"ml-100k not under the data root {data_root()}")
    return load_dataset("ml-100k")


@pytest.fixture(scope="module")
def loo(ml100k):
    return leave_one_out(ml100k)


def assert_partition(split, n_rows):
    """train / valid / test are disjoint, sorted, and together hold every row exactly once."""
    parts = [split.train, split.valid, split.test]
    for p in parts:
        assert np.all(np.diff(p) > 0), "row indices must be sorted and unique"
    every = np.concatenate(parts)
    assert len(every) == n_rows
    assert np.array_equal(np.sort(every), np.arange(n_rows))


def per_user(users, values, n_users, reduce):
    """Per-user max or min of `values` (users without rows get -inf / +inf)."""
    if reduce == "max":
        out = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(out, users, values)
    else:
        out = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(out, users, values)
    return out


def tiny(rows, with_time=True):
    """A dataset from (user, item, timestamp) rows in file order."""
    frame = {"user": [r[0] for r in rows], "item": [r[1] for r in rows]}
    if with_time:
        frame["timestamp"] = [r[2] for r in rows]
    return build_dataset("tiny", pl.DataFrame(frame))


# ------------------------------------------------------------------------------------------
# leave_one_out
# ------------------------------------------------------------------------------------------


def test_leave_one_out_on_ml100k_has_exact_sizes_and_partitions_every_row(ml100k, loo):
    assert (len(loo.test), len(loo.valid), len(loo.train)) == (943, 943, 100000 - 1886)
    assert_partition(loo, len(ml100k.interactions))
    users = ml100k.interactions.user
    # one test and one valid row per user (every ml-100k user has >= 20 ratings)
    assert np.array_equal(np.sort(users[loo.test]), np.arange(943))
    assert np.array_equal(np.sort(users[loo.valid]), np.arange(943))


def test_leave_one_out_on_ml100k_never_puts_a_train_event_after_valid_or_test(ml100k, loo):
    ints = ml100k.interactions
    # (timestamp, file order) as one key: the documented order of events
    key = ints.timestamp * 1_000_000 + ints.order
    n = ml100k.n_users
    train_max = per_user(ints.user[loo.train], key[loo.train], n, "max")
    valid_key = per_user(ints.user[loo.valid], key[loo.valid], n, "max")
    test_key = per_user(ints.user[loo.test], key[loo.test], n, "min")
    assert np.all(train_max < valid_key)
    assert np.all(valid_key < test_key)
    # and in raw timestamps: train <= valid <= test
    ts = ints.timestamp
    train_ts = per_user(ints.user[loo.train], ts[loo.train], n, "max")
    valid_ts = per_user(ints.user[loo.valid], ts[loo.valid], n, "max")
    test_ts = per_user(ints.user[loo.test], ts[loo.test], n, "min")
    assert np.all(train_ts <= valid_ts) and np.all(valid_ts <= test_ts)


def test_leave_one_out_test_pairs_never_appear_in_train(ml100k, loo):
    ints = ml100k.interactions
    pair = ints.user * ml100k.n_items + ints.item
    assert not np.intersect1d(loo.train, loo.test).size
    assert not np.isin(pair[loo.test], pair[loo.train]).any()
    assert not np.isin(pair[loo.valid], pair[loo.train]).any()


def test_leave_one_out_breaks_timestamp_ties_by_file_order_not_item_id():
    # user u: row 0 at t=1, rows 1 and 2 tie at t=7, row 3 at t=3. Sorted by (time, file order):
    # rows 0, 3, 1, 2 -> row 2 (written later) is test, row 1 is valid. Item ids are chosen so that
    # breaking the tie by item id would pick the other row.
    ds = tiny([("u", 5, 1), ("u", 9, 7), ("u", 1, 7), ("u", 4, 3)])
    s = leave_one_out(ds)
    assert s.test.tolist() == [2]
    assert s.valid.tolist() == [1]
    assert s.train.tolist() == [0, 3]
    # the same events with the tied rows swapped in the file swap roles
    ds2 = tiny([("u", 5, 1), ("u", 1, 7), ("u", 9, 7), ("u", 4, 3)])
    s2 = leave_one_out(ds2)
    assert ds2.items.decode(ds2.interactions.item[s2.test]) == ["9"]
    assert ds2.items.decode(ds2.interactions.item[s2.valid]) == ["1"]


def test_leave_one_out_user_with_two_events_gives_test_only_and_one_event_train_only():
    ds = tiny(
        [
            ("one", 1, 10),
            ("two", 1, 20),
            ("two", 2, 10),
            ("three", 1, 1),
            ("three", 2, 2),
            ("three", 3, 3),
        ]
    )
    s = leave_one_out(ds)
    assert_partition(s, 6)
    assert s.train.tolist() == [0, 2, 3]  # "one" keeps its single row; "two" keeps its earlier row
    assert s.test.tolist() == [1, 5]  # "two": its later (t=20) row; "three": t=3
    assert s.valid.tolist() == [4]  # only "three" has a validation row
    assert ds.users.decode(s.eval_users(ds, "valid")) == ["three"]


# ------------------------------------------------------------------------------------------
# temporal
# ------------------------------------------------------------------------------------------


def test_temporal_respects_fractions_and_puts_every_train_event_before_every_test_event(ml100k):
    s = temporal(ml100k, (0.7, 0.1, 0.2))
    n = len(ml100k.interactions)
    assert_partition(s, n)
    assert abs(len(s.train) - 0.7 * n) <= 1
    assert abs(len(s.valid) - 0.1 * n) <= 1
    assert abs(len(s.test) - 0.2 * n) <= 1
    ts = ml100k.interactions.timestamp
    assert ts[s.train].max() <= ts[s.valid].min()
    assert ts[s.valid].max() <= ts[s.test].min()
    assert ts[s.train].max() <= ts[s.test].min()


def test_temporal_fractions_within_one_row_on_an_odd_sized_dataset():
    ds = tiny([("u", i, 100 - i) for i in range(7)])
    s = temporal(ds, (0.5, 0.25, 0.25))
    assert abs(len(s.train) - 3.5) <= 1 and abs(len(s.valid) - 1.75) <= 1 and abs(len(s.test) - 1.75) <= 1
    ts = ds.interactions.timestamp
    assert ts[s.train].max() <= ts[s.test].min()


def test_fractions_that_do_not_sum_to_one_are_rejected(ml100k):
    with pytest.raises(ValueError, match="summing to 1"):
        temporal(ml100k, (0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="non-negative"):
        ratio(ml100k, (1.2, -0.1, -0.1))


# ------------------------------------------------------------------------------------------
# ratio and random_holdout
# ------------------------------------------------------------------------------------------


def test_ratio_per_user_counts_are_floor_of_fraction_and_seed_decides(ml100k):
    s = ratio(ml100k, (0.8, 0.1, 0.1), seed=3)
    assert_partition(s, len(ml100k.interactions))
    users = ml100k.interactions.user
    count = np.bincount(users, minlength=ml100k.n_users)
    expected = np.floor(0.1 * count).astype(np.int64)
    assert np.array_equal(np.bincount(users[s.test], minlength=ml100k.n_users), expected)
    assert np.array_equal(np.bincount(users[s.valid], minlength=ml100k.n_users), expected)
    same = ratio(ml100k, (0.8, 0.1, 0.1), seed=3)
    other = ratio(ml100k, (0.8, 0.1, 0.1), seed=4)
    assert np.array_equal(s.test, same.test) and np.array_equal(s.valid, same.valid)
    assert not np.array_equal(s.test, other.test)
    assert s.params == {"fractions": [0.8, 0.1, 0.1], "seed": 3}


def test_random_holdout_one_test_and_one_valid_row_per_user_and_seed_decides(ml100k):
    s = random_holdout(ml100k, seed=1)
    assert_partition(s, len(ml100k.interactions))
    users = ml100k.interactions.user
    assert np.array_equal(np.bincount(users[s.test], minlength=943), np.ones(943, np.int64))
    assert np.array_equal(np.bincount(users[s.valid], minlength=943), np.ones(943, np.int64))
    assert np.array_equal(s.test, random_holdout(ml100k, seed=1).test)
    assert np.array_equal(s.valid, random_holdout(ml100k, seed=1).valid)
    assert not np.array_equal(s.test, random_holdout(ml100k, seed=2).test)


def test_random_holdout_works_without_timestamps():
    ds = tiny([("a", i, 0) for i in range(5)] + [("b", 0, 0), ("b", 1, 0)], with_time=False)
    s = random_holdout(ds, seed=0)
    assert_partition(s, 7)
    users = ds.interactions.user
    assert np.bincount(users[s.test]).tolist() == [1, 1]
    assert np.bincount(users[s.valid], minlength=2).tolist() == [1, 0]  # "b" has 2 rows: no valid


@pytest.mark.parametrize("method", ["leave_one_out", "temporal"])
def test_time_split_on_data_without_timestamps_says_so_and_suggests_random_holdout(method):
    ds = tiny([("a", 1, 0), ("a", 2, 0)], with_time=False)
    with pytest.raises(DataError) as err:
        make_split(ds, method)
    msg = str(err.value)
    assert "timestamp" in msg and method in msg
    assert "random_holdout" in msg


def test_make_split_unknown_method_lists_valid_ones(ml100k):
    with pytest.raises(ValueError, match="leave_one_out, temporal, ratio, random_holdout"):
        make_split(ml100k, "by_magic")


# ------------------------------------------------------------------------------------------
# with_negatives
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loo_negs(ml100k, loo):
    return loo.with_negatives(ml100k, n=99, seed=7)


def test_with_negatives_draws_99_per_eval_user_never_an_item_the_user_ever_touched(ml100k, loo_negs):
    seen = ml100k.user_items()
    for part in ("valid", "test"):
        negs = loo_negs.negatives[part]
        users = loo_negs.eval_users(ml100k, part)
        assert negs.shape == (len(users), 99) == (943, 99)
        assert negs.dtype == np.int64
        assert negs.min() >= 0 and negs.max() < ml100k.n_items
        hits = np.asarray(seen[np.repeat(users, 99), negs.ravel()]).ravel()
        assert not hits.any(), "a negative is an item the user interacted with"
    assert loo_negs.params["eval_negatives"] == 99 and loo_negs.params["negatives_seed"] == 7


def test_with_negatives_is_reproducible_for_a_seed_and_changes_with_it(ml100k, loo, loo_negs):
    again = loo.with_negatives(ml100k, n=99, seed=7)
    other = loo.with_negatives(ml100k, n=99, seed=8)
    for part in ("valid", "test"):
        assert np.array_equal(again.negatives[part], loo_negs.negatives[part])
        assert not np.array_equal(other.negatives[part], loo_negs.negatives[part])
    assert np.array_equal(again.train, loo.train)  # rows untouched


# ------------------------------------------------------------------------------------------
# save / load / check
# ------------------------------------------------------------------------------------------


def test_save_load_round_trip_keeps_rows_negatives_and_metadata(tmp_path, ml100k, loo_negs):
    path = loo_negs.save(tmp_path / "split.npz")
    back = Split.load(path)
    for part in ("train", "valid", "test"):
        assert np.array_equal(back.rows(part), loo_negs.rows(part))
    assert set(back.negatives) == {"valid", "test"}
    for part in ("valid", "test"):
        assert np.array_equal(back.negatives[part], loo_negs.negatives[part])
    assert (back.method, back.params, back.dataset_fingerprint) == (
        loo_negs.method,
        loo_negs.params,
        loo_negs.dataset_fingerprint,
    )
    back.check(ml100k)  # same dataset: accepted


def test_check_rejects_a_split_made_for_another_dataset(ml100k, loo):
    other = ml100k.with_positive_threshold(4)
    with pytest.raises(DataError, match="another dataset"):
        loo.check(other)


def test_check_accepts_the_same_data_loaded_again(tmp_path):
    a = tiny([("u", 1, 1), ("u", 2, 2), ("u", 3, 3)])
    b = tiny([("u", 1, 1), ("u", 2, 2), ("u", 3, 3)])
    Split.load(leave_one_out(a).save(tmp_path / "s.npz")).check(b)


def test_loading_a_missing_split_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        Split.load(tmp_path / "nope.npz")
    assert "nope.npz" in str(err.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a split", b"PK\x03\x04truncated zip", b"\x93NUMPY garbage"],
    ids=["empty", "text", "truncated-zip", "bad-npy"],
)
def test_loading_a_garbage_split_file_is_a_data_error(tmp_path, content):
    p = tmp_path / "bad.npz"
    p.write_bytes(content)
    with pytest.raises(DataError) as err:
        Split.load(p)
    assert "bad.npz" in str(err.value)


def test_loading_an_npz_that_is_not_a_split_is_a_data_error(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, x=np.arange(3))
    with pytest.raises(DataError, match="other.npz"):
        Split.load(p)
    q = tmp_path / "half.npz"
    np.savez(q, meta=np.frombuffer(b'{"format": 1}', dtype=np.uint8))  # no rows, no method
    with pytest.raises(DataError, match="half.npz"):
        Split.load(q)


def test_loading_a_split_of_an_unknown_format_version_is_a_data_error(tmp_path):
    p = tmp_path / "future.npz"
    meta = b'{"format": 99, "method": "x", "params": {}, "dataset_fingerprint": "f"}'
    z = np.zeros(0, np.int64)
    np.savez(p, train=z, valid=z, test=z, meta=np.frombuffer(meta, dtype=np.uint8))
    with pytest.raises(DataError, match="format"):
        Split.load(p)


# ------------------------------------------------------------------------------------------
# issue 11: distinct negatives, data too small to split
# ------------------------------------------------------------------------------------------


def test_with_negatives_never_repeats_an_item_for_a_user(ml100k, loo_negs):
    for part in ("valid", "test"):
        negs = loo_negs.negatives[part]
        assert (np.sort(negs, axis=1)[:, 1:] != np.sort(negs, axis=1)[:, :-1]).all()


def test_with_negatives_on_a_catalogue_too_small_refuses_and_names_the_limit():
    ds = tiny([(1, 1, 0), (1, 2, 1), (1, 3, 2), (2, 1, 0), (2, 2, 1)])
    split = leave_one_out(ds)
    with pytest.raises(DataError, match=r"eval_negatives <= 0, or the full protocol"):
        split.with_negatives(ds, n=99)
    ds = tiny([(1, 1, 0), (1, 2, 1), (2, 1, 0), (2, 2, 1), (3, 3, 0), (3, 4, 1), (3, 5, 2)])
    assert leave_one_out(ds).with_negatives(ds, n=2).negatives["test"].shape == (3, 2)
    with pytest.raises(DataError, match=r"eval_negatives <= 2"):
        leave_one_out(ds).with_negatives(ds, n=3)


def test_ratio_on_a_four_row_file_says_the_test_part_is_empty_and_why():
    # fails before: the empty test part ended in KeyError: 'hr@5' downstream
    ds = tiny([(1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 3, 3)])
    with pytest.raises(DataError) as e:
        ratio(ds)
    msg = str(e.value)
    assert "leaves the test part empty on dataset 'tiny' (4 interactions, 2 users)" in msg
    assert "floor(0.1 x their interaction count)" in msg and "the most any user has is 2" in msg
    assert "at least 10 are needed" in msg


def test_leave_one_out_with_one_interaction_per_user_says_the_test_part_is_empty():
    ds = tiny([(1, 1, 0), (2, 1, 1), (3, 2, 2)])
    for split in (leave_one_out, random_holdout):
        with pytest.raises(DataError, match="leaves the test part empty.*no user has 2 or more interactions"):
            split(ds)


def test_temporal_on_too_few_rows_names_the_rounded_part_sizes():
    ds = tiny([(1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 3, 3)])
    with pytest.raises(DataError, match=r"test part empty.*round to train 3, valid 1, test 0"):
        temporal(ds)
    with pytest.raises(DataError, match=r"train part empty"):
        temporal(ds, (0.0, 0.5, 0.5))
