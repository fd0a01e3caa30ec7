"""One artifact format for every family: a checked folder (:mod:`recfunnel.artifacts`) holding the
weights (safetensors; LightGBM: its text model), the model config, the field schema of field
families, the user / item vocabularies, the seen items, sequence histories, the run config and the
split — every file written inside the temporary folder before the one rename and checksummed in
the manifest. No pickle.

    path = save_fit(fit(cfg), "artifacts/deepfm")     # any family
    art = load_model(path)                              # -> Loaded: model, vocabularies, run, split
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import recfunnel
from recfunnel.artifacts import ArtifactError, load_artifact, save_artifact
from recfunnel.data.dataset import Dataset
from recfunnel.data.fields import FieldSchema
from recfunnel.data.sequences import user_sequences
from recfunnel.data.splits import Split
from recfunnel.data.vocab import Vocab
from recfunnel.models.base import HistoryAware, build_model, model_class
from recfunnel.models.ctr.base import build_ctr
from recfunnel.run.config import RunConfig

__all__ = ["Loaded", "load_model", "save_fit", "save_model", "seen_matrix"]

SPLIT_FILE = "split.npz"
LIGHTGBM_FILE = "lightgbm.txt"


@dataclass
class Loaded:
    """What an artifact holds, ready to answer: the model (eval mode) and everything around it."""

    family: str
    model: Any
    users: Vocab
    items: Vocab
    seen: sp.csr_matrix
    titles: list[str] | None
    metrics: dict[str, Any]
    run: RunConfig | None
    schema: FieldSchema | None
    split: Split | None
    path: Path
    extra: dict[str, Any]


def seen_matrix(dataset: Dataset, split: Split) -> sp.csr_matrix:
    """The user x item matrix of the train and valid parts: what a recommendation excludes."""
    rows = np.sort(np.concatenate([split.train, split.valid]))
    return dataset.interactions.take(rows).matrix(dataset.n_users, dataset.n_items)


def _split_writer(split: Split):
    def write(path: Path) -> None:
        split.save(path)

    return write


def save_model(
    path: str | os.PathLike[str],
    model: Any,
    *,
    users: Vocab,
    items: Vocab,
    seen: sp.csr_matrix,
    titles: list[str] | None = None,
    run: RunConfig | None = None,
    split: Split | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write any fitted model as one artifact folder, atomically (replacing what is there)."""
    family = model.family
    tensors: dict[str, torch.Tensor] = {
        "seen.indptr": torch.from_numpy(seen.indptr.astype(np.int64)),
        "seen.indices": torch.from_numpy(seen.indices.astype(np.int64)),
    }
    files: dict[str, Any] = {}
    schema = getattr(model, "schema", None) if model_class(family).inputs == "fields" else None
    if family == "lightgbm":
        files[LIGHTGBM_FILE] = model.to_text().encode("utf-8")
    else:
        tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    history = model.get_history() if isinstance(model, HistoryAware) else None
    if history is not None:  # sequence models: the time-ordered histories recommend() reads
        tensors["history.indptr"], tensors["history.items"] = history
    if split is not None:
        files[SPLIT_FILE] = _split_writer(split)
    vocabs = {"users": list(users.ids), "items": list(items.ids)}
    if titles:
        vocabs["item_titles"] = [t if isinstance(t, str) else "" for t in titles]
    config = {
        "kind": "fields" if schema is not None else "user-item",
        "model": model.config.model_dump(mode="json"),
        "n_users": len(users),
        "n_items": len(items),
        "schema": schema.to_json() if schema is not None else None,
    }
    run_json = run.resolved().model_dump(mode="json") if run is not None else None
    return save_artifact(
        path,
        family=family,
        config=config,
        tensors=tensors,
        vocabs=vocabs,
        metrics=metrics,
        extra={**(extra or {}), "run": run_json},
        files=files,
    )


def save_fit(res: Any, path: str | os.PathLike[str]) -> Path:
    """Write a :class:`~recfunnel.run.fit.FitResult` (its model, data vocabularies, seen items, run
    config, split and test metrics) as one artifact folder."""
    ds, split = res.dataset, res.split
    model = res.model
    if isinstance(model, HistoryAware):  # answer from the train + valid histories, time-ordered
        rows = np.sort(np.concatenate([split.train, split.valid]))
        model.set_history(*user_sequences(ds.interactions.take(rows), ds.n_users))
    metrics = {f"{r.protocol}/{k}": v for r in res.results for k, v in r.metrics.items()}
    return save_model(
        path,
        model,
        users=ds.users,
        items=ds.items,
        seen=seen_matrix(ds, split),
        titles=ds.item_titles(),
        run=res.config,
        split=split,
        metrics=metrics,
        extra={"dataset": ds.summary(), "fingerprint": ds.fingerprint(), "split": split.describe()},
    )


def _resize_buffers(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Buffers whose size depends on the data (EASE's user histories) take the saved size."""
    own = dict(model.named_buffers())
    for name, value in state.items():
        if name in own and own[name].shape != value.shape and own[name].dim() == 1:
            mod_name, _, attr = name.rpartition(".")
            mod = model.get_submodule(mod_name) if mod_name else model
            setattr(mod, attr, torch.empty_like(value))


def _build(art: Any, path: Path) -> tuple[Any, FieldSchema | None]:
    cfg = art.config
    schema = FieldSchema.from_json(cfg["schema"]) if cfg.get("schema") else None
    if art.family == "lightgbm":
        from recfunnel.models.ctr.gbdt import LightGBMConfig, LightGBMRanker

        text = art.file(LIGHTGBM_FILE).read_text("utf-8")
        return LightGBMRanker.from_text(text, LightGBMConfig(**cfg["model"]), schema), schema
    if schema is not None:
        model = build_ctr(art.family, schema, cfg["model"])
    else:
        model = build_model(art.family, cfg["n_users"], cfg["n_items"], cfg["model"])
    state = {k[len("model.") :]: v for k, v in art.tensors.items() if k.startswith("model.")}
    _resize_buffers(model, state)
    model.load_state_dict(state)
    if isinstance(model, HistoryAware) and "history.indptr" in art.tensors:
        model.set_history(art.tensors["history.indptr"], art.tensors["history.items"])
    return model.eval(), schema


def load_model(path: str | os.PathLike[str]) -> Loaded:
    """Read an artifact folder written by :func:`save_model` / :func:`save_fit` (any family); the
    manifest and every checksum are checked before a weight is read."""
    path = Path(path)
    art = load_artifact(path)
    try:
        model, schema = _build(art, path)
        users = Vocab(tuple(art.vocabs["users"]), name="user")
        items = Vocab(tuple(art.vocabs["items"]), name="item")
        seen = sp.csr_matrix(
            (
                np.ones(len(art.tensors["seen.indices"]), np.float32),
                art.tensors["seen.indices"].numpy(),
                art.tensors["seen.indptr"].numpy(),
            ),
            shape=(len(users), len(items)),
        )
        extra = art.extra or {}
        run = RunConfig.model_validate(extra["run"]) if extra.get("run") else None
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ArtifactError(
            f"artifact at {path} does not match recfunnel {recfunnel.__version__}'s {art.family!r} model: {e}"
        ) from None
    split = Split.load(art.file(SPLIT_FILE)) if SPLIT_FILE in art.extra_files else None
    return Loaded(
        art.family,
        model,
        users,
        items,
        seen,
        art.vocabs.get("item_titles"),
        art.metrics or {},
        run,
        schema,
        split,
        path,
        extra,
    )
