"""Fixtures of the funnel tests: a small synthetic interaction log built in memory (no data root
needed), its leave-one-out split, and models fitted on it through run.fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch

from recfunnel.data.dataset import Dataset, build_dataset
from recfunnel.data.splits import Split, leave_one_out
from recfunnel.run import RunConfig, fit

N_USERS, N_ITEMS, PER_USER = 40, 60, 12


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Toy:
    dataset: Dataset
    split: Split
    mf: torch.nn.Module


def toy_dataset(seed: int = 0) -> Dataset:
    """40 users x 12 distinct items each out of 60, raw ids "u<n>" and "i<n>", increasing
    timestamps, ratings 1-5; users prefer the items of their own third of the catalogue."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(N_USERS):
        group = u % 3
        p = np.where(np.arange(N_ITEMS) // 20 == group, 4.0, 1.0)
        items.append(rng.choice(N_ITEMS, PER_USER, replace=False, p=p / p.sum()))
        users.append(np.full(PER_USER, u))
    u, i = np.concatenate(users), np.concatenate(items)
    frame = pl.DataFrame(
        {
            "user": [f"u{x:02d}" for x in u],
            "item": [f"i{x:02d}" for x in i],
            "timestamp": 1_000_000 + np.arange(len(u), dtype=np.int64) * 60,
            "rating": rng.integers(1, 6, len(u)).astype(np.float64),
        }
    )
    return build_dataset("toy", frame)


@pytest.fixture(scope="session")
def toy() -> Toy:
    ds = toy_dataset()
    split = leave_one_out(ds)
    cfg = RunConfig().updated(
        {
            "model": {"name": "mf", "params": {"factors": 8}},
            "train": {"epochs": 2, "progress": False, "lr": 0.05},
            "eval": {"valid_protocol": "full"},
        }
    )
    return Toy(ds, split, fit(cfg, ds, split, evaluate=False).model)
