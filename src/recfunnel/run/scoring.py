"""One adapter for every family: score candidate items for users (the call the funnel's ranker
stage, the Recommender and the model contract make).

User x item models score (user, item) pairs themselves. Field families (CTR rankers, LightGBM)
read feature fields: :class:`FieldModelScorer` encodes each (user, candidate) pair with the user's
and item's table values, the request time and the user's history before it
(:class:`~recfunnel.models.ctr.base.FieldRanker`) and scores the rows.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from recfunnel.data.dataset import Dataset
from recfunnel.data.splits import Split
from recfunnel.models.base import Model
from recfunnel.models.ctr.base import FieldRanker

__all__ = ["CandidateScorer", "FieldModelScorer", "ModelScorer", "candidate_scorer"]


@runtime_checkable
class CandidateScorer(Protocol):
    n_items: int

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [B], candidate items [B, C] (dataset indices) -> scores [B, C]."""
        ...

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] -> scores [B, n_items] of every item."""
        ...


class ModelScorer:
    """A user x item model as a candidate scorer (its own `score` / `score_all`)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.n_items = model.n_items

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.model.score(users, items)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.model.score_all(users)


class FieldModelScorer:
    """A field family (CTR ranker or LightGBM) as a candidate scorer over `dataset`'s items; the
    users' histories come from `log` (default: all interactions) before the request time."""

    def __init__(self, model: Any, dataset: Dataset, log: Any = None, item_chunk: int = 512) -> None:
        self.ranker = FieldRanker(model, model.schema, dataset, log)
        self.n_items = dataset.n_items
        self.item_chunk = item_chunk

    @torch.no_grad()
    def score(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        timestamp: int | None = None,
        recent: tuple[Any, Any] | None = None,
    ) -> torch.Tensor:
        """See :meth:`~recfunnel.models.ctr.base.FieldRanker.score` (`recent`: request-time histories)."""
        return self.ranker.score(users, items, timestamp, recent)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, self.n_items, self.item_chunk):
            items = torch.arange(start, min(start + self.item_chunk, self.n_items))
            out.append(self.score(users, items.expand(len(users), -1)))
        return torch.cat(out, dim=1) if out else torch.zeros(len(users), 0)


def candidate_scorer(
    model: Any, dataset: Dataset | None = None, split: Split | None = None
) -> CandidateScorer:
    """The candidate scorer of any fitted model. Field families need the `dataset` (feature
    tables); their histories are the `split`'s train + valid rows when given."""
    if getattr(model, "inputs", "user-item") != "fields":
        return ModelScorer(model)
    if dataset is None:
        raise ValueError(
            f"a {model.family!r} ranker scores items through their feature fields: give the dataset"
        )
    log = None
    if split is not None:
        log = dataset.interactions.take(np.sort(np.concatenate([split.train, split.valid])))
    return FieldModelScorer(model, dataset, log)
