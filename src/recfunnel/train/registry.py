"""The registry of objectives, filled here explicitly (no import done for its side effect).

An objective says which batches a model is trained on and which loss applies; a run names one in
its ``objective`` section (default: the model family's own, ``Model.objective``). The labelled-row
objective of the CTR rankers (:class:`~recfunnel.train.labelled.LabelledBCE`) is built on encoded
rows, not on interactions, and is listed apart in :data:`ROW_OBJECTIVES`.
"""

from __future__ import annotations

from typing import Any

from recfunnel.data.dataset import Interactions
from recfunnel.errors import ConfigError
from recfunnel.train.ae_objectives import AutoRecLoss, DenoisingLogistic, MultinomialLikelihood
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.objectives import Objective, PairwiseBPR, PointwiseBCE
from recfunnel.train.retrieval_objectives import InBatchSoftmax, SkipGramNS
from recfunnel.train.seq_objectives import SeqBCE, SeqBPRMax, SeqCE, SeqSampledCE

__all__ = ["OBJECTIVES", "ROW_OBJECTIVES", "SEQUENCE_OBJECTIVES", "build_objective", "objective_class"]

#: objectives over interactions: name -> class (built with (train, n_users, n_items, **params))
OBJECTIVES: dict[str, type] = {
    cls.name: cls
    for cls in (
        PointwiseBCE,
        PairwiseBPR,
        InBatchSoftmax,
        SkipGramNS,
        SeqBCE,
        SeqCE,
        SeqSampledCE,
        SeqBPRMax,
        MultinomialLikelihood,
        DenoisingLogistic,
        AutoRecLoss,
    )
}
#: the sequence objectives (their windows are as long as the model reads: `max_len`)
SEQUENCE_OBJECTIVES: frozenset[str] = frozenset(c.name for c in (SeqBCE, SeqCE, SeqSampledCE, SeqBPRMax))
#: objectives over encoded labelled rows (CTR rankers)
ROW_OBJECTIVES: dict[str, type] = {LabelledBCE.name: LabelledBCE}


def objective_class(name: str) -> type:
    """The class registered as `name`; an unknown name gives the list of valid ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        valid = ", ".join(sorted([*OBJECTIVES, *ROW_OBJECTIVES]))
        raise ConfigError(f"unknown objective {name!r}; valid: {valid}") from None


def build_objective(name: str, train: Interactions, n_users: int, n_items: int, **params: Any) -> Objective:
    """Objective `name` over the training interactions; bad parameters are named with the valid ones."""
    cls = objective_class(name)
    try:
        return cls(train, n_users, n_items, **params)
    except TypeError as e:
        raise ConfigError(f"objective {name!r}: {e}") from None
