"""Model families; importing this package fills the registry."""

from recfunnel.models import baselines, ctr, item2vec, mf, ncf, seq, towers  # noqa: F401
from recfunnel.models.base import MODELS, Factorised, FullScorer, Model, ModelConfig, Scorer, build_model

__all__ = ["MODELS", "Factorised", "FullScorer", "Model", "ModelConfig", "Scorer", "build_model"]
