"""Resumable training checkpoints without pickle.

A checkpoint is a folder written atomically with :func:`recfunnel.atomic.atomic_dir`::

    model.safetensors    model.state_dict()
    train.safetensors    optimizer state tensors under ``opt.{i}.{param_id}.{name}``, tensor-valued
                         param-group entries under ``opt.{i}.group.{g}.{key}``, torch RNG under ``rng.torch``
                         (and the CUDA one under ``rng.cuda`` when CUDA was in use)
    checkpoint.json      written last: format version, trainer ``state``, per optimizer its class, its
                         non-tensor per-parameter values (e.g. SparseAdam's int ``step``) and its
                         ``param_groups``, plus the sha256 of both safetensors files

Tuples inside optimizer values (e.g. ``betas``) are stored as ``{"__tuple__": [...]}`` so a restored
optimizer's ``state_dict()`` equals the saved one exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recfunnel.artifacts import safetensors_ready
from recfunnel.errors import RecfunnelError
from recfunnel.folder import FolderKind, read_checked_folder, write_folder

if TYPE_CHECKING:
    from recfunnel.data.dataset import Dataset
    from recfunnel.data.splits import Split

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "check_identity",
    "fingerprint_arrays",
    "split_fingerprint",
    "data_identity",
]

CHECKPOINT_FORMAT_VERSION = 1
MODEL_NAME = "model.safetensors"
TRAIN_NAME = "train.safetensors"
META_NAME = "checkpoint.json"
RNG_KEY = "rng.torch"
CUDA_RNG_KEY = "rng.cuda"  # the current CUDA device's generator, when CUDA was in use
_TUPLE = "__tuple__"
_TENSOR = "__tensor__"


class CheckpointError(RecfunnelError, ValueError):
    """A checkpoint is missing, half-written, corrupt, or does not fit the model/optimizers/data given.

    Also a ValueError, as the run layer's other refusals of what it was asked to resume."""


CHECKPOINT = FolderKind(
    noun="checkpoint",
    manifest=META_NAME,
    format_version=CHECKPOINT_FORMAT_VERSION,
    error=CheckpointError,
    required=(("optimizers", list),),
)
_RESUME_HINT = (
    "To start afresh, delete the checkpoint folder; to resume it, run with the model, optimisers and "
    "data it was saved with"
)


def fingerprint_arrays(*arrays: np.ndarray | torch.Tensor | None) -> str:
    """sha256 hex over arrays' dtype, shape and bytes, in order (None counts as an absent slot), so
    equal fingerprints mean equal arrays, not merely equal bytes."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def split_fingerprint(split: Split) -> str:
    """sha256 hex of a split: method, parameters, the dataset fingerprint it was made for, the
    train / valid / test rows and the sampled negatives."""
    head = json.dumps(
        {"method": split.method, "params": split.params, "dataset": split.dataset_fingerprint},
        sort_keys=True,
        default=str,
    )
    negs = [
        x for k in sorted(split.negatives) for x in (np.frombuffer(k.encode(), np.uint8), split.negatives[k])
    ]
    return fingerprint_arrays(
        np.frombuffer(head.encode(), np.uint8), split.train, split.valid, split.test, *negs
    )


def data_identity(dataset: Dataset, split: Split, **more: str) -> dict[str, str]:
    """``{"dataset": dataset.fingerprint(), "split": split_fingerprint(split), **more}``: what a
    checkpoint records so that ``--resume`` on other data is refused (see Trainer.fit's identity)."""
    return {"dataset": dataset.fingerprint(), "split": split_fingerprint(split), **more}


def check_identity(
    where: str | os.PathLike[str], saved: Mapping[str, str] | None, wanted: Mapping[str, str]
) -> None:
    """Raise CheckpointError naming the first key whose value differs between the identity saved in
    a checkpoint and this run's (old and new value), saying to delete ``where`` or use the original."""
    saved = dict(saved or {})
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key), wanted.get(key)
        if old != new:
            raise CheckpointError(
                f"cannot resume: the checkpoint was saved with {key} {_short(old)}, this run has {key} "
                f"{_short(new)}; resuming would silently continue training on other data or settings. "
                f"Delete {where} to start afresh, or resume with the original {key}"
            )


