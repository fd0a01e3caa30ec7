"""The Recommender facade on the real ml-100k with the closed-form families (fast to fit):
raw ids in and out, titles, default splits, persistence."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recfunnel.data.dataset import Dataset, build_dataset
from recfunnel.data.errors import DataError
from recfunnel.data.readers import load_dataset
from recfunnel.data.splits import Split, leave_one_out, random_holdout
from recfunnel.recommender import Recommender
from recfunnel.settings import has_dataset


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    if not has_dataset("ml-100k"):
        pytest.skip("ml-100k not under the data root (set RECFUNNEL_DATA)")
    return load_dataset("ml-100k")


@pytest.fixture(scope="module")
def popularity(ml100k) -> Recommender:
    return Recommender("popularity").fit(ml100k)


@pytest.fixture(scope="module")
def ease(ml100k) -> Recommender:
    return Recommender("ease", {"l2": 200.0}).fit(ml100k)


def _seen_matrix(ds: Dataset, split: Split):
    return ds.interactions.take(np.concatenate([split.train, split.valid])).matrix(ds.n_users, ds.n_items)


def _raw_seen(rec: Recommender, user: str) -> set[str]:
    row = rec.seen_[rec.users_.index(user)]
    return {rec.items_.ids[i] for i in row.indices}


def _untimed(ds: Dataset) -> Dataset:
    """ml-100k without its timestamp column (raw ids kept)."""
    ints = ds.interactions
    frame = pl.DataFrame(
        {
            "user": np.asarray(ds.users.ids, dtype=np.int64)[ints.user],
            "item": np.asarray(ds.items.ids, dtype=np.int64)[ints.item],
        }
    )
    return build_dataset("ml-100k-untimed", frame)


def test_unknown_family_fails_at_construction_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'nope'.*ease.*popularity"):
        Recommender("nope")


def test_unfitted_recommender_says_how_to_fit():
    with pytest.raises(RuntimeError, match="not fitted"):
        Recommender("popularity").recommend(["1"])


@pytest.mark.parametrize("name", ["popularity", "ease"])
def test_recommend_takes_and_returns_raw_ids(request, ml100k, name):
    rec = request.getfixturevalue(name)
    ids, scores = rec.recommend(["196", "22"], k=10)
    assert len(ids) == 2 and scores.shape == (2, 10)
    for user, row in zip(["196", "22"], ids, strict=True):
        assert len(row) == 10 and all(isinstance(i, str) and i in ml100k.items for i in row)
        assert not _raw_seen(rec, user) & set(row)
    assert rec.recommend([196, 22], k=10)[0] == ids  # integer raw ids name the same users


def test_popularity_recommends_the_most_popular_items_a_user_has_not_seen(popularity, ml100k):
    counts = popularity.model_.counts.numpy()
    for user in ["1", "196", "943"]:
        row, scores = popularity.recommend([user], k=20)
        unseen = np.array([i not in _raw_seen(popularity, user) for i in ml100k.items.ids])
        best = np.sort(counts[unseen])[::-1][:20]
        np.testing.assert_array_equal(scores[0], best)  # equal counts may come in either order
        np.testing.assert_array_equal(counts[ml100k.items.encode(row[0])], best)


def test_unknown_raw_user_raises_key_error_naming_it(ease):
    with pytest.raises(KeyError, match="'99999'"):
        ease.recommend(["196", "99999"], k=5)


def test_titles_maps_raw_item_ids_to_movie_titles(ease):
    assert ease.titles(["1", "50"]) == ["Toy Story (1995)", "Star Wars (1977)"]
    ids, _ = ease.similar_items(["50"], k=5)
    assert "50" not in ids[0] and len(ease.titles(ids[0])) == 5


def test_titles_fall_back_to_ids_without_an_item_table(ml100k):
    rec = Recommender("popularity").fit(_untimed(ml100k))
    assert rec.titles(["1", "50"]) == ["1", "50"]


def test_fit_without_split_uses_leave_one_out_on_timed_data(popularity, ml100k):
    expected = _seen_matrix(ml100k, leave_one_out(ml100k))
    assert (popularity.seen_ != expected).nnz == 0


def test_fit_without_split_on_data_without_timestamps_uses_random_holdout(ml100k):
    ds = _untimed(ml100k)
    assert not ds.has_time
    with pytest.raises(DataError, match="no timestamp"):
        leave_one_out(ds)  # so the default cannot be leave-one-out here
    rec = Recommender("popularity").fit(ds)
    split = random_holdout(ds, seed=0)
    assert (rec.seen_ != _seen_matrix(ds, split)).nnz == 0
    # Popularity counted exactly the random holdout's train part
    train_counts = np.asarray(split.part(ds, "train").matrix(ds.n_users, ds.n_items).sum(axis=0)).ravel()
    np.testing.assert_array_equal(rec.model_.counts.numpy(), train_counts)


def test_saved_and_loaded_recommender_answers_identically_with_raw_ids_and_titles(ease, tmp_path):
    loaded = Recommender.load(ease.save(tmp_path / "ease"))
    users = ["196", "22", "1", "943"]
    ids_a, scores_a = ease.recommend(users, k=10)
    ids_b, scores_b = loaded.recommend(users, k=10)
    assert ids_a == ids_b
    np.testing.assert_array_equal(scores_a, scores_b)
    assert loaded.similar_items(["1"], k=10)[0] == ease.similar_items(["1"], k=10)[0]
    assert loaded.titles(ids_b[0]) == ease.titles(ids_a[0])
    assert loaded.model_.config.l2 == 200.0
