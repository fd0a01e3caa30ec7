"""CTR rankers on field batches (LR, FM, Wide&Deep, DeepFM, AutoInt, DCNv2, DLRM) and a LightGBM
baseline on the same fields. They are listed in :mod:`recfunnel.models.registry`, trained and saved
through :mod:`recfunnel.run` (one artifact format for every family)."""

from recfunnel.models.ctr.base import CTRConfig, CTRModel, FieldRanker, FieldScorer, build_ctr
from recfunnel.models.ctr.gbdt import LightGBMConfig, LightGBMRanker

__all__ = [
    "CTRConfig",
    "CTRModel",
    "FieldRanker",
    "FieldScorer",
    "LightGBMConfig",
    "LightGBMRanker",
    "build_ctr",
]
