"""Moved: the run layer is :mod:`recfunnel.run`. Importing an old name raises an ImportError that
says where it went."""

from __future__ import annotations

_MOVED = {
    "RunConfig": "recfunnel.run.RunConfig",
    "DataConfig": "recfunnel.run.DataConfig",
    "SplitConfig": "recfunnel.run.SplitConfig",
    "ModelSection": "recfunnel.run.ModelSection",
    "ObjectiveSection": "recfunnel.run.ObjectiveSection",
    "EvalSection": "recfunnel.run.EvalSection",
    "TrainConfig": "recfunnel.run.TrainConfig",
    "load_data": "recfunnel.run.load_data",
    "load_split": "recfunnel.run.load_split",
    "train_model": "recfunnel.run.fit (give it a RunConfig; it returns a FitResult)",
    "pretrained_neumf": "recfunnel.run.fit (RunConfig with model.pretrain = true)",
    "evaluate_all": "recfunnel.run.evaluate_run (or FitResult.results)",
}


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(f"recfunnel.pipeline.{name} has moved: use {_MOVED.get(name, 'recfunnel.run')}")
