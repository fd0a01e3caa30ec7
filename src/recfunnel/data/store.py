"""A :class:`~recfunnel.data.dataset.Dataset` written to a folder and read back without the source
files: what a funnel bundle carries so that a service answers from it alone (the interactions its
models and features read, the vocabularies, the user / item feature tables).

    write_dataset(dataset, folder)      # into a folder being built (e.g. inside atomic_dir)
    dataset = read_dataset(folder)

Files (no pickle): ``interactions.npz`` (int64 / float32 arrays, read with allow_pickle=False),
``vocab_users.json`` / ``vocab_items.json`` (raw ids in index order), ``user_features.parquet`` /
``item_features.parquet`` (when the dataset has them), ``dataset.json`` (name, source, notes, which
columns exist). The caller checksums the folder (a bundle does); this module checks shapes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.vocab import Vocab

__all__ = ["DATASET_FILES", "read_dataset", "write_dataset"]

#: files the store may write (the two feature tables only when the dataset has them)
DATASET_FILES = (
    "dataset.json",
    "interactions.npz",
    "vocab_users.json",
    "vocab_items.json",
    "user_features.parquet",
    "item_features.parquet",
)
_COLUMNS = ("user", "item", "timestamp", "rating", "weight", "order")


def write_dataset(dataset: Dataset, folder: str | os.PathLike[str]) -> Path:
    """Write `dataset` into `folder` (created if missing; files of the same names are replaced)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ints = dataset.interactions
    arrays = {c: getattr(ints, c) for c in _COLUMNS if getattr(ints, c) is not None}
    with open(folder / "interactions.npz", "wb") as fh:
        np.savez(fh, **arrays)
    for name, vocab in (("users", dataset.users), ("items", dataset.items)):
        (folder / f"vocab_{name}.json").write_text(json.dumps(list(vocab.ids)), encoding="utf-8")
    for name, table in (("user_features", dataset.user_features), ("item_features", dataset.item_features)):
        if table is not None:
            table.write_parquet(folder / f"{name}.parquet")
    meta = {
        "name": dataset.name,
        "source": dataset.source,
        "notes": list(dataset.notes),
        "columns": sorted(arrays),
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "rows": len(ints),
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return folder


def _vocab(folder: Path, name: str, noun: str) -> Vocab:
    ids = json.loads((folder / f"vocab_{name}.json").read_text(encoding="utf-8"))
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"{folder / f'vocab_{name}.json'} must hold a JSON list of id strings")
    return Vocab(tuple(ids), name=noun)


def _table(path: Path, rows: int) -> pl.DataFrame | None:
    if not path.is_file():
        return None
    table = pl.read_parquet(path)
    if len(table) != rows:
        raise ValueError(f"{path} has {len(table)} rows; the vocabulary has {rows}")
    return table


def read_dataset(folder: str | os.PathLike[str]) -> Dataset:
    """The dataset :func:`write_dataset` wrote into `folder`; ValueError naming the file that does
    not match the others."""
    folder = Path(folder)
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    users, items = _vocab(folder, "users", "user"), _vocab(folder, "items", "item")
    with np.load(folder / "interactions.npz", allow_pickle=False) as npz:
        arrays = {c: npz[c] for c in _COLUMNS if c in npz.files}
    if sorted(arrays) != sorted(meta.get("columns", [])) or "user" not in arrays or "item" not in arrays:
        raise ValueError(f"{folder / 'interactions.npz'} holds {sorted(arrays)}; dataset.json lists {meta}")
    n = len(arrays["user"])
    if n != meta.get("rows"):
        rows = meta.get("rows")
        raise ValueError(f"{folder / 'interactions.npz'} holds {n} rows; dataset.json says {rows}")
    for c, limit in (("user", len(users)), ("item", len(items))):
        a = arrays[c]
        if n and (a.min() < 0 or a.max() >= limit):
            raise ValueError(f"{folder / 'interactions.npz'}: {c} indices outside the vocabulary of {limit}")
    return Dataset(
        name=str(meta.get("name", "dataset")),
        interactions=Interactions(**arrays),
        users=users,
        items=items,
        user_features=_table(folder / "user_features.parquet", len(users)),
        item_features=_table(folder / "item_features.parquet", len(items)),
        source=str(meta.get("source", "")),
        notes=tuple(meta.get("notes", ())),
    )
