"""Building a two-tower model from a dataset: the feature work the model itself does not do.

:func:`build_two_tower` declares the MovieLens tower fields the dataset has
(:func:`recfunnel.data.movielens.movielens_tower_fields`), fits them on the training rows, encodes
every user and every item, builds each user's recent training items and (``use_text``) the item
text vectors, and hands the tables to :meth:`recfunnel.models.towers.TwoTower.set_tables`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.fields import (
    PAD,
    FieldSchema,
    FieldSpec,
    FittedField,
    ItemHistory,
    encode_events,
    fit_schema,
)
from recfunnel.data.movielens import movielens_tower_fields
from recfunnel.data.sequences import tail_codes, user_sequences
from recfunnel.data.splits import Split
from recfunnel.models.towers import TwoTower, TwoTowerConfig
from recfunnel.text import encode_texts, item_texts

__all__ = ["build_two_tower", "tower_fields", "tower_tables"]


def tower_fields(dataset: Dataset, cfg: TwoTowerConfig) -> tuple[FieldSpec, ...]:
    """The MovieLens tower fields whose columns this dataset has (ids and history always)."""
    out = []
    for spec in movielens_tower_fields(cfg.zip_prefix, cfg.history_len):
        if isinstance(spec, ItemHistory) or spec.column == "id":
            out.append(spec)
            continue
        table = dataset.user_features if spec.source == "user" else dataset.item_features
        if table is not None and spec.column in table.columns:
            out.append(spec)
    return tuple(out)


def _recent_items(
    f: FittedField, item_codes: torch.Tensor, dataset: Dataset, rows: np.ndarray
) -> torch.Tensor:
    """int64 [n_users, max_len]: each user's last `max_len` items of the `rows` part (in time order,
    most recent last, PAD on the left), as codes of the item-id field."""
    indptr, items = user_sequences(dataset.interactions.take(rows), dataset.n_users)
    return torch.from_numpy(tail_codes(indptr.numpy(), items.numpy(), item_codes.numpy(), f.max_len, PAD))


def tower_tables(schema: FieldSchema, dataset: Dataset, train_rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Codes of every user (user fields) and every item (item fields), and each user's recent
    items of the training rows (sequence fields): the ``codes`` of :meth:`TwoTower.set_tables`."""
    plain = FieldSchema(tuple(f for f in schema if f.kind != "sequence"))
    nu, ni = dataset.n_users, dataset.n_items
    by_user = encode_events(plain, dataset, np.arange(nu), np.full(nu, -1), None)
    by_item = encode_events(plain, dataset, np.full(ni, -1), np.arange(ni), None)
    codes = {f.name: (by_user if f.source == "user" else by_item)[f.name] for f in plain}
    for f in schema:
        if f.kind == "sequence":
            codes[f.name] = _recent_items(f, codes[f.shares], dataset, train_rows)  # type: ignore[index]
    return codes


def build_two_tower(
    dataset: Dataset,
    split: Split | None = None,
    params: TwoTowerConfig | dict | None = None,
    *,
    train_rows: np.ndarray | None = None,
    text_vectors: np.ndarray | None = None,
    text_cache_dir: str | Path | None = None,
) -> TwoTower:
    """A two-tower model whose field schema is fitted on the training rows, with its code tables,
    recent items and (``use_text``) text vectors filled.

    Args:
        dataset: the data, with user / item feature tables where it has them.
        split: its training part is what the fields are fitted on and the recent items come from.
        params: a :class:`TwoTowerConfig` or its fields as a dict (default: the defaults).
        train_rows: int64 interaction rows to fit on instead of ``split.train`` (default: all rows
            when there is no split either).
        text_vectors: float32 [n_items, text_dim] item text vectors; computed from the item texts
            (:mod:`recfunnel.text`, cached in `text_cache_dir`) when ``use_text`` and absent.
    The weights are drawn from torch's global generator: seed it first for a reproducible model.
    """
    cfg = params if isinstance(params, TwoTowerConfig) else TwoTowerConfig(**(params or {}))
    if train_rows is None:
        train_rows = split.train if split is not None else np.arange(len(dataset.interactions))
    train_rows = np.sort(np.asarray(train_rows, np.int64))
    schema = fit_schema(tower_fields(dataset, cfg), dataset, train_rows)
    model = TwoTower(
        cfg.model_copy(update={"fields_json": schema.to_json()}), dataset.n_users, dataset.n_items
    )
    codes = tower_tables(model.schema, dataset, train_rows)
    text = None
    if cfg.use_text:
        if text_vectors is None:
            text_vectors = encode_texts(item_texts(dataset), cache_dir=text_cache_dir)
        text = torch.as_tensor(np.asarray(text_vectors, np.float32))
    model.set_tables(codes, text)
    return model
