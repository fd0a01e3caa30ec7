"""The one door between the library (data, nn, models, train, eval, index) and its shells (CLI,
bench, funnel, service): a typed :class:`RunConfig` -> :func:`fit` (any family) -> evaluation ->
artifact.

    res = fit(RunConfig.from_toml("examples/neumf.toml"), out="artifacts/neumf")
    res.results                     # test-part Results of the run's eval section
    art = load_model("artifacts/neumf")
"""

from recfunnel.run.artifact import Loaded, load_model, save_fit, save_model
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
from recfunnel.run.evaluate import evaluate_model, evaluate_run, folded_rows
from recfunnel.run.fit import FitResult, fit, load_data, load_split
from recfunnel.run.scoring import CandidateScorer, candidate_scorer

__all__ = [
    "CTRSection",
    "CandidateScorer",
    "DataConfig",
    "EvalSection",
    "FeatureSection",
    "FitResult",
    "Loaded",
    "ModelSection",
    "ObjectiveSection",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
    "candidate_scorer",
    "evaluate_model",
    "evaluate_run",
    "folded_rows",
    "fit",
    "load_data",
    "load_model",
    "load_split",
    "save_fit",
    "save_model",
]
