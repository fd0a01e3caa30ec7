"""`recfunnel recommend` / `similar`: list lengths, which of --user / --item, and every user's
top-k written to a file."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import invoke

from recfunnel.recommender import Recommender


@pytest.mark.parametrize("k", ["-1", "0"])
def test_a_list_length_below_one_is_refused_with_a_sentence(plays_artifact, k):
    _, art = plays_artifact
    for cmd in (("recommend", art, "-u", "u0"), ("similar", art, "-i", "a1")):
        res = invoke(*cmd, "-k", k)
        assert res.exit_code == 2, res.output
        assert f"give 1 or more, got {k}" in res.output


def test_neither_user_nor_item_asks_for_one_of_them(plays_artifact):
    _, art = plays_artifact
    res = invoke("recommend", art)
    assert res.exit_code == 2
    assert "give --user or --item (one of them)" in res.output and "not both" not in res.output
    both = invoke("recommend", art, "-u", "u0", "-i", "a1")
    assert both.exit_code == 2 and "not both" in both.output


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_all_users_top_k_written_to_a_file(tmp_path, plays_artifact, suffix):
    _, art = plays_artifact
    out = tmp_path / f"recs{suffix}"
    res = invoke("recommend", art, "--all-users", "--out", out, "-k", "3", "--batch-size", "5")
    assert res.exit_code == 0, res.output
    df = (
        pl.read_parquet(out)
        if suffix == ".parquet"
        else pl.read_csv(out, schema_overrides={"user": pl.String})
    )
    assert df.columns == ["user", "rank", "item", "score"]
    rec = Recommender.load(art)
    assert df.height == 3 * len(rec.users_) and df["user"].n_unique() == len(rec.users_)
    ids, scores = rec.recommend(["u7"], k=3)  # the same lists as one-user calls, in rank order
    u7 = df.filter(pl.col("user") == "u7").sort("rank")
    assert u7["item"].to_list() == ids[0] and u7["rank"].to_list() == [1, 2, 3]
    assert u7["score"].to_list() == pytest.approx(scores[0].tolist(), rel=1e-6)
    seen = {rec.items_.ids[j] for j in rec.seen_[rec.users_.index("u7")].indices}
    assert seen and not seen & set(u7["item"].to_list())  # train and valid items are excluded


def test_all_users_needs_a_file_of_a_known_format(tmp_path, plays_artifact):
    _, art = plays_artifact
    res = invoke("recommend", art, "--all-users")
    assert res.exit_code == 2 and "--out" in res.output
    res = invoke("recommend", art, "--all-users", "-o", tmp_path / "recs.json")
    assert res.exit_code == 2 and ".parquet" in res.output and ".csv" in res.output
    assert not (tmp_path / "recs.json").exists()