def _short(value: str | None) -> str:
    """A fingerprint (long hex) by its first 16 digits; a readable value whole, up to 80 characters."""
    if value is None:
        return "not recorded"
    if len(value) > 80 or (len(value) > 24 and all(c in "0123456789abcdef" for c in value)):
        return repr(value[:16] + "...")
    return repr(value)


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
    shapes = [[list(p.shape) for p in group["params"]] for group in opt.param_groups]
    return {"class": type(opt).__name__, "scalars": scalars, "param_groups": groups, "param_shapes": shapes}


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    state: dict[str, Any],
    identity: Mapping[str, str] | None = None,
) -> None:
    """Write a resumable checkpoint folder at ``path`` atomically (replacing any existing one).

    ``state`` is the trainer's JSON-serialisable state (epoch, best metric, history, ...); it is returned
    unchanged (modulo JSON: tuples come back as lists) by :func:`load_checkpoint`. ``identity``
    ({name: fingerprint}, e.g. :func:`data_identity`) is recorded for :func:`load_checkpoint` to check.
    """
    try:
        state_json = json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"trainer state is not JSON-serialisable: {exc}") from exc
    if identity is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in identity.items()
    ):
        raise CheckpointError(f"identity must map names to strings (fingerprints), got {dict(identity)!r}")

    try:
        model_tensors = safetensors_ready(model.state_dict(), "model state_dict entry")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save model: {exc}") from exc
    train_tensors: dict[str, torch.Tensor] = {RNG_KEY: torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from it
        train_tensors[CUDA_RNG_KEY] = torch.cuda.get_rng_state()
    opt_meta = [_flatten_optimizer(i, opt, train_tensors) for i, opt in enumerate(optimizers)]
    try:
        train_tensors = safetensors_ready(train_tensors, "optimizer state")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save optimizer state: {exc}") from exc
    meta = {
        "torch_version": torch.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "state": json.loads(state_json),
        "optimizers": opt_meta,
        "identity": dict(identity) if identity is not None else None,
    }
    files = {
        MODEL_NAME: lambda target: save_file(model_tensors, target),
        TRAIN_NAME: lambda target: save_file(train_tensors, target),
    }
    write_folder(path, CHECKPOINT, files, meta)


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``checkpoint.json`` of the checkpoint at ``path`` and verify its files (checksums, nothing
    missing or unlisted); raises CheckpointError. Loads no tensors."""
    path = Path(path)
    meta = read_checked_folder(path, CHECKPOINT)
    if set(meta["files"]) != {MODEL_NAME, TRAIN_NAME} or "state" not in meta:
        raise CheckpointError(f"{path / META_NAME} is malformed: it must list {MODEL_NAME} and {TRAIN_NAME}")
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
    identity: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Restore ``model``, ``optimizers`` (same order, classes and param groups as when saved) and the
    torch global RNG state from the checkpoint at ``path``; return the trainer ``state`` dict.

    Presence, checksums, the ``identity`` (when given: must equal the saved one, key by key),
    optimizer count/classes, model keys/shapes and optimizer state shapes are checked before anything
    is modified; raises :class:`CheckpointError` with a sentence on what differs and what to do.
    """
    path = Path(path)
    meta = read_checkpoint_meta(path)
    if identity is not None:
        check_identity(path, meta.get("identity"), identity)
    saved_opts = meta["optimizers"]
    if len(saved_opts) != len(optimizers):
        raise CheckpointError(
            f"checkpoint {path} holds state for {len(saved_opts)} optimizer(s), got {len(optimizers)} "
            f"(sparse and dense embeddings get separate optimisers). {_RESUME_HINT}"
        )
    for i, (saved, opt) in enumerate(zip(saved_opts, optimizers, strict=True)):
        if saved.get("class") != type(opt).__name__:
            raise CheckpointError(
                f"optimizer {i} in checkpoint {path} was {saved.get('class')}, got {type(opt).__name__}. "
                f"{_RESUME_HINT}"
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

    # load_state_dict copies matching entries before it reports mismatches, and optimisers accept
    # state of the wrong shape until their next step: check everything first, so that a checkpoint
    # for another model leaves this one untouched and no raw error comes later.
    _check_model_fits(path, model.state_dict(), model_sd)
    for i, (saved, opt) in enumerate(zip(saved_opts, optimizers, strict=True)):
        _check_optimizer_fits(path, i, saved, opt)
    try:
        model.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model: {exc}. {_RESUME_HINT}") from exc
    for i, (opt, sd) in enumerate(zip(optimizers, opt_sds, strict=True)):
        try:
            opt.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"optimizer {i} ({type(opt).__name__}) state in checkpoint {path} does not fit: {exc}. "
                f"{_RESUME_HINT}"
            ) from exc
    torch.set_rng_state(train_tensors[RNG_KEY])
    if CUDA_RNG_KEY in train_tensors and torch.cuda.is_available():  # a CPU resume has no use for it
        torch.cuda.set_rng_state(train_tensors[CUDA_RNG_KEY])
    return meta["state"]


def _check_model_fits(
    path: Path, current: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]
) -> None:
    missing = sorted(set(current) - set(saved))
    unexpected = sorted(set(saved) - set(current))
    wrong = sorted(k for k in set(current) & set(saved) if current[k].shape != saved[k].shape)
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        shapes = ", ".join(f"{k} {list(saved[k].shape)} -> {list(current[k].shape)}" for k in wrong[:5])
        parts.append(f"shape mismatch (checkpoint -> model) {shapes}")
    if missing:
        parts.append(f"missing from the checkpoint {missing[:5]}")
    if unexpected:
        parts.append(f"not in the model {unexpected[:5]}")
    raise CheckpointError(
        f"checkpoint {path} does not fit this model: {'; '.join(parts)}. The model changed since it was "
        f"saved (other hyper-parameters, or data with other user/item counts). {_RESUME_HINT}"
    )


def _check_optimizer_fits(path: Path, i: int, saved: Mapping[str, Any], opt: torch.optim.Optimizer) -> None:
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(opt.param_groups):
        raise CheckpointError(
            f"optimizer {i} ({type(opt).__name__}) in checkpoint {path} has "
            f"{len(groups) if isinstance(groups, list) else '?'} parameter group(s), this one "
            f"{len(opt.param_groups)}. {_RESUME_HINT}"
        )
    shapes = saved.get("param_shapes")  # absent in checkpoints of older recfunnel: sizes only
    for g, (sg, group) in enumerate(zip(groups, opt.param_groups, strict=True)):
        now = [list(p.shape) for p in group["params"]]
        then = shapes[g] if isinstance(shapes, list) and g < len(shapes) else None
        if len(sg.get("params", ())) != len(now) or (then is not None and then != now):
            described = then if then is not None else f"{len(sg.get('params', ()))} parameters"
            raise CheckpointError(
                f"optimizer {i} ({type(opt).__name__}) group {g} in checkpoint {path} holds parameters "
                f"of shapes {_clip(described)}, this model's are {_clip(now)}. {_RESUME_HINT}"
            )


def _clip(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
