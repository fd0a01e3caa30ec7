"""The run layer, recfunnel.run: the typed RunConfig, fit() (data named by the config or given,
split made or loaded, objective, NeuMF pre-training), evaluation of a fitted run, the artifact a
run writes, and the moved names of recfunnel.pipeline. Every family's own contract is in
tests/models/contract.py; these are the run's own paths, on the contract's synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "models"))

from contract import synthetic_movielens  # noqa: E402

from recfunnel.data.dataset import Dataset  # noqa: E402
from recfunnel.data.errors import DataError  # noqa: E402
from recfunnel.data.schema import ColumnMapping  # noqa: E402
from recfunnel.data.splits import leave_one_out, temporal  # noqa: E402
from recfunnel.errors import ConfigError  # noqa: E402
from recfunnel.run import (  # noqa: E402
    EvalSection,
    RunConfig,
    evaluate_model,
    evaluate_run,
    fit,
    load_data,
    load_model,
    load_split,
)

QUICK = {"epochs": 1, "batch_size": 256, "progress": False, "patience": 0}


@pytest.fixture(scope="module")
def ds() -> Dataset:
    torch.set_num_threads(1)
    return synthetic_movielens(n_users=60, n_items=40)


def _cfg(family: str = "popularity", params: dict | None = None, **sections) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"name": family, "params": params or {}},
            "split": {"eval_negatives": 10},
            "train": QUICK,
            "eval": {"ks": (5,)},
            **sections,
        }
    )


# ---- the config ---------------------------------------------------------------------------------
def test_known_protocols_pass_and_a_typo_names_the_valid_ones():
    assert EvalSection(protocols=("full-unmasked", "sampled")).protocols == ("full-unmasked", "sampled")
    with pytest.raises(pydantic.ValidationError, match="valid: full, full-unmasked, sampled"):
        EvalSection(protocols=("ful",))
    with pytest.raises(pydantic.ValidationError, match="cut-offs K must be >= 1"):
        EvalSection(ks=(0, 10))


def test_run_config_rejects_unknown_sections_and_keys():
    with pytest.raises(pydantic.ValidationError):
        RunConfig.model_validate({"eval": {"protocol": ["full"]}})
    with pytest.raises(pydantic.ValidationError):
        RunConfig.model_validate({"trainer": {}})


def test_run_config_reads_toml_with_overrides_merged_section_by_section(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "mf"\nparams = {factors = 8}\n[train]\nepochs = 3\nlr = 0.01\n')
    cfg = RunConfig.from_toml(path, {"train": {"epochs": 1}, "model": {"params": {"init_std": 0.1}}})
    assert cfg.model.name == "mf" and cfg.model.params == {"factors": 8, "init_std": 0.1}
    assert (cfg.train.epochs, cfg.train.lr) == (1, 0.01)
    assert cfg.updated({"split": {"seed": 3}}).split.seed == 3 and cfg.split.seed == 0  # a copy
    assert RunConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("train_model", "recfunnel.run.fit"),
        ("RunConfig", "recfunnel.run.RunConfig"),
        ("evaluate_all", "recfunnel.run.evaluate_run"),
        ("anything_else", "recfunnel.run"),
    ],
)
def test_old_pipeline_names_raise_import_error_naming_recfunnel_run(name, where):
    with pytest.raises(ImportError, match=rf"recfunnel\.pipeline\.{name} has moved: use {where}"):
        exec(f"from recfunnel.pipeline import {name}", {})


def test_from_pipeline_import_train_model_names_recfunnel_run():
    with pytest.raises(ImportError, match="recfunnel.run"):
        from recfunnel.pipeline import train_model  # noqa: F401


# ---- data and split -----------------------------------------------------------------------------
def test_unknown_family_fails_before_any_data_is_read(tmp_path):
    cfg = _cfg().updated({"model": {"name": "nope"}, "data": {"data_root": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="unknown model 'nope'; valid: .*deepfm.*lightgbm.*two-tower"):
        fit(cfg)


def test_fit_reads_the_table_its_config_names(ds, tmp_path):
    ints = ds.interactions
    path = tmp_path / "ratings.csv"
    lines = ["user_id,item_id,stars,ts"] + [
        f"u{ds.users.ids[u]},i{ds.items.ids[i]},{r:g},{t}"
        for u, i, r, t in zip(ints.user, ints.item, ints.rating, ints.timestamp, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    table = ColumnMapping(path=path, user="user_id", item="item_id", rating="stars", timestamp="ts")
    cfg = _cfg().updated({"data": {"table": table.model_dump(mode="json"), "rating_threshold": 4.0}})
    read = load_data(cfg.data)
    assert read.name == "ratings" and read.n_users == ds.n_users and "u1" in read.users
    assert (read.interactions.rating >= 4).all() and any("rating >= 4.0" in n for n in read.notes)
    res = fit(cfg)
    assert res.dataset.fingerprint() == read.fingerprint() and res.split.method == "leave_one_out"


def test_load_split_reuses_a_saved_split_and_refuses_it_for_other_data(ds, tmp_path):
    made = load_split(_cfg().split, ds)
    assert made.negatives["test"].shape[1] == 10
    path = made.save(tmp_path / "split.npz")
    again = load_split(_cfg(split={"path": str(path)}).split, ds)
    assert np.array_equal(again.train, made.train) and np.array_equal(again.test, made.test)
    other = synthetic_movielens(n_users=60, n_items=40, seed=1)
    with pytest.raises(DataError, match="another dataset"):
        load_split(_cfg(split={"path": str(path)}).split, other)


# ---- fit ----------------------------------------------------------------------------------------
def test_fit_out_writes_the_artifact_load_model_reads(ds, tmp_path):
    res = fit(_cfg("mf", {"factors": 4}), ds, out=tmp_path / "mf")
    assert res.path == tmp_path / "mf" and (res.path / "split.npz").is_file()
    art = load_model(res.path)
    assert art.family == "mf" and art.run == res.config
    assert art.metrics == {f"{r.protocol}/{k}": v for r in res.results for k, v in r.metrics.items()}
    assert art.extra["fingerprint"] == ds.fingerprint()


def test_the_objective_section_replaces_the_family_objective(ds):
    assert fit(_cfg("mf"), ds, evaluate=False).objective.name == "bpr"
    res = fit(_cfg("mf", objective={"name": "bce", "params": {"k": 2}}), ds, evaluate=False)
    assert res.objective.name == "bce"
    with pytest.raises(ConfigError, match="unknown objective 'nope'; valid: .*bpr"):
        fit(_cfg("mf", objective={"name": "nope"}), ds, evaluate=False)


def test_sequence_objectives_read_windows_as_long_as_the_model_does(ds):
    res = fit(_cfg("sasrec", {"hidden": 8, "max_len": 7, "blocks": 1}), ds, evaluate=False)
    assert res.objective.max_len == 7


def test_neumf_pretraining_builds_neumf_from_trained_gmf_and_mlp(ds):
    params = {"factors": 4, "layers": (8, 4)}
    res = fit(_cfg("neumf", params, model={"name": "neumf", "params": params, "pretrain": True}), ds)
    assert res.pretrain_seconds is not None and res.pretrain_seconds > 0
    assert res.model.family == "neumf" and res.results
    with pytest.raises(ValueError, match="model.pretrain applies to neumf only"):
        fit(_cfg("mf", model={"name": "mf", "pretrain": True}), ds)


def test_closed_form_families_are_fitted_without_a_training_loop(ds):
    res = fit(_cfg("ease", {"l2": 10.0}), ds)
    assert res.report is not None and res.report.history == [] and res.objective is None


# ---- evaluation ---------------------------------------------------------------------------------
def test_evaluate_run_scores_the_asked_part_and_protocols(ds):
    res = fit(_cfg("popularity"), ds)
    assert [r.protocol for r in res.results] == ["full", "sampled-10"]
    valid = evaluate_run(res, part="valid", protocols=("full",), ks=(3,))
    assert [(r.part, r.protocol, r.ks) for r in valid] == [("valid", "full", (3,))]
    with pytest.raises(ValueError, match="unknown part 'train'; valid: valid, test"):
        evaluate_run(res, part="train")


def test_evaluate_model_skips_or_refuses_sampled_without_negatives(ds):
    split = leave_one_out(ds)  # no fixed negatives
    res = fit(_cfg("popularity"), ds, split, evaluate=False)
    assert [r.protocol for r in evaluate_model(res.model, ds, split)] == ["full"]
    with pytest.raises(ValueError, match="needs fixed negatives for the test part"):
        evaluate_model(res.model, ds, split, skip_unavailable=False)
    with pytest.raises(ValueError, match="unknown protocol 'top'"):
        evaluate_model(res.model, ds, split, protocols=("top",))
    with pytest.raises(ValueError, match="cut-offs K must be >= 1"):
        evaluate_model(res.model, ds, split, ks=(0,))


def test_a_field_family_is_evaluated_pointwise_on_either_part(ds):
    res = fit(_cfg("lr"), ds, temporal(ds))
    assert [r.protocol for r in res.results] == ["pointwise"]
    valid = evaluate_run(res, part="valid")
    assert valid[0].part == "valid" and 0 <= valid[0].metrics["auc"] <= 1
