"""Resumable training checkpoints without pickle.

A checkpoint is a folder written atomically with :func:`recfunnel.atomic.atomic_dir`::

    model.safetensors    model.state_dict()
    train.safetensors    optimizer state tensors under ``opt.{i}.{param_id}.{name}``, tensor-valued
                         param-group entries under ``opt.{i}.group.{g}.{key}``, torch RNG under ``rng.torch``
    checkpoint.json      written last: format version, trainer ``state``, per optimizer its class, its
                         non-tensor per-parameter values (e.g. SparseAdam's int ``step``) and its
                         ``param_groups``, plus the sha256 of both safetensors files

Tuples inside optimizer values (e.g. ``betas``) are stored as ``{"__tuple__": [...]}`` so a restored
optimizer's ``state_dict()`` equals the saved one exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import recfunnel
from recfunnel.artifacts import safetensors_ready, sha256_file
from recfunnel.atomic import atomic_dir
from recfunnel.errors import RecfunnelError

__all__ = ["CHECKPOINT_FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT_VERSION = 1
MODEL_NAME = "model.safetensors"
TRAIN_NAME = "train.safetensors"
META_NAME = "checkpoint.json"
RNG_KEY = "rng.torch"
_TUPLE = "__tuple__"
_TENSOR = "__tensor__"


class CheckpointError(RecfunnelError):
    """A checkpoint is missing, half-written, corrupt, or does not fit the model/optimizers given."""


def _encode(value: Any, where: str) -> Any:
    """Optimizer value -> JSON value (tuples tagged so they round-trip)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"{where}: dict with non-string keys cannot be stored in JSON")
        return {k: _encode(v, where) for k, v in value.items()}
    raise CheckpointError(f"{where}: cannot store a {type(value).__name__} without pickle")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(v) for v in value[_TUPLE])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _flatten_optimizer(i: int, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict:
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        if not isinstance(pid, int):
            raise CheckpointError(f"optimizer {i} ({type(opt).__name__}): state key {pid!r} is not an int")
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{i}.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = _encode(value, f"optimizer {i} state[{pid}][{name}]")
    groups = []
    for g, group in enumerate(sd["param_groups"]):
        enc = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):  # e.g. a Tensor lr
                tensors[f"opt.{i}.group.{g}.{key}"] = value
                enc[key] = {_TENSOR: True}
            else:
                enc[key] = _encode(value, f"optimizer {i} param_groups[{g}][{key}]")
        groups.append(enc)
    return {"class": type(opt).__name__, "scalars": scalars, "param_groups": groups}


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    """Write a resumable checkpoint folder at ``path`` atomically (replacing any existing one).

    ``state`` is the trainer's JSON-serialisable state (epoch, best metric, history, ...); it is returned
    unchanged (modulo JSON: tuples come back as lists) by :func:`load_checkpoint`.
    """
    path = Path(path)
    try:
        state_json = json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"trainer state is not JSON-serialisable: {exc}") from exc

    try:
        model_tensors = safetensors_ready(model.state_dict(), "model state_dict entry")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save model: {exc}") from exc
    train_tensors: dict[str, torch.Tensor] = {RNG_KEY: torch.get_rng_state()}
    opt_meta = [_flatten_optimizer(i, opt, train_tensors) for i, opt in enumerate(optimizers)]
    try:
        train_tensors = safetensors_ready(train_tensors, "optimizer state")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save optimizer state: {exc}") from exc

    with atomic_dir(path) as tmp:
        save_file(model_tensors, tmp / MODEL_NAME)
        save_file(train_tensors, tmp / TRAIN_NAME)
        meta = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "library": "recfunnel",
            "library_version": recfunnel.__version__,
            "torch_version": torch.__version__,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "state": json.loads(state_json),
            "optimizers": opt_meta,
            "files": {name: sha256_file(tmp / name) for name in (MODEL_NAME, TRAIN_NAME)},
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: it is a file, a checkpoint is a folder")
    mpath = path / META_NAME
    if not mpath.is_file():
        listing = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing (empty folder)"
        raise CheckpointError(
            f"{path} has no {META_NAME}: it looks half-written or is not a recfunnel checkpoint "
            f"(it contains: {listing})"
        )
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{mpath} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    if not isinstance(meta, dict) or meta.get("library") != "recfunnel":
        raise CheckpointError(f"{path} is not a recfunnel checkpoint")
    version = meta.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION or isinstance(version, bool):
        raise CheckpointError(
            f"checkpoint format v{version} was written by recfunnel {meta.get('library_version', '?')}; "
            f"this is recfunnel {recfunnel.__version__} which reads checkpoint format "
            f"v{CHECKPOINT_FORMAT_VERSION}"
        )
    files = meta.get("files")
    if (
        not isinstance(files, dict)
        or set(files) != {MODEL_NAME, TRAIN_NAME}
        or not isinstance(meta.get("optimizers"), list)
        or "state" not in meta
    ):
        raise CheckpointError(f"{mpath} is malformed")
    for name, expected in files.items():
        if not (path / name).is_file():
            raise CheckpointError(f"{name} is missing from checkpoint {path}")
        if sha256_file(path / name) != expected:
            raise CheckpointError(f"{name} in checkpoint {path} is corrupt (sha256 mismatch)")
    return meta


