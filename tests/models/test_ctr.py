"""The CTR rankers and LightGBM: the model contract (fit through recfunnel.run, scored for candidate
items through their feature fields, saved and loaded as one artifact) on the synthetic dataset,
plus what a field scorer does on its encoded rows; and, where the data root has ml-100k, each
ranker learning on a small real slice (the earliest 20% of events, temporal 80/10/10)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from contract import ModelContract, Slice

from recfunnel.artifacts import ArtifactError
from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import temporal
from recfunnel.errors import ConfigError
from recfunnel.models.base import build_model
from recfunnel.models.ctr import CTRModel, FieldScorer, build_ctr
from recfunnel.run import RunConfig, candidate_scorer, fit, load_model, save_fit
from recfunnel.settings import has_dataset


class FieldFamilyChecks:
    """What a field family does beyond the contract: one logit per encoded row, and unknown
    candidates (-1) scored from their other fields."""

    def test_scores_one_logit_per_encoded_row(self, fitted):
        model = fitted.model
        assert isinstance(model, FieldScorer) and model.inputs == "fields"
        batch = fitted.res.parts["test"].fields.take(slice(0, 7))
        out = model.score_fields(batch)
        assert out.shape == (7,) and out.dtype == torch.float32 and torch.isfinite(out).all()
        if isinstance(model, CTRModel):
            assert model.objective == "labelled" and model.schema is fitted.res.schema

    def test_unknown_candidate_items_are_scored_from_their_other_fields(self, fitted):
        scorer = candidate_scorer(fitted.model, fitted.dataset, fitted.data.split)
        scores = scorer.score(torch.tensor([0, 5]), torch.tensor([[0, 1, 2], [3, 4, -1]]))
        assert scores.shape == (2, 3) and torch.isfinite(scores).all()


class TestLR(ModelContract, FieldFamilyChecks):
    family = "lr"
    train = {"lr": 1e-2}


class TestFM(ModelContract, FieldFamilyChecks):
    family = "fm"
    params = {"embedding_dim": 4}


class TestWideDeep(ModelContract, FieldFamilyChecks):
    family = "widedeep"
    params = {"embedding_dim": 4, "hidden": (16,)}


class TestDeepFM(ModelContract, FieldFamilyChecks):
    family = "deepfm"
    params = {"embedding_dim": 4, "hidden": (16,)}


class TestAutoInt(ModelContract, FieldFamilyChecks):
    family = "autoint"
    params = {"embedding_dim": 4, "layers": 2, "attention_dim": 4}

    def test_attention_weights_per_field_pair_sum_to_one(self, fitted):
        model, schema = fitted.model, fitted.res.schema
        w = model.attention_weights(fitted.res.parts["test"].fields.take(slice(0, 5)))
        f = len(schema)
        assert w.shape == (5, 2, model.config.heads, f, f)
        torch.testing.assert_close(w.sum(-1), torch.ones(5, 2, model.config.heads, f))


class TestDCNv2(ModelContract, FieldFamilyChecks):
    family = "dcnv2"
    params = {"embedding_dim": 4, "hidden": (16,), "cross_layers": 2}


class TestDCNv2Parallel(ModelContract, FieldFamilyChecks):
    family = "dcnv2"
    params = {"embedding_dim": 4, "hidden": (16,), "cross_layers": 2, "structure": "parallel", "low_rank": 2}


class TestDLRM(ModelContract, FieldFamilyChecks):
    family = "dlrm"
    params = {"embedding_dim": 4, "bottom": (8,), "top": (8,)}


class TestLightGBM(ModelContract, FieldFamilyChecks):
    family = "lightgbm"
    params = {"max_rounds": 8, "min_data_in_leaf": 5, "num_threads": 1}

    def test_features_are_one_column_per_field_value_and_the_model_is_text(self, fitted):
        model, schema = fitted.model, fitted.res.schema
        test = fitted.res.parts["test"]
        x, cat, names = model.features(test.fields)
        assert x.shape == (len(test), len(names))
        assert len(cat) == sum(f.kind == "categorical" for f in schema)
        assert model.n_params() > 0 and model.to_text().startswith("tree")


# ---- building and artifacts ---------------------------------------------------------------------
@pytest.mark.parametrize("family", ["fm", "deepfm", "dlrm", "lightgbm"])
def test_build_model_refuses_field_families_with_the_way_to_build_them(family):
    with pytest.raises(ConfigError, match="CTR ranker over a field schema.*build_ctr.*recfunnel.run.fit"):
        build_model(family, 10, 20)


def test_build_ctr_names_the_valid_families(ctr_slice: Slice):
    res = fit(_quick("fm"), ctr_slice.dataset, ctr_slice.split, evaluate=False)
    with pytest.raises(ConfigError, match="unknown CTR model 'mf'; valid: autoint, dcnv2"):
        build_ctr("mf", res.schema)


def _quick(family: str, **params) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name": family, "params": params},
            "split": {"method": "temporal"},
            "train": {"epochs": 1, "batch_size": 256, "progress": False},
        }
    )


@pytest.mark.parametrize(
    ("family", "params", "damaged"),
    [("fm", {"embedding_dim": 4}, "weights.safetensors"), ("lightgbm", {"max_rounds": 3}, "lightgbm.txt")],
)
def test_a_damaged_artifact_is_refused_naming_the_file(ctr_slice: Slice, tmp_path, family, params, damaged):
    res = fit(_quick(family, **params), ctr_slice.dataset, ctr_slice.split, evaluate=False)
    path = save_fit(res, tmp_path / family)
    target = path / damaged
    data = target.read_bytes()
    target.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:]))
    with pytest.raises(ArtifactError, match=rf"{damaged.replace('.', '[.]')} is corrupt"):
        load_model(path)


def test_a_field_artifact_is_refused_for_another_dataset(ctr_slice: Slice, tmp_path):
    from recfunnel.recommender import Recommender

    res = fit(_quick("lr"), ctr_slice.dataset, ctr_slice.split, evaluate=False)
    path = save_fit(res, tmp_path / "lr")
    other = ctr_slice.dataset.subset(np.arange(len(ctr_slice.dataset.interactions) - 1))
    with pytest.raises(ValueError, match="fingerprints differ"):
        Recommender.load(path, dataset=other)


def test_a_field_family_needs_the_dataset_to_score_candidates(ctr_slice: Slice):
    res = fit(_quick("lr"), ctr_slice.dataset, ctr_slice.split, evaluate=False)
    with pytest.raises(ValueError, match="give the dataset"):
        candidate_scorer(res.model)


# ---- learning on real data ----------------------------------------------------------------------
#: a constant scorer has AUC 0.5; LR gets ~0.66-0.69 on the real slice
REAL_MIN_AUC = 0.62
REAL_TRAIN = {"epochs": 2, "batch_size": 512, "lr": 3e-3, "patience": 0, "progress": False}
#: family -> (params, train overrides, whether it must beat LR: the deep models with an MLP do)
REAL_FAMILIES: dict[str, tuple[dict, dict, bool]] = {
    "lr": ({}, {"lr": 1e-2}, False),
    "fm": ({}, {}, False),
    "widedeep": ({"embedding_dim": 8, "hidden": (32, 16)}, {}, True),
    "deepfm": ({"hidden": (32, 32)}, {}, True),
    "autoint": ({"embedding_dim": 8, "layers": 2, "attention_dim": 8}, {}, False),
    "dcnv2": ({"hidden": (32,), "cross_layers": 2}, {}, True),
    "dlrm": ({"bottom": (16,), "top": (32,)}, {"epochs": 3}, True),
    "lightgbm": ({"max_rounds": 60, "num_threads": 1}, {}, False),
}


@pytest.fixture(scope="module")
def real_ctr_slice() -> Slice:
    if not has_dataset("ml-100k"):
        pytest.skip("learning is checked on real data: ml-100k not under the data root (RECFUNNEL_DATA)")
    full = load_dataset("ml-100k")
    ints = full.interactions
    order = np.lexsort((ints.order, ints.timestamp))
    ds = replace(full, interactions=ints.take(np.sort(order[: len(order) // 5])))
    return Slice(ds, temporal(ds))


def _real_auc(data: Slice, family: str) -> float:
    params, train, _ = REAL_FAMILIES[family]
    cfg = RunConfig().updated(
        {
            "model": {"name": family, "params": params},
            "split": {"method": "temporal"},
            "train": {**REAL_TRAIN, **train},
        }
    )
    return fit(cfg, data.dataset, data.split).results[0].metrics["auc"]


@pytest.fixture(scope="module")
def real_lr_auc(real_ctr_slice: Slice) -> float:
    return _real_auc(real_ctr_slice, "lr")


@pytest.mark.parametrize("family", list(REAL_FAMILIES))
def test_learns_on_a_small_real_slice(real_ctr_slice: Slice, real_lr_auc: float, family):
    auc = real_lr_auc if family == "lr" else _real_auc(real_ctr_slice, family)
    assert auc > REAL_MIN_AUC, f"{family}: test AUC {auc:.4f} (LR {real_lr_auc:.4f})"
    if REAL_FAMILIES[family][2]:
        assert auc > real_lr_auc, f"{family}: test AUC {auc:.4f} (LR {real_lr_auc:.4f})"
