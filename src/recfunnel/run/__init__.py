"""The one door between the library (data, nn, models, train, eval, index) and its shells (CLI,
bench, funnel, service): a typed :class:`RunConfig` -> :func:`fit` (any family) -> evaluation ->
artifact."""

from recfunnel.run.config import (
    CTRSection,
    DataConfig,
    EvalSection,
    FeatureSection,
    ModelSection,
    ObjectiveSection,
    RunConfig,
    SplitConfig,
    TrainConfig,
)

__all__ = [
    "CTRSection",
    "DataConfig",
    "EvalSection",
    "FeatureSection",
    "ModelSection",
    "ObjectiveSection",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
]
