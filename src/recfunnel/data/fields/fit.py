"""Fitting declared fields on the train rows: vocabularies (with min_count), bucket edges,
normalisation statistics. Later rows see values unseen in training as UNK."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.data.fields.declare import FieldSchema, FieldSpec, FittedField, ItemHistory, MultiHot, Numeric
from recfunnel.data.fields.values import Events, list_values, scalar_values


def _fit_vocab(values: np.ndarray, min_count: int) -> tuple[str, ...]:
    v = values[values != None]  # noqa: E711  (object array: elementwise comparison)
    if len(v) == 0:
        return ()
    uniq, counts = np.unique(v.astype(str), return_counts=True)
    return tuple(uniq[counts >= min_count].tolist())


def fit_schema(specs: Sequence[FieldSpec], dataset: Dataset, rows: np.ndarray) -> FieldSchema:
    """Fit every field on the interaction `rows` (the train part): vocabularies with their
    min_count, quantile bucket edges, mean/std. Later rows see unseen values as UNK."""
    ints = dataset.interactions.take(rows)
    ev = Events(ints.user, ints.item, ints.timestamp)
    fitted: list[FittedField] = []
    for spec in specs:
        if isinstance(spec, ItemHistory):
            fitted.append(_fit_history(spec, fitted))
        elif isinstance(spec, MultiHot):
            flat, offsets = list_values(dataset, spec, ev)
            vocab = _fit_vocab(flat, spec.min_count)
            longest = int(np.diff(offsets).max(initial=1))
            fitted.append(
                FittedField(
                    spec.name,
                    "multi_hot",
                    spec.source,
                    spec.column,
                    cardinality=len(vocab) + 2,
                    vocab=vocab,
                    pooling=spec.pooling,
                    max_len=max(1, min(longest, spec.max_len or longest)),
                )
            )
        elif isinstance(spec, Numeric):
            x = scalar_values(dataset, spec, ev)
            mean = float(np.nanmean(x)) if np.isfinite(x).any() else 0.0
            std = float(np.nanstd(x)) if np.isfinite(x).any() else 1.0
            fitted.append(
                FittedField(spec.name, "numeric", spec.source, spec.column, mean=mean, std=std or 1.0)
            )
        elif spec.buckets is not None:
            x = scalar_values(dataset, spec, ev)
            edges = spec.buckets
            if isinstance(edges, int):
                edges = tuple(np.unique(np.nanquantile(x, np.linspace(0, 1, edges + 1)[1:-1])).tolist())
            edges = tuple(float(e) for e in edges)
            fitted.append(
                FittedField(
                    spec.name,
                    "categorical",
                    spec.source,
                    spec.column,
                    cardinality=len(edges) + 3,
                    edges=edges,
                )
            )
        else:
            vocab = _fit_vocab(scalar_values(dataset, spec, ev), spec.min_count)
            fitted.append(
                FittedField(
                    spec.name,
                    "categorical",
                    spec.source,
                    spec.column,
                    cardinality=len(vocab) + 2,
                    vocab=vocab,
                    prefix=spec.prefix,
                )
            )
    return FieldSchema(tuple(fitted))


def _fit_history(spec: ItemHistory, fitted: list[FittedField]) -> FittedField:
    target = next((f for f in fitted if f.name == spec.shares), None)
    if target is None or target.kind != "categorical" or target.source != "item" or target.column != "id":
        raise ValueError(
            f"history field {spec.name!r} shares {spec.shares!r}, which must be declared before it as "
            "Categorical(source='item', column='id')"
        )
    return FittedField(
        spec.name,
        "sequence",
        "event",
        "history",
        cardinality=target.cardinality,
        pooling=spec.pooling,
        max_len=spec.max_len,
        shares=spec.shares,
    )
