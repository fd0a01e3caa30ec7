"""CTR rankers on field batches; importing this package registers them (LightGBM is apart: it is
not a torch model and is not registered)."""

from recfunnel.models.ctr import autoint, dcnv2, deepfm, dlrm, fm, lr, widedeep  # noqa: F401
from recfunnel.models.ctr.base import CTRConfig, CTRModel, FieldRanker, FieldScorer, build_ctr
from recfunnel.models.ctr.gbdt import LightGBMConfig, LightGBMRanker
from recfunnel.models.ctr.persist import load_ctr, save_ctr

__all__ = [
    "CTRConfig",
    "CTRModel",
    "FieldRanker",
    "FieldScorer",
    "LightGBMConfig",
    "LightGBMRanker",
    "build_ctr",
    "load_ctr",
    "save_ctr",
]
