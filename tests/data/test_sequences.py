"""Sequences: time-ordered per-user histories (ties by file order), left-padded batches cut to their
longest real sequence, teacher-forcing windows, and sessions taking the same path."""

import numpy as np
import polars as pl
import pytest
import torch

from recfunnel.data.dataset import build_dataset
from recfunnel.data.sequences import (
    PAD,
    from_lists,
    left_padded,
    split_histories,
    training_windows,
    user_sequences,
)
from recfunnel.data.splits import leave_one_out


def tiny(rows):
    """A dataset from (user, item, timestamp) rows in file order."""
    return build_dataset(
        "tiny",
        pl.DataFrame(
            {"user": [r[0] for r in rows], "item": [r[1] for r in rows], "timestamp": [r[2] for r in rows]}
        ),
    )


def as_lists(indptr, items):
    return [items[indptr[u] : indptr[u + 1]].tolist() for u in range(len(indptr) - 1)]


def test_user_sequences_order_by_time_then_file_order_and_group_by_user():
    # user 1: items 30 (t=5), 10 (t=1), 20 (t=1, later in the file than 10); user 2: item 40
    ds = tiny([(1, 30, 5), (2, 40, 0), (1, 10, 1), (1, 20, 1)])
    indptr, items = user_sequences(ds.interactions, ds.n_users)
    raw = [[ds.items.ids[i] for i in seq] for seq in as_lists(indptr, items)]
    assert raw == [["10", "20", "30"], ["40"]]
    assert indptr.dtype == items.dtype == torch.long


def test_users_without_rows_get_empty_sequences():
    ds = tiny([(1, 10, 0), (2, 20, 0), (3, 30, 0)])
    part = ds.interactions.take(np.array([0, 2]))
    indptr, items = user_sequences(part, ds.n_users)
    assert as_lists(indptr, items) == [[0], [], [2]]


def test_split_histories_hold_only_the_named_parts():
    ds = tiny([(1, i, t) for t, i in enumerate([5, 6, 7, 8])] + [(2, 9, 0), (2, 5, 1), (2, 6, 2)])
    split = leave_one_out(ds)
    train = as_lists(*split_histories(ds, split, ["train"]))
    seen = as_lists(*split_histories(ds, split, ["train", "valid"]))
    idx = {raw: i for i, raw in enumerate(ds.items.ids)}
    assert train == [[idx["5"], idx["6"]], [idx["9"]]]
    assert seen == [[idx["5"], idx["6"], idx["7"]], [idx["9"], idx["5"]]]  # the test item never


def test_left_padded_keeps_the_newest_items_in_the_last_column_shifted_by_one():
    indptr, items = from_lists([[5, 6, 7], [1], [], [2, 3, 4, 5, 6, 7, 8]])
    out = left_padded(indptr, items, torch.tensor([0, 1, 2, 3]), max_len=4)
    assert out.tolist() == [[0, 6, 7, 8], [0, 0, 0, 2], [0, 0, 0, 0], [6, 7, 8, 9]]
    assert PAD == 0


def test_left_padded_cuts_the_batch_to_its_longest_real_sequence():
    indptr, items = from_lists([[5, 6, 7], [1], [2, 3, 4, 5, 6, 7, 8]])
    assert left_padded(indptr, items, torch.tensor([0, 1]), max_len=50).tolist() == [[6, 7, 8], [0, 0, 2]]
    assert left_padded(indptr, items, torch.tensor([1]), max_len=50, trim=False).shape == (1, 50)
    empty = from_lists([[], []])
    assert left_padded(*empty, torch.tensor([0, 1]), max_len=5).tolist() == [[0], [0]]


def test_last_window_predicts_each_next_item_of_the_last_max_len_positions():
    indptr, items = from_lists([[5, 6, 7], [1], [2, 3, 4, 5, 6, 7, 8]])
    w = training_windows(indptr, items, max_len=4, windows="last")
    assert w.owners.tolist() == [0, 2]  # a single item gives no target
    assert w.inputs.tolist() == [[0, 0, 6, 7], [5, 6, 7, 8]]
    assert w.targets.tolist() == [[0, 0, 7, 8], [6, 7, 8, 9]]
    assert w.lengths.tolist() == [2, 4] and w.n_targets == 6


def test_all_windows_make_every_training_item_after_the_first_a_target_once():
    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 50, size=n).tolist() for n in (1, 2, 5, 9, 10, 11, 23)]
    indptr, items = from_lists(lists)
    w = training_windows(indptr, items, max_len=4, windows="all")
    for u, seq in enumerate(lists):
        mine = w.owners == u
        targets = w.targets[mine]
        got = sorted(t - 1 for t in targets[targets > 0].tolist())
        assert got == sorted(seq[1:])
        # each input is the item right before its target
        inputs = w.inputs[mine]
        for row_in, row_t in zip(inputs.tolist(), targets.tolist(), strict=True):
            for a, b in zip(row_in, row_t, strict=True):
                assert (a == 0) == (b == 0)
    assert w.n_targets == sum(max(0, len(x) - 1) for x in lists)


def test_unknown_window_mode_is_rejected():
    with pytest.raises(ValueError, match="windows"):
        training_windows(*from_lists([[1, 2]]), max_len=3, windows="some")


def test_sessions_are_users_through_the_same_path():
    # anonymous sessions with string ids and a within-session time frame, as in diginetica
    frame = pl.DataFrame(
        {
            "user": ["s2", "s1", "s1", "s2", "s1"],
            "item": ["a", "b", "c", "b", "a"],
            "timestamp": [10, 300, 100, 5, 200],
        }
    )
    ds = build_dataset("sessions", frame)
    lists = as_lists(*user_sequences(ds.interactions, ds.n_users))
    raw = [[ds.items.ids[i] for i in seq] for seq in lists]
    assert raw == [["c", "a", "b"], ["b", "a"]]
    split = leave_one_out(ds)
    w = training_windows(*split_histories(ds, split, ["train"]), max_len=5)
    assert w.owners.tolist() == []  # each session keeps one train item: nothing to predict yet
    w = training_windows(*user_sequences(ds.interactions, ds.n_users), max_len=5)
    assert w.owners.tolist() == [0, 1]