def _rebuild_optimizer_state(i: int, saved: dict, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, values in saved["scalars"].items():
        state.setdefault(int(pid), {}).update({k: _decode(v) for k, v in values.items()})
    groups = [{k: _decode(v) for k, v in g.items()} for g in saved["param_groups"]]
    prefix = f"opt.{i}."
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if rest.startswith("group."):
            g, name = rest[len("group.") :].split(".", 1)
            groups[int(g)][name] = value
        else:
            pid, name = rest.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    # Keep the param-id order torch would produce (ints ascending as they appear in param_groups).
    order = [pid for g in groups for pid in g["params"]]
    ordered = {pid: state[pid] for pid in order if pid in state}
    ordered.update({pid: s for pid, s in state.items() if pid not in ordered})
    return {"state": ordered, "param_groups": groups}


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
) -> dict[str, Any]:
    """Restore ``model``, ``optimizers`` (same order, classes and param groups as when saved) and the
    torch global RNG state from the checkpoint at ``path``; return the trainer ``state`` dict.

    Presence, checksums, optimizer count/classes and model keys/shapes are checked before anything is
    modified; raises :class:`CheckpointError` on any problem.
    """
    path = Path(path)
    meta = _read_meta(path)
    saved_opts = meta["optimizers"]
    if len(saved_opts) != len(optimizers):
        raise CheckpointError(
            f"checkpoint {path} holds state for {len(saved_opts)} optimizer(s), got {len(optimizers)}"
        )
    for i, (saved, opt) in enumerate(zip(saved_opts, optimizers, strict=True)):
        if saved.get("class") != type(opt).__name__:
            raise CheckpointError(
                f"optimizer {i} in checkpoint {path} was {saved.get('class')}, got {type(opt).__name__}"
            )
    try:
        model_sd = load_file(path / MODEL_NAME, device="cpu")
        train_tensors = load_file(path / TRAIN_NAME, device="cpu")
    except Exception as exc:
        raise CheckpointError(f"cannot read safetensors in checkpoint {path}: {exc}") from exc
    if RNG_KEY not in train_tensors:
        raise CheckpointError(f"checkpoint {path} has no RNG state")
    try:
        opt_sds = [_rebuild_optimizer_state(i, s, train_tensors) for i, s in enumerate(saved_opts)]
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise CheckpointError(f"optimizer state in checkpoint {path} is malformed: {exc!r}") from exc

    # load_state_dict copies matching entries before it reports mismatches; check first so that a
    # checkpoint for another model leaves this one untouched.
    current = model.state_dict()
    missing = sorted(set(current) - set(model_sd))
    unexpected = sorted(set(model_sd) - set(current))
    wrong_shape = sorted(k for k in set(current) & set(model_sd) if current[k].shape != model_sd[k].shape)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatch {wrong_shape[:5]}"
        )
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {exc}") from exc
    for i, (opt, sd) in enumerate(zip(optimizers, opt_sds, strict=True)):
        try:
            opt.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"optimizer {i} ({type(opt).__name__}) state in checkpoint {path} does not fit: {exc}"
            ) from exc
    torch.set_rng_state(train_tensors[RNG_KEY])
    return meta["state"]
