"""Shared fixtures of the model tests: the synthetic MovieLens-like dataset of the model contract
(built in memory, so no model test needs the data root) and its two splits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # `from contract import ModelContract`

from contract import EVAL_NEGATIVES, Slice, synthetic_movielens  # noqa: E402

from recfunnel.data.dataset import Dataset  # noqa: E402
from recfunnel.data.splits import leave_one_out, temporal  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These models are tiny, so intra-op threads only add overhead; on a shared 2-core runner
    oversubscribed OpenMP threads made training ~30x slower. Restored after each module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic() -> Dataset:
    """200 users, 80 items, ~2.3k rated events with feature tables (contract.synthetic_movielens)."""
    return synthetic_movielens()


@pytest.fixture(scope="session")
def ranking_slice(synthetic: Dataset) -> Slice:
    """Leave-one-out with fixed sampled-eval negatives: the split of the user x item families."""
    return Slice(synthetic, leave_one_out(synthetic).with_negatives(synthetic, EVAL_NEGATIVES, seed=0))


@pytest.fixture(scope="session")
def ctr_slice(synthetic: Dataset) -> Slice:
    """Temporal 80/10/10: the split of the field families (several labelled test rows per user)."""
    return Slice(synthetic, temporal(synthetic))
