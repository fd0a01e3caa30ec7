"""Feature fields: a declared schema, fitted on a train part, encoded into tensors by vectorised ops.

* :mod:`.declare` - the field kinds (:class:`Categorical`, :class:`MultiHot`, :class:`Numeric`,
  :class:`ItemHistory`), :class:`FittedField` and :class:`FieldSchema`; codes ``PAD = 0``,
  ``UNK = 1``, ``2..`` the vocabulary;
* :mod:`.batch` - :class:`FieldBatch` (encoded rows keyed by field) and :class:`CTRPart`;
* :mod:`.values` - raw values of a field for a set of events (:func:`event_columns`);
* :mod:`.fit` - :func:`fit_schema` on the train rows only;
* :mod:`.encode` - :func:`encode_events` (:class:`EventEncoder` for repeated calls),
  :func:`encode_rows` and :func:`ctr_parts`.

The MovieLens CTR task (:func:`movielens_fields`, ``ML_AGE_EDGES``, ``ML_YEAR_EDGES``) lives in
:mod:`recfunnel.data.movielens`; its names are re-exported here on first use (that module imports
the declarations, so importing it eagerly here would be circular).
"""

from __future__ import annotations

from typing import Any

from recfunnel.data.fields.batch import CTRPart, FieldBatch
from recfunnel.data.fields.declare import (
    EVENT_COLUMNS,
    PAD,
    UNK,
    Categorical,
    FieldSchema,
    FieldSpec,
    FittedField,
    ItemHistory,
    MultiHot,
    Numeric,
    Pooling,
    Source,
)
from recfunnel.data.fields.encode import EventEncoder, ctr_parts, encode_events, encode_rows
from recfunnel.data.fields.fit import fit_schema
from recfunnel.data.fields.values import event_columns

__all__ = [
    "EVENT_COLUMNS",
    "ML_AGE_EDGES",
    "ML_YEAR_EDGES",
    "PAD",
    "UNK",
    "Categorical",
    "CTRPart",
    "EventEncoder",
    "FieldBatch",
    "FieldSchema",
    "FieldSpec",
    "FittedField",
    "ItemHistory",
    "MultiHot",
    "Numeric",
    "Pooling",
    "Source",
    "ctr_parts",
    "encode_events",
    "encode_rows",
    "event_columns",
    "fit_schema",
    "movielens_fields",
]

_MOVIELENS = ("ML_AGE_EDGES", "ML_YEAR_EDGES", "movielens_fields")


def __getattr__(name: str) -> Any:
    if name in _MOVIELENS:
        from recfunnel.data import movielens

        return getattr(movielens, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
