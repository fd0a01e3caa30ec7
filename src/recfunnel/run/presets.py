"""Tuned run settings shared by the benchmark suites and the commands that train for themselves
(``recfunnel explain``), written once.

CTR rankers on MovieLens-100K (``ctr-ml100k``), chosen on the valid part only (seed 0): LR's
learning rate (1e-3, 1e-2, 3e-2; batch 256 or 1024), AutoInt's depth and batch (3 or 2 layers;
batch 256 or 1024: 2 layers, 256 gave valid AUC 0.696 against 0.694). Weight decay (1e-6..1e-3)
and larger initialisations did not help on valid. Everything else is the papers' defaults (see
each Config) with Adam at 1e-3, batch 1024.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CTR_PRESETS", "CTR_TRAIN", "ctr_preset"]

#: train settings of the CTR rankers (early stopping on validation AUC)
CTR_TRAIN: dict[str, Any] = {"epochs": 20, "batch_size": 1024, "lr": 1e-3, "patience": 2, "monitor": "auc"}

#: family -> (model params, train settings)
CTR_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "lr": ({}, dict(CTR_TRAIN, lr=1e-2)),
    "fm": ({}, dict(CTR_TRAIN)),
    "widedeep": ({}, dict(CTR_TRAIN)),
    "deepfm": ({}, dict(CTR_TRAIN)),
    "autoint": ({"layers": 2}, dict(CTR_TRAIN, batch_size=256)),
    "dcnv2": ({}, dict(CTR_TRAIN)),
    "dlrm": ({}, dict(CTR_TRAIN)),
    "lightgbm": ({}, {}),
}


def ctr_preset(family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, train settings) of a CTR family, copies that the caller may change."""
    params, train = CTR_PRESETS[family]
    return dict(params), dict(train)
