"""Shared fixtures of the model tests: a small real slice of MovieLens-100K, its leave-one-out split,
and the Popularity baseline every learning model must beat."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # `from contract import ModelContract`

from contract import Slice, sampled_hr10  # noqa: E402

from recfunnel.data.dataset import build_dataset  # noqa: E402
from recfunnel.data.readers import load_dataset  # noqa: E402
from recfunnel.data.splits import leave_one_out  # noqa: E402
from recfunnel.recommender import Recommender  # noqa: E402
from recfunnel.settings import has_dataset  # noqa: E402

SLICE_USERS = 300  # the users with the lowest index, with all their interactions (~31k rows)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These models are tiny, so intra-op threads only add overhead; on a shared 2-core runner
    oversubscribed OpenMP threads made training ~30x slower. Restored after each module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ml_slice() -> Slice:
    """Users 1..300 of the real ml-100k, rebuilt with build_dataset so vocabularies are compact."""
    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root (set RECFUNNEL_DATA)")
    full = load_dataset("ml-100k")
    ints = full.interactions
    rows = np.flatnonzero(ints.user < SLICE_USERS)  # sorted: keeps file order, the time tie-break
    sub = ints.take(rows)
    frame = pl.DataFrame(
        {
            "user": np.asarray(full.users.ids, dtype=np.int64)[sub.user],
            "item": np.asarray(full.items.ids, dtype=np.int64)[sub.item],
            "timestamp": sub.timestamp,
            "rating": sub.rating,
        }
    )
    ds = build_dataset("ml-100k-slice", frame)
    assert ds.n_users == SLICE_USERS and ds.n_items == len(np.unique(sub.item))
    return Slice(ds, leave_one_out(ds).with_negatives(ds, 99, seed=0))


@pytest.fixture(scope="session")
def popularity_hr10(ml_slice: Slice) -> float:
    rec = Recommender("popularity").fit(ml_slice.dataset, ml_slice.split)
    return sampled_hr10(rec.model_, ml_slice)
