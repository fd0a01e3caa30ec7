"""Saved models as self-describing folders: safetensors weights, JSON vocabularies, JSON manifest.

Layout of an artifact folder::

    weights.safetensors      all tensors (safetensors, never pickle)
    vocab_<name>.json        one JSON list of raw id strings per vocabulary (index i -> id)
    <extra files>            what the caller passed in ``files=`` (e.g. the run's ``split.npz``)
    manifest.json            written last; format version, family, config, metrics, sha256 of every file
    index/<backend>/         optional, added later: ANN indexes, each a checked folder of its own

The folder is a checked folder (:mod:`recfunnel.folder`) written in one atomic step, so a reader sees
either the previous artifact or the complete new one, extra files included. :func:`load_artifact`
validates the manifest and every checksum, and refuses files the manifest does not list, before it
reads any weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recfunnel.errors import RecfunnelError
from recfunnel.folder import (
    LIBRARY,
    FileSource,
    FolderKind,
    check_file_name,
    read_folder_manifest,
    sha256_file,
    verify_folder_files,
    write_folder,
)

__all__ = [
    "FORMAT_VERSION",
    "LIBRARY",
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "INDEX_DIR",
    "Artifact",
    "ArtifactError",
    "save_artifact",
    "load_artifact",
    "read_manifest",
    "artifact_file",
    "sha256_file",
    "safetensors_ready",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
#: the sub-folder where indexes built later live (recfunnel.index.index_dir); each checks itself
INDEX_DIR = "index"
_VOCAB_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ArtifactError(RecfunnelError):
    """An artifact folder is missing, half-written, corrupt, or from an incompatible format version."""


ARTIFACT = FolderKind(
    noun="artifact",
    manifest=MANIFEST_NAME,
    format_version=FORMAT_VERSION,
    error=ArtifactError,
    required=(("family", str), ("vocab_hashes", dict), ("config", dict)),
    tolerated=(INDEX_DIR,),
)


@dataclass(frozen=True)
class Artifact:
    """A loaded artifact. ``vocabs[name][i]`` is the raw id of row ``i``."""

    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    vocabs: dict[str, list[str]]
    path: Path

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.manifest.get("metrics")

    @property
    def extra(self) -> dict[str, Any] | None:
        return self.manifest.get("extra")

    @property
    def extra_files(self) -> list[str]:
        """Names of the files saved through ``save_artifact(files=...)`` (checked at load)."""
        return list(self.manifest.get("extra_files") or [])

    def file(self, name: str) -> Path:
        """Path of the listed file ``name`` (its checksum was verified at load); ArtifactError if the
        artifact has none."""
        if name not in self.manifest["files"]:
            raise ArtifactError(_unlisted(self.path, name))
        return self.path / name


def safetensors_ready(tensors: Mapping[str, torch.Tensor], what: str = "tensor") -> dict[str, torch.Tensor]:
    """Detach, move to CPU and make contiguous; clone tensors that share storage with an earlier one
    (safetensors refuses aliased tensors, e.g. tied weights). Raises TypeError/ValueError on bad input."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} names must be str, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{what} {key!r} is a {type(value).__name__}, not a torch.Tensor")
        if value.layout != torch.strided:
            raise ValueError(f"{what} {key!r} has layout {value.layout}; convert it to dense first")
        t = value.detach().cpu().contiguous()
        if t.numel() > 0:
            ident = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            if ident in seen:
                t = t.clone()
            else:
                seen.add(ident)
        out[key] = t
    return out


