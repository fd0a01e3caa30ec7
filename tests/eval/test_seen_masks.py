"""The seen-item masks of full ranking (recfunnel.eval.protocols._masks) are built from the user and
item columns alone and equal the binary matrix of the parts seen before the evaluated one."""

from __future__ import annotations

import numpy as np

from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.splits import random_holdout
from recfunnel.data.vocab import Vocab
from recfunnel.eval.protocols import _masks


def test_masks_are_the_binary_matrix_of_the_seen_parts_repeats_counted_once():
    rng = np.random.default_rng(0)
    n = 400
    ints = Interactions(
        rng.integers(0, 30, n),
        rng.integers(0, 25, n),
        timestamp=np.arange(n),
        weight=np.full(n, 2.0, np.float32),
    )
    ds = Dataset("t", ints, Vocab(tuple(map(str, range(30)))), Vocab(tuple(map(str, range(25)))))
    sp = random_holdout(ds, seed=1)
    for part, seen in (("test", ["train", "valid"]), ("valid", ["train"])):
        rows = np.concatenate([sp.rows(p) for p in seen])
        want = ints.take(rows).matrix(30, 25)
        got = _masks(ds, sp, part)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert (got != want).nnz == 0 and np.array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        assert set(got.data.tolist()) == {1.0}
