"""Which feature fields a run declares: the preset of its ``features`` section, kept to the columns
the dataset has (ids and recent items always; event fields when it has time)."""

from __future__ import annotations

from recfunnel.data.dataset import Dataset
from recfunnel.data.fields import FieldSpec, ItemHistory, movielens_fields
from recfunnel.run.config import CTRSection, FeatureSection

__all__ = ["ctr_fields", "present_fields"]


def present_fields(specs: tuple[FieldSpec, ...], dataset: Dataset) -> tuple[FieldSpec, ...]:
    """`specs` without those whose column the dataset lacks (id and history fields always stay;
    hour / weekday only when the data has timestamps)."""
    out = []
    for spec in specs:
        if isinstance(spec, ItemHistory) or spec.column == "id":
            out.append(spec)
        elif spec.source == "event":
            if dataset.has_time:
                out.append(spec)
        else:
            table = dataset.user_features if spec.source == "user" else dataset.item_features
            if table is not None and spec.column in table.columns:
                out.append(spec)
    return tuple(out)


def ctr_fields(dataset: Dataset, features: FeatureSection, ctr: CTRSection) -> tuple[FieldSpec, ...]:
    """The fields of a CTR run: the MovieLens declarations (``preset = "movielens"``) present in the
    data, or ids, event time and recent items only (``preset = "ids"``)."""
    specs = movielens_fields(history=ctr.history, dense=ctr.dense)
    if features.preset == "ids":
        specs = tuple(s for s in specs if isinstance(s, ItemHistory) or s.column in ("id", "hour", "weekday"))
    return present_fields(specs, dataset)