def save_artifact(
    path: str | os.PathLike[str],
    *,
    family: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    vocabs: dict[str, list[str]],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    files: Mapping[str, FileSource] | None = None,
) -> Path:
    """Write a model artifact folder at ``path`` atomically (replacing any existing one); return the path.

    ``config``, ``metrics`` and ``extra`` must be JSON-serialisable. Vocabulary names become file names
    (``vocab_<name>.json``) so they are restricted to letters, digits, ``_``, ``.`` and ``-``.
    ``files``: more files to keep in the artifact, {name: bytes, or a callable that writes the path it
    is given}, e.g. ``{"split.npz": lambda p: split.save(p)}``. They are written inside the temp
    folder before the one rename and listed with their sha256 in the manifest (and their names under
    ``extra_files``), so a kill leaves the old artifact or the new one with them, and an edited file
    is refused at load. Names: letters, digits, ``_ . -``; not clashing with the weights, a
    vocabulary, the manifest or ``index``.
    """
    path = Path(path)
    if not isinstance(family, str) or not family:
        raise ArtifactError("family must be a non-empty string")
    try:
        ready = safetensors_ready(tensors)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"cannot save tensors: {exc}") from exc
    blobs: dict[str, FileSource] = {WEIGHTS_NAME: lambda target: save_file(ready, target)}
    vocab_hashes: dict[str, str] = {}
    for name, ids in vocabs.items():
        if not isinstance(name, str) or not _VOCAB_NAME_RE.match(name):
            raise ArtifactError(
                f"vocabulary name {name!r} is not usable in a file name (letters, digits, _ . - only)"
            )
        ids = list(ids)
        bad = next((x for x in ids if not isinstance(x, str)), None)
        if bad is not None:
            raise ArtifactError(
                f"vocabulary {name!r} holds a {type(bad).__name__} ({bad!r}); raw ids must be strings"
            )
        blob = json.dumps(ids, ensure_ascii=False).encode("utf-8")
        blobs[f"vocab_{name}.json"] = blob
        vocab_hashes[name] = hashlib.sha256(blob).hexdigest()
    extra_names = []
    for name, source in (files or {}).items():
        check_file_name(name, ARTIFACT)
        if name in blobs:
            raise ArtifactError(f"extra file {name!r} clashes with the artifact's own {name}; rename it")
        if not isinstance(source, (bytes, bytearray, memoryview)) and not callable(source):
            raise ArtifactError(
                f"extra file {name!r}: give bytes or a callable that writes the path it is given, "
                f"not a {type(source).__name__}"
            )
        blobs[name] = source
        extra_names.append(name)
    # Validate JSON-ability before writing anything.
    meta = {"config": config, "metrics": metrics, "extra": extra}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{key} is not JSON-serialisable: {exc}") from exc
    manifest = {
        "family": family,
        "config": config,
        "metrics": metrics,
        "extra": extra,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "vocab_hashes": vocab_hashes,
    }
    if extra_names:
        manifest["extra_files"] = sorted(extra_names)
    return write_folder(path, ARTIFACT, blobs, manifest)


def _unlisted(path: Path, name: str) -> str:
    return (
        f"the artifact at {path} lists no {name} in its {MANIFEST_NAME} (saved without it, or by an "
        f"older recfunnel that wrote it outside the checked files); save the artifact again"
    )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``manifest.json`` (existence, JSON, library, format version, structure).

    Does not verify file checksums; :func:`load_artifact` and :func:`artifact_file` do.
    """
    path = Path(path)
    manifest = read_folder_manifest(path, ARTIFACT)
    mpath = path / MANIFEST_NAME
    files = manifest["files"]
    if WEIGHTS_NAME not in files:
        raise ArtifactError(f"{mpath} is malformed: it does not list {WEIGHTS_NAME}")
    for name, digest in manifest["vocab_hashes"].items():
        fname = f"vocab_{name}.json"
        if files.get(fname) != digest:
            raise ArtifactError(
                f"{mpath} is malformed: vocab_hashes[{name!r}] does not match files[{fname!r}]"
            )
    return manifest


def artifact_file(path: str | os.PathLike[str], name: str) -> Path:
    """The path of file ``name`` of the artifact at ``path``, after checking that the manifest lists
    it and that its sha256 matches (without reading the weights); ArtifactError otherwise."""
    path = Path(path)
    manifest = read_manifest(path)
    if name not in manifest["files"]:
        raise ArtifactError(_unlisted(path, name))
    verify_folder_files(path, ARTIFACT, manifest, only=(name,))
    return path / name


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Load an artifact folder, validating manifest, format version and every sha256 before reading weights.

    Raises :class:`ArtifactError` with a message naming the problem.
    """
    path = Path(path)
    manifest = read_manifest(path)
    verify_folder_files(path, ARTIFACT, manifest)
    try:
        tensors = load_file(path / WEIGHTS_NAME, device="cpu")
    except Exception as exc:  # checksum matched, so this is a bad file written as such
        raise ArtifactError(f"{WEIGHTS_NAME} in {path} cannot be read: {exc}") from exc
    vocabs: dict[str, list[str]] = {}
    for name in manifest["vocab_hashes"]:
        fname = f"vocab_{name}.json"
        try:
            ids = json.loads((path / fname).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{fname} in {path} is not valid JSON: {exc}") from exc
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ArtifactError(f"{fname} in {path} must be a JSON list of strings")
        vocabs[name] = ids
    return Artifact(manifest=manifest, tensors=tensors, vocabs=vocabs, path=path)
