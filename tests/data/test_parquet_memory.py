"""Memory of the out-of-core path (recfunnel.data.parquet, recfunnel.data.dataset): the reader hands
its columns to the Dataset without a copy, the duplicate check and the fingerprint make no
row-sized copies they need not, and every result is the one the copying code gave."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest

from recfunnel.data.dataset import Dataset, Interactions, sealed
from recfunnel.data.parquet import mapping_for_folder, read_parquet_dataset
from recfunnel.data.synthetic import generate_synthetic
from recfunnel.data.vocab import Vocab


def _dataset(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, **cols) -> Dataset:
    return Dataset(
        "t",
        Interactions(users, items, **cols),
        Vocab(tuple(map(str, range(n_users)))),
        Vocab(tuple(map(str, range(n_items)))),
    )


def _repeated_rows_by_unique(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """What Dataset.repeated_rows returned before (np.unique with index and inverse)."""
    key = ds.interactions.user * np.int64(ds.n_items) + ds.interactions.item
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    first_of = first[inverse.reshape(-1)]
    rows = np.flatnonzero(first_of != np.arange(len(key)))
    return rows, first_of[rows]


@pytest.mark.parametrize("seed", range(6))
def test_repeated_rows_are_those_of_the_unique_based_check(seed):
    rng = np.random.default_rng(seed)
    n, n_users, n_items = int(rng.integers(0, 300)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    ds = _dataset(rng.integers(0, n_users, n), rng.integers(0, n_items, n), n_users, n_items)
    rows, firsts = ds.repeated_rows()
    want_rows, want_firsts = _repeated_rows_by_unique(ds)
    assert rows.dtype == firsts.dtype == np.int64
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(firsts, want_firsts)


def test_fingerprint_hashes_the_bytes_of_the_arrays_and_vocabularies():
    rng = np.random.default_rng(1)
    ds = _dataset(
        rng.integers(0, 5, 50),
        rng.integers(0, 7, 50),
        5,
        7,
        timestamp=np.arange(50) * 3,
        weight=rng.random(50).astype(np.float32),
    )
    h = hashlib.sha256()
    ints = ds.interactions
    for a in (ints.user, ints.item, ints.timestamp, ints.weight):
        h.update(a.tobytes())
    h.update(ds.users.sha256.encode())
    h.update(ds.items.sha256.encode())
    assert ds.fingerprint() == h.hexdigest()


def test_sealed_arrays_are_taken_as_they_are_and_the_callers_writable_ones_copied():
    own = sealed(np.arange(6, dtype=np.int64))
    mine = np.arange(6, dtype=np.int64)
    view = np.arange(6, dtype=np.int64)[:]
    view.flags.writeable = False  # read-only, but its base stays writable: copied
    ints = Interactions(own, mine, view)
    assert ints.user is own
    assert not np.shares_memory(ints.item, mine) and not np.shares_memory(ints.timestamp, view)
    taken = ints.take(np.array([4, 1]))
    assert taken.user.tolist() == [4, 1] and not taken.user.flags.writeable
    assert not taken.order.flags.writeable and taken.order.tolist() == [4, 1]


def test_reading_peaks_below_twice_what_the_dataset_holds(tmp_path):
    # 36 bytes a row held; the copying reader peaked at 2.2x that (a second copy of every column
    # while the Dataset took them, and six row-sized arrays in the duplicate check), now 1.7x
    generate_synthetic(tmp_path, 100_000, 10_000, 2_000, files=2, seed=3, batch_rows=25_000)
    mapping = mapping_for_folder(tmp_path, duplicates="keep")
    tracemalloc.start()
    try:
        ds = read_parquet_dataset(mapping, batch_rows=25_000)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ds.interactions) == 100_000 and "duplicates kept" in ds.notes[0]
    assert peak < 2 * held, (held, peak)
