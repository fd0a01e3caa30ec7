"""Model families; importing this package fills the registry."""

from recfunnel.models import baselines, ctr, mf, ncf, seq  # noqa: F401
from recfunnel.models.base import MODELS, Factorised, FullScorer, Model, ModelConfig, Scorer, build_model

__all__ = ["MODELS", "Factorised", "FullScorer", "Model", "ModelConfig", "Scorer", "build_model"]
