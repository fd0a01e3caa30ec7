"""What the CTR rankers share: a base class over a field schema, their capability, and an adapter
that scores candidate (user, item) pairs for the funnel.

A CTR model is a *field scorer*: ``score_fields(batch) -> logits [B]`` for rows of encoded fields
(:class:`recfunnel.data.fields.FieldBatch`). It is not a user x item scorer; at request time
:class:`FieldRanker` builds the field rows of each candidate pair (the user's table values, the
item's, the request time, the user's history before it) and scores them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import Field

from recfunnel.data.dataset import Dataset, Interactions
from recfunnel.data.fields import EventEncoder, FieldBatch, FieldSchema
from recfunnel.errors import ConfigError
from recfunnel.models.base import Model, ModelConfig
from recfunnel.nn.device import module_device


@runtime_checkable
class FieldScorer(Protocol):
    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        """Logits [B] for B rows of fields."""
        ...


class CTRConfig(ModelConfig):
    """Hyper-parameters every CTR model has."""

    embedding_dim: int = Field(16, ge=1, description="embedding dimension shared by all fields")
    init_std: float = Field(1e-2, ge=0, description="std of the embedding initialisation")
    sparse: bool = Field(
        False, description="sparse gradients for the embedding tables (stepped by RowAdam, a lazy row Adam)"
    )


class CTRModel(Model):
    """Base of the rankers: built from a fitted :class:`FieldSchema`, trained on labelled rows
    (objective "labelled", :mod:`recfunnel.train.labelled`), scores rows with `score_fields`."""

    Config: ClassVar[type[ModelConfig]] = CTRConfig
    objective: ClassVar[str] = "labelled"
    inputs: ClassVar[str] = "fields"

    def __init__(self, config: CTRConfig, schema: FieldSchema) -> None:
        # n_users / n_items are the id-field vocabularies (PAD and UNK included), 0 without one
        sizes = {f.name: f.cardinality for f in schema}
        super().__init__(config, sizes.get("user_id", 0), sizes.get("item_id", 0))
        self.schema = schema

    def score_fields(self, batch: FieldBatch) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: FieldBatch) -> torch.Tensor:
        return self.score_fields(batch)

    def extra_state_for_save(self) -> dict[str, Any]:
        return {"schema": self.schema.to_json()}


def build_ctr(name: str, schema: FieldSchema, config: dict[str, Any] | ModelConfig | None = None) -> CTRModel:
    """Build a registered CTR family on a fitted schema; the error lists the valid names."""
    from recfunnel.models.registry import FIELD_FAMILIES, MODELS

    if name not in FIELD_FAMILIES:
        raise ConfigError(f"unknown CTR model {name!r}; valid: {', '.join(sorted(FIELD_FAMILIES))}")
    cls = MODELS[name]
    cfg = config if isinstance(config, ModelConfig) else cls.Config(**(config or {}))
    return cls(cfg, schema)


class FieldRanker:
    """Scores candidate items for users at request time with a field scorer (a funnel ranker).

    `score(users [B], items [B, C], timestamp)` encodes the B*C (user, item) pairs with the time
    of the request and each user's history in `log` strictly before it, and returns logits
    [B, C], so a CTR model answers the same call as the user x item scorers.
    """

    def __init__(
        self, model: FieldScorer, schema: FieldSchema, dataset: Dataset, log: Interactions | None = None
    ) -> None:
        self.model, self.schema, self.dataset = model, schema, dataset
        self.log = dataset.interactions if log is None else log
        self.encoder = EventEncoder(schema, dataset, self.log)  # table encodings made once

    @torch.no_grad()
    def score(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        timestamp: int | None = None,
        recent: tuple[Any, Any] | None = None,
    ) -> torch.Tensor:
        """users [B], items [B, C] (dataset indices; -1 = unknown) -> logits [B, C]. `timestamp`
        (unix seconds) defaults to one second after the last logged event. `recent`: each user's
        recent items (indptr [B + 1], items, oldest first) as the history field, instead of the
        log's events before `timestamp` (a request's fresh events; an anonymous visitor's items)."""
        b, c = items.shape
        t = int(self.log.timestamp.max()) + 1 if timestamp is None else int(timestamp)
        u = np.repeat(users.cpu().numpy().astype(np.int64), c)
        i = items.reshape(-1).cpu().numpy().astype(np.int64)
        per_row = None
        if recent is not None:  # each user's list repeated for its C candidates
            indptr, flat = (np.asarray(x, np.int64) for x in recent)
            owner = np.repeat(np.arange(b), c)
            lengths = np.diff(indptr)[owner]
            row_ptr = np.zeros(b * c + 1, np.int64)
            np.cumsum(lengths, out=row_ptr[1:])
            pos = np.arange(int(row_ptr[-1])) - np.repeat(row_ptr[:-1], lengths)
            per_row = (row_ptr, flat[np.repeat(indptr[:-1][owner], lengths) + pos])
        times = np.full(b * c, t, np.int64)
        batch = self.encoder.encode(u, i, times, recent=per_row)
        device = module_device(self.model)
        if device.type != "cpu":  # encoded on the CPU (tables, the log), scored where the model is
            batch = batch.to(device)
        if getattr(self.model, "training", False):  # eval() walks every submodule: only when needed
            self.model.eval()
        return self.model.score_fields(batch).reshape(b, c)
