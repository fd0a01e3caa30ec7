"""`recfunnel train --model X` trains X with the configuration its suite chose on the valid part:
the family's train settings and objective parameters under the TOML file's values, under the flags."""

import pytest
import tomli_w

from recfunnel.cli.train import run_config
from recfunnel.models.mf import MF
from recfunnel.models.ncf import GMF, MLP, NeuMF
from recfunnel.run import TrainConfig
from recfunnel.run.config import family_defaults


@pytest.mark.parametrize("cls", [MF, GMF, MLP, NeuMF])
def test_a_bare_run_gets_the_familys_tuned_train_settings_and_objective_parameters(cls):
    cfg = run_config(None, {"model": {"name": cls.family}, "train": {"progress": False}})
    for k, v in cls.train_defaults.items():
        assert getattr(cfg.train, k) == v, k
    assert cfg.objective.params == dict(getattr(cls, "objective_defaults", {}))
    assert cfg.model.params == {}  # model hyper-parameters: the Config's own defaults


def test_the_default_model_is_neumf_with_its_tuned_settings():
    cfg = run_config(None, {})
    assert cfg.model.name == "neumf"
    assert cfg.train.batch_size == NeuMF.train_defaults["batch_size"]


def test_toml_values_win_over_family_defaults_and_flags_over_both(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        tomli_w.dumps({"model": {"name": "mf"}, "train": {"lr": 0.5}, "objective": {"params": {"reg": 0.2}}})
    )
    cfg = run_config(path, {})
    assert cfg.train.lr == 0.5 and cfg.objective.params == {"reg": 0.2}
    assert cfg.train.batch_size == MF.train_defaults["batch_size"]  # not in the file: the family's
    cfg = run_config(path, {"train": {"lr": 0.25, "batch_size": 7}})
    assert cfg.train.lr == 0.25 and cfg.train.batch_size == 7


def test_objective_defaults_apply_to_the_familys_own_objective_only():
    assert family_defaults("mf")["objective"] == {"params": dict(MF.objective_defaults)}
    assert "objective" not in family_defaults("mf", "bce")
    cfg = run_config(None, {"model": {"name": "mf"}, "objective": {"name": "bce"}})
    assert cfg.objective.params == {}


def test_families_without_tuned_defaults_and_unknown_names_get_none():
    assert family_defaults("no-such-model") == {}
    cfg = run_config(None, {"model": {"name": "ease"}})
    assert cfg.train == TrainConfig()


def test_the_library_paths_get_the_same_tuned_settings_as_the_cli(tmp_path):
    """RunConfig.from_toml / RunConfig.tuned, Recommender and a funnel's model section layer the
    family's tuned settings the way `recfunnel train` does; RunConfig(...) itself does not."""
    from recfunnel.funnel.config import ModelSpec
    from recfunnel.recommender import Recommender
    from recfunnel.run import RunConfig

    cli = run_config(None, {"model": {"name": "mf"}})
    assert RunConfig.tuned({"model": {"name": "mf"}}) == cli
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps({"model": {"name": "mf"}, "train": {"lr": 0.5}}))
    from_file = RunConfig.from_toml(path)
    assert from_file.train.lr == 0.5 and from_file.train.batch_size == MF.train_defaults["batch_size"]
    assert RunConfig(model={"name": "mf"}).train == TrainConfig()  # explicit: generic defaults

    rec = Recommender("mf", train={"epochs": 2})
    assert rec.train_config.epochs == 2 and rec.train_config.batch_size == MF.train_defaults["batch_size"]
    assert rec.run_config.objective.params == dict(MF.objective_defaults)
    assert Recommender("mf", run=RunConfig(model={"name": "mf"})).train_config == TrainConfig()

    spec = ModelSpec.model_validate({"model": {"name": "neumf"}, "train": {"epochs": 3}})
    assert spec.train.epochs == 3 and spec.train.batch_size == NeuMF.train_defaults["batch_size"]
    assert ModelSpec.model_validate({"model": {"name": "two-tower"}}).train == TrainConfig()
