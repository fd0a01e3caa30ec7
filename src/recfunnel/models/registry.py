"""The registry of model families, filled here explicitly: one line per family, no import done for
its side effect. `recfunnel models` lists it; :func:`recfunnel.models.base.model_class` reads it.

User x item families are built from (n_users, n_items) by :func:`~recfunnel.models.base.build_model`;
field families (the CTR rankers and LightGBM, ``inputs == "fields"``) from a fitted field schema by
:func:`~recfunnel.models.ctr.base.build_ctr`.
"""

from __future__ import annotations

from recfunnel.models.autoencoders import CDAE, AutoRec, MultDAE, MultVAE
from recfunnel.models.baselines import EASE, Popularity
from recfunnel.models.ctr.autoint import AutoInt
from recfunnel.models.ctr.dcnv2 import DCNv2
from recfunnel.models.ctr.deepfm import DeepFM
from recfunnel.models.ctr.dlrm import DLRM
from recfunnel.models.ctr.fm import FM
from recfunnel.models.ctr.gbdt import LightGBMRanker
from recfunnel.models.ctr.lr import LR
from recfunnel.models.ctr.widedeep import WideDeep
from recfunnel.models.ials import IALS
from recfunnel.models.item2vec import Item2Vec
from recfunnel.models.mf import MF
from recfunnel.models.ncf import GMF, MLP, NeuMF
from recfunnel.models.seq.gru4rec import GRU4Rec
from recfunnel.models.seq.sasrec import SASRec
from recfunnel.models.towers import TwoTower

__all__ = ["FIELD_FAMILIES", "MODELS"]

#: family name -> class (user x item models, then the rankers over feature fields)
MODELS: dict[str, type] = {
    cls.family: cls
    for cls in (
        Popularity,
        EASE,
        MF,
        GMF,
        MLP,
        NeuMF,
        Item2Vec,
        TwoTower,
        GRU4Rec,
        SASRec,
        AutoRec,
        CDAE,
        MultDAE,
        MultVAE,
        IALS,
        LR,
        FM,
        WideDeep,
        DeepFM,
        AutoInt,
        DCNv2,
        DLRM,
        LightGBMRanker,
    )
}

#: the families trained on labelled rows of feature fields (CTR rankers, LightGBM)
FIELD_FAMILIES: frozenset[str] = frozenset(n for n, c in MODELS.items() if c.inputs == "fields")
