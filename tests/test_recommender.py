"""The Recommender facade over recfunnel.run on the contract's synthetic MovieLens-like data: raw ids
in and out (a bare string refused), titles, default splits, any family (CTR rankers through their
feature fields), persistence through the run artifact."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "models"))

from contract import synthetic_movielens  # noqa: E402

from recfunnel.data.dataset import Dataset, build_dataset  # noqa: E402
from recfunnel.data.errors import DataError  # noqa: E402
from recfunnel.data.splits import Split, leave_one_out, random_holdout, temporal  # noqa: E402
from recfunnel.errors import ConfigError  # noqa: E402
from recfunnel.recommender import Recommender  # noqa: E402
from recfunnel.run import RunConfig, fit  # noqa: E402

QUICK = {"epochs": 1, "batch_size": 256, "progress": False, "patience": 0}


@pytest.fixture(scope="module")
def ds() -> Dataset:
    torch.set_num_threads(1)
    return synthetic_movielens(n_items=150)  # room for the default split's 99 sampled negatives


@pytest.fixture(scope="module")
def popularity(ds) -> Recommender:
    return Recommender("popularity").fit(ds)


@pytest.fixture(scope="module")
def ease(ds) -> Recommender:
    return Recommender("ease", {"l2": 20.0}).fit(ds)


def _seen_matrix(ds: Dataset, split: Split):
    return ds.interactions.take(np.concatenate([split.train, split.valid])).matrix(ds.n_users, ds.n_items)


def _raw_seen(rec: Recommender, user: str) -> set[str]:
    row = rec.seen_[rec.users_.index(user)]
    return {rec.items_.ids[i] for i in row.indices}


def _untimed(ds: Dataset) -> Dataset:
    """The dataset without its timestamp column and feature tables (raw ids kept)."""
    ints = ds.interactions
    frame = pl.DataFrame(
        {
            "user": np.asarray(ds.users.ids, dtype=np.int64)[ints.user],
            "item": np.asarray(ds.items.ids, dtype=np.int64)[ints.item],
        }
    )
    return build_dataset("untimed", frame)


# ---- construction -------------------------------------------------------------------------------
def test_unknown_family_fails_at_construction_listing_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown model 'nope'.*ease.*popularity"):
        Recommender("nope")


def test_unfitted_recommender_says_how_to_fit():
    with pytest.raises(RuntimeError, match="not fitted"):
        Recommender("popularity").recommend(["1"])


def test_a_run_config_gives_the_sections_not_given_here():
    run = RunConfig.model_validate(
        {
            "model": {"name": "mf", "params": {"factors": 4}},
            "train": {"epochs": 3, "lr": 0.02},
            "split": {"seed": 5},
        }
    )
    rec = Recommender("mf", {"factors": 4}, run=run)
    assert rec.run_config.split.seed == 5 and rec.run_config.model.params == {"factors": 4}
    assert (rec.run_config.train.epochs, rec.run_config.train.lr) == (3, 0.02)  # train not given here
    rec = Recommender("mf", {"factors": 4}, {"epochs": 1}, run=run)
    assert rec.run_config.train.epochs == 1 and rec.train_config.epochs == 1


# ---- raw ids in and out -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["popularity", "ease"])
def test_recommend_takes_and_returns_raw_ids(request, ds, name):
    rec = request.getfixturevalue(name)
    ids, scores = rec.recommend(["196", "22"], k=10)
    assert len(ids) == 2 and scores.shape == (2, 10)
    for user, row in zip(["196", "22"], ids, strict=True):
        assert len(row) == 10 and all(isinstance(i, str) and i in ds.items for i in row)
        assert not _raw_seen(rec, user) & set(row)
    assert rec.recommend([196, 22], k=10)[0] == ids  # integer raw ids name the same users


def test_a_bare_string_is_refused_not_read_character_by_character(ease):
    with pytest.raises(TypeError, match=r"users is a sequence of raw ids, e\.g\. \['196'\]"):
        ease.recommend("196", k=2)
    with pytest.raises(TypeError, match=r"items is a sequence of raw ids, e\.g\. \['50'\]"):
        ease.similar_items("50")
    with pytest.raises(TypeError, match="bare string"):
        ease.recommend(b"196", k=2)
    ids, _ = ease.recommend(["196"], k=2)
    assert len(ids) == 1 and len(ids[0]) == 2


@pytest.mark.parametrize("k", [0, -3])
def test_k_below_one_raises_value_error(ease, k):
    with pytest.raises(ValueError, match=f"k must be >= 1, got {k}"):
        ease.recommend(["196"], k=k)
    with pytest.raises(ValueError, match=f"k must be >= 1, got {k}"):
        ease.similar_items(["50"], k=k)


def test_popularity_recommends_the_most_popular_items_a_user_has_not_seen(popularity, ds):
    counts = popularity.model_.counts.numpy()
    for user in ["1", "196", "200"]:
        row, scores = popularity.recommend([user], k=20)
        unseen = np.array([i not in _raw_seen(popularity, user) for i in ds.items.ids])
        best = np.sort(counts[unseen])[::-1][:20]
        np.testing.assert_array_equal(scores[0], best)  # equal counts may come in either order
        np.testing.assert_array_equal(counts[ds.items.encode(row[0])], best)


def test_unknown_raw_user_raises_key_error_naming_it(ease):
    with pytest.raises(KeyError, match="'99999'"):
        ease.recommend(["196", "99999"], k=5)


def test_titles_maps_raw_item_ids_to_titles(ease, ds):
    titles = ds.item_features["title"].to_list()
    assert ease.titles(["1", "50"]) == [titles[ds.items.index("1")], titles[ds.items.index("50")]]
    ids, _ = ease.similar_items(["50"], k=5)
    assert "50" not in ids[0] and len(ease.titles(ids[0])) == 5


def test_titles_fall_back_to_ids_without_an_item_table(ds):
    rec = Recommender("popularity").fit(_untimed(ds))
    assert rec.titles(["1", "50"]) == ["1", "50"]


# ---- default splits -----------------------------------------------------------------------------
def test_fit_without_split_uses_leave_one_out_on_timed_data(popularity, ds):
    expected = _seen_matrix(ds, leave_one_out(ds))
    assert (popularity.seen_ != expected).nnz == 0


def test_fit_without_split_on_data_without_timestamps_uses_random_holdout(ds):
    untimed = _untimed(ds)
    assert not untimed.has_time
    with pytest.raises(DataError, match="no timestamp"):
        leave_one_out(untimed)  # so the default cannot be leave-one-out here
    rec = Recommender("popularity").fit(untimed)
    split = random_holdout(untimed, seed=0)
    assert (rec.seen_ != _seen_matrix(untimed, split)).nnz == 0
    # Popularity counted exactly the random holdout's train part
    train = split.part(untimed, "train").matrix(untimed.n_users, untimed.n_items)
    np.testing.assert_array_equal(rec.model_.counts.numpy(), np.asarray(train.sum(axis=0)).ravel())


def test_fit_without_split_works_on_a_catalogue_smaller_than_the_sampled_negatives():
    small = synthetic_movielens(n_users=30, n_items=40)  # < 99 unseen items per user
    rec = Recommender("popularity").fit(small)  # fitting evaluates nothing: it needs no negatives
    assert len(rec.recommend(["1"], k=3)[0][0]) == 3


def test_fit_goes_through_run_fit_and_evaluates_when_asked(ds):
    split = leave_one_out(ds).with_negatives(ds, 20)
    rec = Recommender("mf", {"factors": 4}, QUICK).fit(ds, split, evaluate=True)
    res = fit(rec.run_config, ds, split)
    assert torch.equal(rec.model_.item_vectors(), res.model.item_vectors())
    assert rec.metrics_ == {f"{r.protocol}/{k}": v for r in res.results for k, v in r.metrics.items()}
    assert Recommender("mf", {"factors": 4}, QUICK).fit(ds, split).metrics_ == {}


# ---- any family ---------------------------------------------------------------------------------
def test_a_ctr_ranker_recommends_every_item_through_its_feature_fields(ds, tmp_path):
    split = temporal(ds)
    rec = Recommender("fm", {"embedding_dim": 4}, QUICK).fit(ds, split)
    ids, scores = rec.recommend(["1", "196"], k=5)
    assert scores.shape == (2, 5) and np.isfinite(scores).all()
    assert not _raw_seen(rec, "1") & set(ids[0])
    with pytest.raises(TypeError, match="'fm' has none"):
        rec.similar_items(["50"], k=3)
    loaded = Recommender.load(rec.save(tmp_path / "fm"), dataset=ds)
    assert loaded.recommend(["1", "196"], k=5)[0] == ids


def test_recommend_from_items_reads_ad_hoc_lists_for_sequence_models(ds):
    rec = Recommender("sasrec", {"hidden": 8, "max_len": 10, "blocks": 1}, QUICK).fit(ds)
    ids, scores = rec.recommend_from_items([["1", "5", "9"], ["50"]], k=4)
    assert scores.shape == (2, 4) and not {"1", "5", "9"} & set(ids[0]) and "50" not in ids[1]
    with pytest.raises(TypeError, match="one list of raw item ids per request"):
        rec.recommend_from_items(["1", "5"], k=4)
    with pytest.raises(TypeError, match="needs a sequence model; 'ease'"):
        Recommender("ease").fit(ds).recommend_from_items([["1"]])


# ---- persistence --------------------------------------------------------------------------------
def test_saved_and_loaded_recommender_answers_identically_with_raw_ids_and_titles(ease, tmp_path):
    loaded = Recommender.load(ease.save(tmp_path / "ease"))
    users = ["196", "22", "1", "200"]
    ids_a, scores_a = ease.recommend(users, k=10)
    ids_b, scores_b = loaded.recommend(users, k=10)
    assert ids_a == ids_b
    np.testing.assert_array_equal(scores_a, scores_b)
    assert loaded.similar_items(["1"], k=10)[0] == ease.similar_items(["1"], k=10)[0]
    assert loaded.titles(ids_b[0]) == ease.titles(ids_a[0])
    assert loaded.model_.config.l2 == 20.0 and loaded.run_config == ease.run_config
    assert loaded.split_ is not None and np.array_equal(loaded.split_.train, ease.split_.train)
