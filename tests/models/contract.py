"""ModelContract: the behaviours every recfunnel model family has, checked by one mixin.

After benfred/implicit's RecommenderBaseTestMixin: a family's test class names the family and
test-sized hyper-parameters and inherits the contract::

    class TestNeuMF(ModelContract):
        family = "neumf"
        params = {"factors": 4, "layers": (16, 8)}

Every family goes through the one door, :func:`recfunnel.run.fit`, on a small SYNTHETIC
MovieLens-like dataset (:func:`synthetic_movielens`: user and item feature tables, timestamps,
ratings 1-5), so the contract never needs the data root. User x item families are fitted on a
leave-one-out split with fixed sampled-eval negatives; the field families (CTR rankers, LightGBM)
on a temporal split, whose test part has several labelled rows per user (GAUC needs both labels
for some user). Every family answers through :func:`recfunnel.run.candidate_scorer`, the adapter
the funnel uses, and is saved with :func:`recfunnel.run.save_fit` and read back with
:func:`recfunnel.run.load_model`. The class fits its model once (a class-scoped fixture); the
contract checks behaviour, not quality: it trains at most :data:`CONTRACT_EPOCHS` epochs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pydantic
import pytest
import tomli_w
import tomllib
import torch

from recfunnel.artifacts import MANIFEST_NAME
from recfunnel.data.dataset import Dataset, build_dataset
from recfunnel.data.splits import Split
from recfunnel.eval.result import Result
from recfunnel.models.base import Factorised, model_class
from recfunnel.models.registry import MODELS
from recfunnel.recommender import Recommender
from recfunnel.run import (
    CandidateScorer,
    FitResult,
    RunConfig,
    candidate_scorer,
    fit,
    load_model,
    save_fit,
)
from recfunnel.train.trainer import TrainReport

#: the most epochs a contract fit trains (a family's `train` may ask for more: it is capped)
CONTRACT_EPOCHS = 2
#: fixed negatives per held-out user of the leave-one-out split (the sampled protocol)
EVAL_NEGATIVES = 20

GENRES = ("Action", "Comedy", "Drama", "Romance", "Sci-Fi")
OCCUPATIONS = ("artist", "engineer", "student", "writer")


def synthetic_movielens(n_users: int = 200, n_items: int = 80, seed: int = 0) -> Dataset:
    """A MovieLens-shaped dataset with planted tastes, built in memory (no download, no data root).

    Users (raw ids "1".."n_users") fall in 4 taste groups (their occupation); items
    ("1".."n_items") in 4 genre groups. Each user rates 8-15 distinct items, 70% from their own
    group, at random times over 90 days (so events have hours and weekdays); own-group ratings
    are higher (1-5, about 60% >= 4), so CTR labels (rating >= 4) have both classes. Feature
    tables: users id/age/gender/occupation/zip, items id/title/year/genres (a list).
    """
    rng = np.random.default_rng(seed)
    user_group = rng.integers(0, 4, n_users)
    item_group = np.arange(n_items) % 4
    counts = rng.integers(8, 16, n_users)
    # per user, a random permutation of the catalogue ordered own group first: the first 70% of the
    # user's count come from the own group, the rest from the others (no item twice)
    noise = rng.random((n_users, n_items))
    own = item_group[None, :] == user_group[:, None]
    n_own = np.minimum(np.round(counts * 0.7).astype(np.int64), own.sum(1))
    by_own = np.argsort(noise - own, axis=1)  # own-group items first, each side shuffled
    others = np.argsort(noise + own, axis=1)  # other-group items first
    pos = np.arange(n_items)[None, :]
    take_own = pos < n_own[:, None]
    take_other = pos < (counts - n_own)[:, None]
    user = np.concatenate([np.nonzero(take_own)[0], np.nonzero(take_other)[0]])
    item = np.concatenate([by_own[take_own], others[take_other]])
    liked = item_group[item] == user_group[user]
    rating = np.clip(np.round(rng.normal(np.where(liked, 4.2, 2.6), 0.8)), 1, 5).astype(np.float32)
    timestamp = 874_965_758 + rng.integers(0, 90 * 86_400, len(user))
    columns = {"user": user + 1, "item": item + 1, "timestamp": timestamp, "rating": rating}
    frame = pl.DataFrame(columns).sort("timestamp")
    users = pl.DataFrame(
        {
            "id": np.arange(1, n_users + 1),
            "age": rng.integers(15, 66, n_users),
            "gender": rng.choice(["F", "M"], n_users),
            "occupation": np.asarray(OCCUPATIONS)[user_group],
            "zip": [f"{z:05d}" for z in rng.integers(0, 100_000, n_users)],
        }
    )
    years = rng.integers(1950, 1999, n_items)
    items = pl.DataFrame(
        {
            "id": np.arange(1, n_items + 1),
            "title": [f"Movie {i + 1} ({y})" for i, y in enumerate(years.tolist())],
            "year": years,
            "genres": [[GENRES[g]] + ([GENRES[4]] if i % 3 == 0 else []) for i, g in enumerate(item_group)],
        }
    )
    return build_dataset("synthetic-movielens", frame, user_features=users, item_features=items)


@dataclass(frozen=True)
class Slice:
    dataset: Dataset
    split: Split


def seen_raw(data: Slice) -> dict[str, set[str]]:
    """Raw item ids each raw user has in the train and valid parts (what recommend() excludes)."""
    ds, split = data.dataset, data.split
    ints = ds.interactions.take(np.concatenate([split.train, split.valid]))
    out: dict[str, set[str]] = {u: set() for u in ds.users.ids}
    for u, i in zip(ints.user.tolist(), ints.item.tolist(), strict=True):
        out[ds.users.ids[u]].add(ds.items.ids[i])
    return out


def is_field_family(family: str) -> bool:
    """CTR rankers and LightGBM: fitted on labelled rows of feature fields."""
    return model_class(family).inputs == "fields"


@dataclass(frozen=True)
class Fitted:
    """One contract fit: the run's result, the slice it saw, the scores its candidate scorer gave
    every user right after fitting (before anything was saved), its artifact and a Recommender
    loaded from that artifact."""

    res: FitResult
    data: Slice
    seconds: float
    scores: torch.Tensor  # [n_users, n_items], straight after fit()
    path: Path
    rec: Recommender

    @property
    def model(self) -> Any:
        return self.res.model

    @property
    def dataset(self) -> Dataset:
        return self.data.dataset

    def scorer(self) -> CandidateScorer:
        return candidate_scorer(self.model, self.dataset, self.data.split)


def all_scores(scorer: CandidateScorer, n_users: int) -> torch.Tensor:
    return scorer.score_all(torch.arange(n_users))


class ModelContract:
    """Inherit and set `family` (plus `params`, `train`, ... as needed) to check a model family."""

    family: ClassVar[str]
    #: the family's hyper-parameters (its Config fields); keep them small
    params: ClassVar[dict[str, Any]] = {}
    #: TrainConfig fields; epochs are capped at CONTRACT_EPOCHS
    train: ClassVar[dict[str, Any]] = {}
    #: objective params (the RunConfig's objective section), e.g. {"reg": 0.01} for BPR
    objective: ClassVar[dict[str, Any]] = {}
    #: whether the model is Factorised (user_vectors / item_vectors)
    factorised: ClassVar[bool] = False
    #: whether Recommender.similar_items works; None: the same as `factorised`
    has_similar_items: ClassVar[bool | None] = None

    # ---- fixtures and helpers ---------------------------------------------------------------
    @classmethod
    def run_config(cls, seed: int = 0) -> RunConfig:
        train = {"batch_size": 256, "patience": 0, **cls.train, "progress": False, "seed": seed}
        train["epochs"] = min(train.get("epochs", CONTRACT_EPOCHS), CONTRACT_EPOCHS)
        split = (
            {"method": "temporal", "seed": seed}
            if is_field_family(cls.family)
            else {"method": "leave_one_out", "eval_negatives": EVAL_NEGATIVES, "seed": seed}
        )
        return RunConfig.model_validate(
            {
                "model": {"name": cls.family, "params": dict(cls.params)},
                "split": split,
                "objective": {"params": dict(cls.objective)},
                "train": train,
                "eval": {"protocols": ("full", "sampled"), "ks": (5, 10)},
            }
        )

    @classmethod
    def slice_fixture(cls) -> str:
        return "ctr_slice" if is_field_family(cls.family) else "ranking_slice"

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, request, tmp_path_factory) -> Fitted:
        """The family fitted once per test class through run.fit, scored, saved and reloaded."""
        data: Slice = request.getfixturevalue(cls.slice_fixture())
        t0 = time.perf_counter()
        res = fit(cls.run_config(), data.dataset, data.split)
        seconds = time.perf_counter() - t0
        scores = all_scores(candidate_scorer(res.model, data.dataset, data.split), data.dataset.n_users)
        path = save_fit(res, tmp_path_factory.mktemp(cls.family) / "artifact")
        rec = Recommender.load(path, dataset=data.dataset)
        return Fitted(res, data, seconds, scores, path, rec)

    @staticmethod
    def some_users(n_users: int) -> torch.Tensor:
        return torch.tensor([0, 1, n_users // 2, n_users - 1])

    # ---- registry and config ----------------------------------------------------------------
    def test_family_round_trips_through_the_registry(self, fitted):
        cls = model_class(self.family)
        assert MODELS[self.family] is cls and cls.family == self.family
        assert type(fitted.model) is cls and fitted.model.family == self.family
        assert fitted.res.family == self.family
        manifest = json.loads((fitted.path / MANIFEST_NAME).read_text())
        assert manifest["family"] == self.family and load_model(fitted.path).family == self.family

    def test_config_defaults_are_valid_and_round_trip(self):
        config = model_class(self.family).Config
        for cfg in (config(), config(**self.params)):
            assert config.model_validate(cfg.model_dump()) == cfg
            assert config.model_validate_json(cfg.model_dump_json()) == cfg
            text = tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))
            assert config.model_validate(tomllib.loads(text)) == cfg
        run = self.run_config().model_dump(mode="json")  # the printed run config reads back
        assert RunConfig.model_validate(run).model_dump(mode="json") == run

    def test_unknown_params_are_rejected_before_any_data_is_read(self, tmp_path):
        with pytest.raises(pydantic.ValidationError, match="not_a_param"):
            model_class(self.family).Config(**self.params, not_a_param=1)
        cfg = self.run_config().updated(
            {"model": {"params": {"not_a_param": 1}}, "data": {"data_root": str(tmp_path / "nothing")}}
        )
        with pytest.raises(pydantic.ValidationError, match="not_a_param"):
            fit(cfg)  # no dataset given: it would read the (empty) data root after the check

    # ---- fit --------------------------------------------------------------------------------
    def test_fit_returns_a_fit_result_with_test_results_of_its_protocols(self, fitted):
        res = fitted.res
        assert isinstance(res, FitResult) and res.config == self.run_config()
        assert res.dataset is fitted.dataset and res.split is fitted.data.split
        assert res.seconds > 0 and res.results and all(isinstance(r, Result) for r in res.results)
        assert all(r.part == "test" and r.dataset == fitted.dataset.name for r in res.results)
        if is_field_family(self.family):
            assert (
                res.is_field_model and res.schema is not None and set(res.parts) == {"train", "valid", "test"}
            )
            assert [r.protocol for r in res.results] == ["pointwise"]
            assert {"auc", "logloss", "gauc"} <= set(res.results[0].metrics)
        else:
            assert not res.is_field_model and res.parts is None
            assert [r.protocol for r in res.results] == ["full", f"sampled-{EVAL_NEGATIVES}"]
            assert {"hr@5", "ndcg@10"} <= set(res.results[0].metrics)
        assert all(np.isfinite(v) for r in res.results for v in r.metrics.values())
        if self.family == "lightgbm":
            assert res.report is None  # LightGBM's own boosting loop, no Trainer
        else:
            assert isinstance(res.report, TrainReport)
            if model_class(self.family).trainable:
                assert 1 <= len(res.report.history) <= CONTRACT_EPOCHS

    def test_fitted_model_is_in_eval_mode_and_scores_without_grad(self, fitted):
        for model in (fitted.model, fitted.rec.model_):
            if isinstance(model, torch.nn.Module):
                assert not model.training
        scorer = fitted.scorer()
        with torch.enable_grad():
            users = self.some_users(fitted.dataset.n_users)
            s = scorer.score(users, torch.zeros(len(users), 3, dtype=torch.int64))
            assert not s.requires_grad and not scorer.score_all(users).requires_grad

    # ---- the candidate scorer (the funnel's adapter) -----------------------------------------
    def test_candidate_scorer_maps_users_b_and_items_b_by_c_to_finite_b_by_c(self, fitted):
        scorer = fitted.scorer()
        n_items = fitted.dataset.n_items
        assert isinstance(scorer, CandidateScorer) and scorer.n_items == n_items
        users = self.some_users(fitted.dataset.n_users)
        g = torch.Generator().manual_seed(0)
        for c in (1, 6):
            items = torch.randint(0, n_items, (len(users), c), generator=g)
            s = scorer.score(users, items)
            assert s.shape == (len(users), c) and s.dtype == torch.float32 and torch.isfinite(s).all()

    def test_score_all_scores_every_item_as_score_does_on_the_same_pairs(self, fitted):
        scorer = fitted.scorer()
        n_items = fitted.dataset.n_items
        users = self.some_users(fitted.dataset.n_users)
        full = scorer.score_all(users)
        assert full.shape == (len(users), n_items) and torch.isfinite(full).all()
        every = torch.arange(n_items).expand(len(users), -1)
        torch.testing.assert_close(scorer.score(users, every), full, rtol=1e-5, atol=1e-5)
        some = torch.randperm(n_items, generator=torch.Generator().manual_seed(0))[:7]
        some = torch.stack([some, some.flip(0), some, some.roll(1), some])[: len(users)]
        torch.testing.assert_close(scorer.score(users, some), full.gather(1, some), rtol=1e-5, atol=1e-5)

    def test_factorised_capability_is_as_declared(self, fitted):
        model = fitted.model
        assert isinstance(model, Factorised) is self.factorised
        if self.factorised:  # score_all is one matmul of the user and item vectors (+ item bias)
            users = self.some_users(model.n_users)
            with torch.no_grad():
                u, v = model.user_vectors(users), model.item_vectors()
                assert u.ndim == 2 and v.shape == (model.n_items, u.shape[1])
                torch.testing.assert_close(
                    model.score_all(users), u @ v.T + model.item_bias_all(), rtol=1e-5, atol=1e-5
                )

    def test_the_same_seed_gives_the_same_model(self, fitted):
        again = fit(self.run_config(), fitted.dataset, fitted.data.split, evaluate=False)
        scores = all_scores(
            candidate_scorer(again.model, fitted.dataset, fitted.data.split), fitted.dataset.n_users
        )
        torch.testing.assert_close(scores, fitted.scores, rtol=0, atol=0)

    # ---- artifact ---------------------------------------------------------------------------
    def test_save_fit_then_load_model_gives_identical_scores(self, fitted):
        art = load_model(fitted.path)
        model = fitted.model
        assert art.family == self.family and type(art.model) is type(model)
        assert art.model.config == model.config
        assert art.run.model_dump(mode="json") == fitted.res.config.model_dump(mode="json")
        assert art.users.ids == fitted.dataset.users.ids and art.items.ids == fitted.dataset.items.ids
        assert art.split is not None and np.array_equal(art.split.train, fitted.data.split.train)
        if is_field_family(self.family):
            assert art.schema is not None and art.schema.to_json() == fitted.res.schema.to_json()
        n_users = fitted.dataset.n_users
        loaded = all_scores(candidate_scorer(art.model, fitted.dataset, art.split), n_users)
        torch.testing.assert_close(loaded, all_scores(fitted.scorer(), n_users), rtol=0, atol=0)

    def test_the_fitted_run_answers_as_its_artifact_does(self, fitted):
        """The scorer of a fresh FitResult (what the funnel is handed) gives the scores the saved
        artifact gives: saving must not be what sets the model's state (e.g. its histories)."""
        art = load_model(fitted.path)
        loaded = all_scores(candidate_scorer(art.model, fitted.dataset, art.split), fitted.dataset.n_users)
        torch.testing.assert_close(fitted.scores, loaded, rtol=0, atol=0)

    # ---- the Recommender over the artifact ---------------------------------------------------
    def test_recommend_returns_k_unseen_items_best_first(self, fitted):
        seen = seen_raw(fitted.data)
        users = list(fitted.dataset.users.ids)
        ids, scores = fitted.rec.recommend(users, k=5)
        assert scores.shape == (len(users), 5) and np.isfinite(scores).all()
        assert (np.diff(scores, axis=1) <= 0).all()
        for user, row in zip(users, ids, strict=True):
            assert len(row) == 5 and len(set(row)) == 5
            assert not seen[user] & set(row), f"user {user} got seen items {seen[user] & set(row)}"
        with pytest.raises(KeyError, match="no-such-user"):
            fitted.rec.recommend([users[0], "no-such-user"], k=5)

    def test_similar_items_excludes_the_query_or_says_the_family_has_none(self, fitted):
        items = list(fitted.dataset.items.ids[:10])
        supported = self.factorised if self.has_similar_items is None else self.has_similar_items
        if not supported:
            with pytest.raises(TypeError, match=self.family):
                fitted.rec.similar_items(items, k=5)
            return
        ids, sims = fitted.rec.similar_items(items, k=5)
        assert sims.shape == (len(items), 5) and np.isfinite(sims).all()
        for query, row in zip(items, ids, strict=True):
            assert len(set(row)) == 5 and query not in row and set(row) <= set(fitted.dataset.items.ids)
