"""The fold-in of the run layer (``recfunnel.run.folded_rows``) that the ae-ml100k suite relies on:
user-row autoencoders score the test part from train + valid rows, restored after."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import torch

from recfunnel.bench.ae import AE_ENTRIES
from recfunnel.data.dataset import build_dataset
from recfunnel.data.splits import make_split
from recfunnel.models.base import build_model
from recfunnel.run import folded_rows


def _toy():
    rng = np.random.default_rng(0)
    rows = [(u, int(i), t) for u in range(20) for t, i in enumerate(rng.choice(30, 6, replace=False))]
    frame = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    ds = build_dataset("toy", frame)
    return ds, make_split(ds, "leave_one_out")


def _model(family: str, ds, split):
    torch.manual_seed(0)
    model = build_model(
        family, ds.n_users, ds.n_items, {"dims": (16, 4)} if family.startswith("mult") else {}
    )
    model.set_matrix(split.part(ds, "train").matrix(ds.n_users, ds.n_items))
    return model.eval()


def _res(model, ds, split):
    """What folded_rows reads of a FitResult."""
    config = SimpleNamespace(data=SimpleNamespace(values="binary"))
    return SimpleNamespace(model=model, dataset=ds, split=split, config=config)


def test_row_autoencoders_score_the_test_part_from_train_and_valid_rows():
    ds, split = _toy()
    model = _model("mult-vae", ds, split)
    users = torch.arange(ds.n_users)
    train_only = model.user_vectors(users)
    assert AE_ENTRIES["Mult-VAE"].fold_in
    with folded_rows(_res(model, ds, split), "test") as folded:
        assert folded
        _check_folded(model, ds, split, users, train_only)
    torch.testing.assert_close(model.user_vectors(users), train_only)  # restored
    with folded_rows(_res(model, ds, split), "valid") as folded:  # valid reads train rows only
        assert not folded


def _check_folded(model, ds, split, users, train_only):
    both = np.sort(np.concatenate([split.train, split.valid]))
    m = ds.interactions.take(both).matrix(ds.n_users, ds.n_items)
    indptr = torch.from_numpy(m.indptr.astype(np.int64))
    items = torch.from_numpy(m.indices.astype(np.int64))
    torch.testing.assert_close(
        model.user_vectors(users), model.user_vectors_from_recent(users, indptr, items)
    )
    assert not torch.allclose(model.user_vectors(users), train_only)


def test_no_fold_in_for_the_train_rows_entry_nor_for_models_without_rows():
    ds, split = _toy()
    vae = _model("mult-vae", ds, split)
    assert not AE_ENTRIES["Mult-VAE-train-rows"].fold_in
    with folded_rows(_res(vae, ds, split), "test", enabled=False) as folded:
        assert not folded and vae.folded is None
    mf = build_model("mf", ds.n_users, ds.n_items, {})
    with folded_rows(_res(mf, ds, split), "test") as folded:
        assert not folded
