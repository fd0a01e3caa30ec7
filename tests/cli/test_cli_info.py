"""`recfunnel models` and the help texts: every family listed, every default shown."""

from __future__ import annotations

import typer
from conftest import invoke

from recfunnel.cli import app
from recfunnel.models import MODELS, Model, ModelConfig
from recfunnel.run import TrainConfig

#: options that choose what to act on rather than configure it: no default applies
CHOICES = {"--user", "--item", "--all-users", "--user-col", "--item-col"}


class _Undocumented(Model):
    family = "undocumented"
    Config = ModelConfig


def test_models_lists_a_family_without_a_docstring(monkeypatch):
    monkeypatch.setitem(MODELS, "undocumented", _Undocumented)
    res = invoke("models")
    assert res.exit_code == 0, res.output
    assert "undocumented" in res.output and "no description" in res.output


def test_train_help_lists_every_registered_family():
    res = invoke("train", "--help", env={"COLUMNS": "400"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert all(f"{name}," in text or f"{name};" in text for name in MODELS), text


def test_every_option_shows_its_default():
    group = typer.main.get_command(app)
    missing = []
    for name, cmd in group.commands.items():
        for p in cmd.params:
            if p.param_type_name != "option" or p.name == "help" or set(p.opts) & CHOICES or p.required:
                continue
            shown_by_typer = p.default not in (None, [], ()) and not (p.is_flag and not p.secondary_opts)
            if not shown_by_typer and "default" not in (p.help or ""):
                missing.append(f"{name} {p.opts[0]}")
    assert not missing, f"options whose help shows no default: {missing}"
    res = invoke("train", "--help", env={"COLUMNS": "400"})
    epochs = TrainConfig.model_fields["epochs"].default
    text = " ".join(res.output.split())
    assert "(default: the config's train.device, else auto)" in text
    assert f"tuned setting where it has one, else {epochs})" in res.output
