"""ModelContract: the behaviours every recfunnel model family must have, checked by one mixin.

After benfred/implicit's RecommenderBaseTestMixin: a family's test class names the family, its
hyper-parameters and test-sized training settings, and inherits the contract::

    class TestNeuMF(ModelContract):
        family = "neumf"
        train = {"epochs": 4, "batch_size": 1024, "lr": 0.005}

The class fits its model once (a class-scoped fixture) through the Recommender facade on a small
real slice of ml-100k (fixtures in conftest.py); every contract test reads that fitted model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydantic
import pytest
import tomli_w
import tomllib
import torch

from recfunnel.artifacts import FORMAT_VERSION, MANIFEST_NAME, WEIGHTS_NAME, ArtifactError
from recfunnel.data.dataset import Dataset
from recfunnel.data.splits import Split
from recfunnel.eval.protocols import evaluate
from recfunnel.models.base import (
    MODELS,
    Factorised,
    FullScorer,
    Model,
    ModelConfig,
    Scorer,
    build_model,
    model_class,
)
from recfunnel.pipeline import ObjectiveSection
from recfunnel.recommender import Recommender


@dataclass(frozen=True)
class Slice:
    dataset: Dataset
    split: Split  # leave_one_out + 99 fixed negatives per valid/test user (seed 0)


def sampled_hr10(model: Model, data: Slice, part: str = "test") -> float:
    """HR@10 of each user's held-out item ranked against the split's 99 fixed negatives."""
    return evaluate(model, data.dataset, data.split, "sampled", part, ks=(10,)).metrics["hr@10"]


def seen_raw(data: Slice) -> dict[str, set[str]]:
    """Raw item ids each raw user has in the train and valid parts (what recommend() excludes)."""
    ds, split = data.dataset, data.split
    ints = ds.interactions.take(np.concatenate([split.train, split.valid]))
    out: dict[str, set[str]] = {u: set() for u in ds.users.ids}
    for u, i in zip(ints.user.tolist(), ints.item.tolist(), strict=True):
        out[ds.users.ids[u]].add(ds.items.ids[i])
    return out


@dataclass(frozen=True)
class Fitted:
    rec: Recommender
    data: Slice
    seconds: float

    @property
    def model(self) -> Model:
        assert self.rec.model_ is not None
        return self.rec.model_

    @property
    def dataset(self) -> Dataset:
        return self.data.dataset


class ModelContract:
    """Inherit and set `family` (plus `params`, `train`, ... as needed) to check a model family."""

    family: ClassVar[str]
    #: the family's hyper-parameters (its Config fields)
    params: ClassVar[dict[str, Any]] = {}
    #: TrainConfig fields; keep it small (a few epochs): each class trains once, in seconds
    train: ClassVar[dict[str, Any]] = {}
    #: ObjectiveSection params, e.g. {"reg": 0.01} for BPR
    objective: ClassVar[dict[str, Any]] = {}
    #: whether the model is Factorised (user_vectors / item_vectors)
    factorised: ClassVar[bool] = False
    #: whether Recommender.similar_items works; None: the same as `factorised`
    has_similar_items: ClassVar[bool | None] = None
    #: whether the model must beat Popularity's sampled HR@10 on the slice, and by how much
    beats_popularity: ClassVar[bool] = True
    margin: ClassVar[float] = 0.05

    # ---- fixtures and helpers ---------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, ml_slice: Slice) -> Fitted:
        """The family fitted once per test class on the slice's train part."""
        train = {"progress": False, **cls.train}
        kwargs = {"objective": ObjectiveSection(params=cls.objective)} if cls.objective else {}
        t0 = time.perf_counter()
        rec = Recommender(cls.family, cls.params, train).fit(ml_slice.dataset, ml_slice.split, **kwargs)
        return Fitted(rec, ml_slice, time.perf_counter() - t0)

    def config(self) -> ModelConfig:
        return model_class(self.family).Config(**self.params)

    def similar_supported(self) -> bool:
        return self.factorised if self.has_similar_items is None else self.has_similar_items

    @staticmethod
    def some_users(model: Model) -> torch.Tensor:
        return torch.tensor([0, 1, model.n_users // 2, model.n_users - 1])

    @staticmethod
    def save(fitted: Fitted, tmp_path: Path) -> Path:
        return fitted.rec.save(tmp_path / "artifact")

    # ---- config -----------------------------------------------------------------------------
    def test_family_is_registered_under_its_name(self):
        cls = model_class(self.family)
        assert MODELS[self.family] is cls and cls.family == self.family

    def test_builds_from_its_typed_config_or_a_dict(self):
        cfg = self.config()
        model = build_model(self.family, 7, 11, cfg)
        assert type(model) is model_class(self.family)
        assert model.config == cfg and (model.n_users, model.n_items) == (7, 11)
        assert build_model(self.family, 7, 11, dict(self.params)).config == cfg
        assert isinstance(model, Scorer) and isinstance(model, FullScorer)

    def test_config_round_trips_through_toml_text(self):
        for cfg in (model_class(self.family).Config(), self.config()):
            text = tomli_w.dumps(cfg.model_dump(mode="json"))
            assert type(cfg).model_validate(tomllib.loads(text)) == cfg

    def test_config_round_trips_through_model_dump(self):
        for cfg in (model_class(self.family).Config(), self.config()):
            assert type(cfg).model_validate(cfg.model_dump()) == cfg
            assert type(cfg).model_validate(cfg.model_dump(mode="json")) == cfg
            assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg

    def test_unknown_config_key_is_rejected(self):
        with pytest.raises(pydantic.ValidationError, match="not_a_param"):
            model_class(self.family).Config(**self.params, not_a_param=1)
        with pytest.raises(pydantic.ValidationError, match="not_a_param"):
            build_model(self.family, 3, 4, {**self.params, "not_a_param": 1})

    # ---- shapes and capabilities ------------------------------------------------------------
    def test_score_maps_users_b_and_items_b_by_c_to_b_by_c(self, fitted):
        model = fitted.model
        users = self.some_users(model)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for c in (1, 6):
                items = torch.randint(0, model.n_items, (len(users), c), generator=g)
                s = model.score(users, items)
                assert s.shape == (len(users), c) and s.dtype == torch.float32
                assert torch.isfinite(s).all()

    def test_score_all_scores_every_item_and_agrees_with_score(self, fitted):
        model = fitted.model
        users = self.some_users(model)
        with torch.no_grad():
            full = model.score_all(users)
            assert full.shape == (len(users), model.n_items)
            items = torch.arange(model.n_items).expand(len(users), -1)
            torch.testing.assert_close(model.score(users, items), full, rtol=1e-5, atol=1e-5)
            perm = torch.randperm(model.n_items, generator=torch.Generator().manual_seed(0))[:7]
            some = perm.expand(len(users), -1)
            torch.testing.assert_close(model.score(users, some), full.gather(1, some), rtol=1e-5, atol=1e-5)

    def test_factorised_capability_is_as_declared(self, fitted):
        assert isinstance(fitted.model, Factorised) is self.factorised

    def test_factorised_score_all_is_user_vectors_times_item_vectors_plus_bias(self, fitted):
        model = fitted.model
        if not isinstance(model, Factorised):
            pytest.skip(f"{self.family} is not factorised")
        users = self.some_users(model)
        with torch.no_grad():
            u, v = model.user_vectors(users), model.item_vectors()
            assert u.ndim == 2 and u.shape[0] == len(users)
            assert v.shape == (model.n_items, u.shape[1])
            torch.testing.assert_close(
                model.score_all(users), u @ v.T + model.item_bias_all(), rtol=1e-5, atol=1e-5
            )

    # ---- save / load ------------------------------------------------------------------------
    def test_save_load_round_trip_gives_identical_answers(self, fitted, tmp_path):
        rec, model = fitted.rec, fitted.model
        loaded = Recommender.load(self.save(fitted, tmp_path))
        assert loaded.family == self.family and type(loaded.model_) is type(model)
        assert loaded.model_.config == model.config and loaded.train_config == rec.train_config
        users = list(fitted.dataset.users.ids[:60])
        for exclude in (True, False):
            ids_a, scores_a = rec.recommend(users, k=10, exclude_seen=exclude)
            ids_b, scores_b = loaded.recommend(users, k=10, exclude_seen=exclude)
            assert ids_a == ids_b
            np.testing.assert_array_equal(scores_a, scores_b)
        everyone = torch.arange(model.n_users)
        assert torch.equal(model.score_all(everyone), loaded.model_.score_all(everyone))
        if self.similar_supported():
            items = list(fitted.dataset.items.ids[:20])
            assert rec.similar_items(items, k=5)[0] == loaded.similar_items(items, k=5)[0]

    def test_load_rejects_another_format_version(self, fitted, tmp_path):
        path = self.save(fitted, tmp_path)
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        manifest["format_version"] = FORMAT_VERSION + 1
        (path / MANIFEST_NAME).write_text(json.dumps(manifest))
        with pytest.raises(
            ArtifactError, match=rf"format v{FORMAT_VERSION + 1}\b.*reads format v{FORMAT_VERSION}\b"
        ):
            Recommender.load(path)

    def test_load_rejects_a_half_written_folder(self, fitted, tmp_path):
        path = self.save(fitted, tmp_path)
        (path / WEIGHTS_NAME).unlink()
        with pytest.raises(ArtifactError, match=rf"{WEIGHTS_NAME.replace('.', '[.]')} is missing"):
            Recommender.load(path)
        (path / MANIFEST_NAME).unlink()
        with pytest.raises(ArtifactError, match="half-written"):
            Recommender.load(path)

    def test_load_rejects_an_artifact_relabelled_as_another_family(self, fitted, tmp_path):
        path = self.save(fitted, tmp_path)
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        manifest["family"] = "ease" if self.family == "popularity" else "popularity"
        (path / MANIFEST_NAME).write_text(json.dumps(manifest))
        with pytest.raises(ArtifactError, match="does not match"):
            Recommender.load(path)

    # ---- recommend / similar_items ----------------------------------------------------------
    def test_recommend_never_returns_a_seen_item_and_returns_k(self, fitted):
        seen = seen_raw(fitted.data)
        users = list(fitted.dataset.users.ids)
        ids, scores = fitted.rec.recommend(users, k=10, exclude_seen=True)
        assert scores.shape == (len(users), 10) and np.isfinite(scores).all()
        assert (np.diff(scores, axis=1) <= 0).all()
        for user, row in zip(users, ids, strict=True):
            assert len(row) == 10 and len(set(row)) == 10
            assert not seen[user] & set(row), f"user {user} got seen items {seen[user] & set(row)}"
        assert fitted.rec.recommend(users, k=10)[0] == ids  # excluding is the default
        assert fitted.rec.recommend(users, k=10, batch_size=7)[0] == ids  # batching changes nothing

    def test_recommend_without_exclusion_is_the_plain_top_k_and_can_return_seen_items(self, fitted):
        seen = seen_raw(fitted.data)
        users = list(fitted.dataset.users.ids)
        ids, scores = fitted.rec.recommend(users, k=10, exclude_seen=False)
        assert any(seen[u] & set(row) for u, row in zip(users, ids, strict=True))
        with torch.no_grad():
            full = fitted.model.score_all(torch.from_numpy(fitted.dataset.users.encode(users)))
        np.testing.assert_allclose(scores, torch.topk(full, 10, dim=1).values.numpy(), rtol=1e-6)

    def test_recommend_k_beyond_the_catalogue_returns_every_unseen_item(self, fitted):
        user = fitted.dataset.users.ids[3]
        ids, _ = fitted.rec.recommend([user], k=fitted.model.n_items + 5)
        unseen = set(fitted.dataset.items.ids) - seen_raw(fitted.data)[user]
        assert len(ids[0]) == len(unseen) and set(ids[0]) == unseen

    def test_recommend_unknown_user_raises_key_error_naming_it(self, fitted):
        known = fitted.dataset.users.ids[0]
        with pytest.raises(KeyError, match="no-such-user"):
            fitted.rec.recommend([known, "no-such-user"], k=5)

    def test_similar_items_never_returns_the_query_item(self, fitted):
        if not self.similar_supported():
            pytest.skip(f"{self.family} has no item-item similarity")
        items = list(fitted.dataset.items.ids[:25])
        ids, sims = fitted.rec.similar_items(items, k=10)
        assert sims.shape == (len(items), 10) and np.isfinite(sims).all()
        catalogue = set(fitted.dataset.items.ids)
        for query, row in zip(items, ids, strict=True):
            assert len(row) == 10 and len(set(row)) == 10 and set(row) <= catalogue
            assert query not in row

    def test_similar_items_raises_type_error_without_item_vectors(self, fitted):
        if self.similar_supported():
            pytest.skip(f"{self.family} supports similar_items")
        with pytest.raises(TypeError, match=self.family):
            fitted.rec.similar_items(list(fitted.dataset.items.ids[:3]), k=5)

    # ---- learning ---------------------------------------------------------------------------
    def test_fitted_model_is_in_eval_mode_and_deterministic(self, fitted):
        assert not fitted.model.training
        users = list(fitted.dataset.users.ids[:30])
        a, b = fitted.rec.recommend(users, k=10), fitted.rec.recommend(users, k=10)
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])

    def test_training_loss_decreases(self, fitted):
        if not model_class(self.family).trainable:
            pytest.skip(f"{self.family} is fitted in closed form")
        history = fitted.rec.report_.history
        assert len(history) >= 2
        assert history[-1]["loss"] < history[0]["loss"], [round(h["loss"], 4) for h in history]

    def test_learns_and_beats_popularity_on_sampled_hr10(self, fitted, popularity_hr10):
        if not self.beats_popularity:
            pytest.skip(f"{self.family} is the reference")
        hr = sampled_hr10(fitted.model, fitted.data, "test")
        assert hr > popularity_hr10 + self.margin, (
            f"{self.family}: test HR@10 {hr:.3f} vs popularity {popularity_hr10:.3f} "
            f"(fit took {fitted.seconds:.1f}s)"
        )
