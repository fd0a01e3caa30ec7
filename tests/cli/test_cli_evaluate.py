"""`recfunnel evaluate`: invalid cut-offs, protocols and parts are refused with the valid ones;
--split-file evaluates on another saved split of the same data only."""

from __future__ import annotations

from conftest import invoke, write_plays

from recfunnel.data.readers import read_table
from recfunnel.data.schema import ColumnMapping
from recfunnel.data.splits import make_split


def test_bad_cut_off_protocol_or_part_says_what_is_valid(plays_artifact):
    _, art = plays_artifact
    res = invoke("evaluate", art, "-k", "0")
    assert res.exit_code == 2 and "give 1 or more, got 0" in res.output
    res = invoke("evaluate", art, "--protocol", "bogus")
    assert res.exit_code == 2 and "bogus" in res.output
    assert "full, full-unmasked, sampled" in res.output
    res = invoke("evaluate", art, "--part", "train")
    assert res.exit_code == 2 and "valid: valid, test" in res.output


def _split_file(csv, path, seed: int):
    ds = read_table(ColumnMapping(path=csv, user="user_id", item="artist"))
    make_split(ds, "random_holdout", seed=seed).with_negatives(ds).save(path)
    return path


def test_split_file_of_the_same_data_is_evaluated(tmp_path, plays_artifact):
    csv, art = plays_artifact
    other = _split_file(csv, tmp_path / "seed7.npz", seed=7)
    res = invoke("evaluate", art, "--split-file", other, "-k", "5")
    assert res.exit_code == 0, res.output
    assert "seed7.npz" in "".join(res.output.split()) and "sampled-99" in res.output


def test_split_file_of_other_data_is_refused(tmp_path, plays_artifact):
    _, art = plays_artifact
    foreign = _split_file(write_plays(tmp_path / "other.csv", n_users=30, seed=3), tmp_path / "x.npz", 0)
    res = invoke("evaluate", art, "--split-file", foreign)
    assert res.exit_code == 2 and "another dataset" in res.output
