"""The CTR rankers: one contract every family passes (after implicit's test mixin), on a small
real slice of MovieLens-100K as a CTR task (the earliest 20% of events, temporal 80/10/10)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pydantic
import pytest
import torch

from recfunnel.data.fields import ctr_parts
from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import temporal
from recfunnel.eval.ctr import evaluate_ctr
from recfunnel.models.base import MODELS
from recfunnel.models.ctr import CTRModel, FieldRanker, FieldScorer, build_ctr, load_ctr, save_ctr
from recfunnel.models.ctr.gbdt import LightGBMConfig, LightGBMRanker
from recfunnel.settings import has_dataset
from recfunnel.train.labelled import LabelledBCE
from recfunnel.train.trainer import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.skipif(not has_dataset("ml-100k"), reason="ml-100k not under the data root")


@pytest.fixture(scope="session")
def ctr_slice():
    """(dataset, schema, parts) for the earliest 20% of ml-100k's events (~16k train rows)."""
    full = load_dataset("ml-100k")
    ints = full.interactions
    order = np.lexsort((ints.order, ints.timestamp))
    ds = replace(full, interactions=ints.take(np.sort(order[: len(order) // 5])))
    schema, parts = ctr_parts(ds, temporal(ds))
    return ds, schema, parts


@pytest.fixture(scope="session")
def lr_auc(ctr_slice) -> float:
    _, schema, parts = ctr_slice
    model = _fit("lr", {}, schema, parts, {"epochs": 3, "lr": 1e-2})
    return evaluate_ctr(model, parts["test"]).metrics["auc"]


def _fit(family: str, params: dict, schema, parts, train: dict) -> CTRModel:
    cfg = TrainConfig(
        **{"epochs": 2, "batch_size": 512, "lr": 3e-3, "patience": 0, "progress": False, **train}
    )
    seed_everything(cfg.seed)
    model = build_ctr(family, schema, params)
    Trainer(cfg).fit(model, LabelledBCE(parts["train"]))
    return model


class CTRContract:
    """What every CTR family must do. Subclasses set `family`, small `params` and `train`."""

    family: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    train: ClassVar[dict[str, Any]] = {}
    min_auc: ClassVar[float] = 0.62  # a constant scorer has 0.5; LR gets ~0.66-0.69 on this slice
    beats_lr: ClassVar[bool] = False  # the deep models with an MLP do, even on this budget

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, ctr_slice) -> CTRModel:
        _, schema, parts = ctr_slice
        return _fit(cls.family, cls.params, schema, parts, cls.train)

    def test_registered_with_a_typed_config_that_rejects_unknown_keys(self, ctr_slice):
        cls = MODELS[self.family]
        assert issubclass(cls, CTRModel) and cls.family == self.family and cls.objective == "labelled"
        assert cls.__doc__ and cls.Config().model_dump()  # documented, with paper defaults
        with pytest.raises(pydantic.ValidationError):
            cls.Config(not_a_param=1)
        with pytest.raises(ValueError, match="unknown CTR model"):
            build_ctr("no-such-model", ctr_slice[1])

    def test_scores_one_logit_per_row(self, fitted, ctr_slice):
        _, _, parts = ctr_slice
        batch = parts["test"].fields.take(slice(0, 7))
        out = fitted.score_fields(batch)
        assert out.shape == (7,) and out.dtype == torch.float32 and torch.isfinite(out).all()
        assert isinstance(fitted, FieldScorer)

    def test_artifact_round_trip_gives_identical_logits_without_the_schema_at_hand(
        self, fitted, ctr_slice, tmp_path
    ):
        _, schema, parts = ctr_slice
        path = save_ctr(fitted, tmp_path / self.family, metrics={"auc": 0.5})
        again = load_ctr(path)  # schema, config and weights all come from the folder
        assert type(again) is type(fitted) and not again.training
        assert again.schema.to_json() == schema.to_json() and again.config == fitted.config
        batch = parts["test"].fields.take(slice(0, 64))
        fitted.eval()
        with torch.no_grad():
            torch.testing.assert_close(again.score_fields(batch), fitted.score_fields(batch))

    def test_learns_on_a_small_real_slice(self, fitted, ctr_slice, lr_auc):
        _, _, parts = ctr_slice
        auc = evaluate_ctr(fitted, parts["test"]).metrics["auc"]
        assert auc > self.min_auc, f"{self.family}: test AUC {auc:.4f} (LR {lr_auc:.4f})"
        if self.beats_lr:
            assert auc > lr_auc, f"{self.family}: test AUC {auc:.4f} (LR {lr_auc:.4f})"

    def test_ranks_candidate_pairs_at_request_time(self, fitted, ctr_slice):
        ds, schema, _ = ctr_slice
        ranker = FieldRanker(fitted, schema, ds)
        users = torch.tensor([0, 5])
        items = torch.tensor([[0, 1, 2], [3, 4, -1]])
        scores = ranker.score(users, items)
        assert scores.shape == (2, 3) and torch.isfinite(scores).all()


class TestLR(CTRContract):
    family = "lr"
    train = {"lr": 1e-2}


class TestFM(CTRContract):
    family = "fm"


class TestWideDeep(CTRContract):
    family = "widedeep"
    beats_lr = True
    params = {"embedding_dim": 8, "hidden": (32, 16)}


class TestDeepFM(CTRContract):
    family = "deepfm"
    beats_lr = True
    params = {"hidden": (32, 32)}


class TestAutoInt(CTRContract):
    family = "autoint"
    params = {"embedding_dim": 8, "layers": 2, "attention_dim": 8}

    def test_attention_weights_per_field_pair_sum_to_one(self, fitted, ctr_slice):
        _, schema, parts = ctr_slice
        w = fitted.attention_weights(parts["test"].fields.take(slice(0, 5)))
        f = len(schema)
        assert w.shape == (5, 2, fitted.config.heads, f, f)
        torch.testing.assert_close(w.sum(-1), torch.ones(5, 2, fitted.config.heads, f))


class TestDCNv2(CTRContract):
    family = "dcnv2"
    beats_lr = True
    params = {"hidden": (32,), "cross_layers": 2}


class TestDCNv2Parallel(CTRContract):
    family = "dcnv2"
    params = {"hidden": (32,), "cross_layers": 2, "structure": "parallel", "low_rank": 8}


class TestDLRM(CTRContract):
    family = "dlrm"
    beats_lr = True
    params = {"bottom": (16,), "top": (32,)}
    train = {"epochs": 3}


def test_lightgbm_baseline_learns_and_is_deterministic(ctr_slice):
    _, schema, parts = ctr_slice
    tr, va, te = parts["train"], parts["valid"], parts["test"]
    cfg = LightGBMConfig(max_rounds=60, num_threads=1)
    a = LightGBMRanker(cfg, schema, seed=0).fit(tr.fields, tr.labels.numpy(), va.fields, va.labels.numpy())
    b = LightGBMRanker(cfg, schema, seed=0).fit(tr.fields, tr.labels.numpy(), va.fields, va.labels.numpy())
    x, cat, names = a.features(te.fields)
    assert x.shape == (len(te), len(names)) and len(cat) == sum(f.kind == "categorical" for f in schema)
    torch.testing.assert_close(a.score_fields(te.fields), b.score_fields(te.fields))
    assert evaluate_ctr(a, te).metrics["auc"] > 0.62
    assert a.n_params() > 0 and a.to_text().startswith("tree")


@pytest.mark.parametrize("family", ["fm", "deepfm", "dlrm"])
def test_build_model_refuses_ctr_families_with_the_way_to_build_them(family):
    from recfunnel.models.base import build_model

    with pytest.raises(ValueError, match="CTR ranker over a field schema.*build_ctr"):
        build_model(family, 10, 20)


def test_ctr_artifacts_refuse_corruption_and_other_kinds(ctr_slice, tmp_path):
    from recfunnel.artifacts import ArtifactError

    _, schema, _ = ctr_slice
    path = save_ctr(build_ctr("fm", schema, {}), tmp_path / "fm")
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="corrupt"):
        load_ctr(path)
    with pytest.raises(TypeError, match="Recommender.save"):
        save_ctr(torch.nn.Linear(2, 2), tmp_path / "x")
    from recfunnel.artifacts import save_artifact

    other = save_artifact(tmp_path / "mf", family="mf", config={"model": {}}, tensors={}, vocabs={})
    with pytest.raises(ArtifactError, match="not a CTR ranker"):
        load_ctr(other)
