"""Saved models as self-describing folders: safetensors weights, JSON vocabularies, JSON manifest.

Layout of an artifact folder::

    weights.safetensors      all tensors (safetensors, never pickle)
    vocab_<name>.json        one JSON list of raw id strings per vocabulary (index i -> id)
    manifest.json            written last; format version, family, config, metrics, sha256 of every file

The folder is written with :func:`recfunnel.atomic.atomic_dir`, so a reader sees either the previous
artifact or the complete new one. :func:`load_artifact` validates the manifest and every checksum before
it reads any weights.
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

import recfunnel
from recfunnel.atomic import atomic_dir
from recfunnel.errors import RecfunnelError

__all__ = [
    "FORMAT_VERSION",
    "LIBRARY",
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "Artifact",
    "ArtifactError",
    "save_artifact",
    "load_artifact",
    "read_manifest",
    "sha256_file",
    "safetensors_ready",
]

FORMAT_VERSION = 1
LIBRARY = "recfunnel"
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
_VOCAB_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ArtifactError(RecfunnelError):
    """An artifact folder is missing, half-written, corrupt, or from an incompatible format version."""


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


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


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


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def save_artifact(
    path: str | os.PathLike[str],
    *,
    family: str,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    vocabs: dict[str, list[str]],
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model artifact folder at ``path`` atomically (replacing any existing one); return the path.

    ``config``, ``metrics`` and ``extra`` must be JSON-serialisable. Vocabulary names become file names
    (``vocab_<name>.json``) so they are restricted to letters, digits, ``_``, ``.`` and ``-``.
    """
    path = Path(path)
    if not isinstance(family, str) or not family:
        raise ArtifactError("family must be a non-empty string")
    try:
        ready = safetensors_ready(tensors)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"cannot save tensors: {exc}") from exc
    vocab_blobs: list[tuple[str, str, bytes]] = []  # (vocab name, file name, JSON bytes)
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
        vocab_blobs.append((name, f"vocab_{name}.json", blob))
    # Validate JSON-ability before writing anything.
    meta = {"config": config, "metrics": metrics, "extra": extra}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{key} is not JSON-serialisable: {exc}") from exc

    with atomic_dir(path) as tmp:
        files: dict[str, str] = {}
        save_file(ready, tmp / WEIGHTS_NAME)
        files[WEIGHTS_NAME] = sha256_file(tmp / WEIGHTS_NAME)
        vocab_hashes: dict[str, str] = {}
        for name, fname, blob in vocab_blobs:
            with open(tmp / fname, "wb") as fh:
                fh.write(blob)
            digest = hashlib.sha256(blob).hexdigest()
            files[fname] = digest
            vocab_hashes[name] = digest
        manifest = {
            "format_version": FORMAT_VERSION,
            "library": LIBRARY,
            "library_version": recfunnel.__version__,
            "family": family,
            "config": config,
            "metrics": metrics,
            "extra": extra,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "files": files,
            "vocab_hashes": vocab_hashes,
        }
        # Manifest last: a folder with a manifest has all the files the manifest lists.
        (tmp / MANIFEST_NAME).write_text(_canonical_json(manifest), encoding="utf-8")
    return path


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names) if names else "nothing (empty folder)"


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``manifest.json`` (existence, JSON, library, format version, structure).

    Does not verify file checksums; :func:`load_artifact` does.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"no artifact at {path}")
    if not path.is_dir():
        raise ArtifactError(f"no artifact at {path}: it is a file, an artifact is a folder")
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise ArtifactError(
            f"{path} has no {MANIFEST_NAME}: it looks half-written or is not a recfunnel artifact "
            f"(it contains: {_listing(path)})"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{mpath} is not valid JSON ({exc}); the artifact is corrupt") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath} must hold a JSON object, found {type(manifest).__name__}")
    if manifest.get("library") != LIBRARY:
        raise ArtifactError(
            f"{path} is not a recfunnel artifact (manifest library is {manifest.get('library')!r})"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        written_by = manifest.get("library_version", "an unknown version")
        raise ArtifactError(
            f"artifact format v{version} was written by recfunnel {written_by}; this is recfunnel "
            f"{recfunnel.__version__} which reads format v{FORMAT_VERSION}"
        )
    for key, typ in (("family", str), ("files", dict), ("vocab_hashes", dict), ("config", dict)):
        if not isinstance(manifest.get(key), typ):
            raise ArtifactError(f"{mpath} is malformed: {key!r} missing or not a {typ.__name__}")
    files = manifest["files"]
    for fname, digest in files.items():
        if (
            not isinstance(fname, str)
            or fname in ("", ".", "..", MANIFEST_NAME)
            or "/" in fname
            or "\\" in fname
            or not isinstance(digest, str)
        ):
            raise ArtifactError(f"{mpath} is malformed: bad files entry {fname!r}: {digest!r}")
    if WEIGHTS_NAME not in files:
        raise ArtifactError(f"{mpath} is malformed: it does not list {WEIGHTS_NAME}")
    for name, digest in manifest["vocab_hashes"].items():
        fname = f"vocab_{name}.json"
        if files.get(fname) != digest:
            raise ArtifactError(
                f"{mpath} is malformed: vocab_hashes[{name!r}] does not match files[{fname!r}]"
            )
    return manifest


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Load an artifact folder, validating manifest, format version and every sha256 before reading weights.

    Raises :class:`ArtifactError` with a message naming the problem.
    """
    path = Path(path)
    manifest = read_manifest(path)
    for fname, expected in manifest["files"].items():
        fpath = path / fname
        if not fpath.is_file():
            raise ArtifactError(f"{fname} is missing from {path} (listed in {MANIFEST_NAME})")
        if sha256_file(fpath) != expected:
            raise ArtifactError(f"{fname} in {path} is corrupt (sha256 mismatch with {MANIFEST_NAME})")
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
