"""Model families. The registry (name -> class) is :data:`recfunnel.models.registry.MODELS`."""

from recfunnel.models.base import Factorised, FullScorer, Model, ModelConfig, Scorer, build_model
from recfunnel.models.registry import MODELS

__all__ = ["MODELS", "Factorised", "FullScorer", "Model", "ModelConfig", "Scorer", "build_model"]
