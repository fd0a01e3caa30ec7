"""Shared layers the models are composed of."""

from recfunnel.nn.attention import FieldSelfAttention
from recfunnel.nn.embeddings import FieldEmbedding, FieldLinear, numeric_values
from recfunnel.nn.interactions import CrossLayer, CrossNetwork, DotInteraction, FMInteraction, pairwise_terms
from recfunnel.nn.mlp import MLP, set_mlp_dtype

__all__ = [
    "MLP",
    "CrossLayer",
    "CrossNetwork",
    "DotInteraction",
    "FMInteraction",
    "FieldEmbedding",
    "FieldLinear",
    "FieldSelfAttention",
    "numeric_values",
    "pairwise_terms",
    "set_mlp_dtype",
]
