"""Checked folders: files plus one JSON manifest listing the sha256 of each, written in one step.

Model artifacts (``manifest.json``), training checkpoints (``checkpoint.json``) and saved indexes
(``meta.json``) are all such folders. This module is the one reader and writer of them; each kind
describes itself with a :class:`FolderKind` and adds its own checks on top.

A manifest is a JSON object with at least ``library`` ("recfunnel"), ``library_version``, the kind's
version key (``format_version``) and ``files`` ({file name: sha256 hex}). Reading checks, in order:
the folder exists (putting back a previous version a killed writer left aside, see
:func:`recfunnel.atomic.recover_dir`), the manifest is there and is JSON, library and format version,
the kind's required keys, the file names (plain names inside the folder), then every listed file's
presence and sha256, and that nothing unlisted lies beside them. Every fault raises the kind's error
class with the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import recfunnel
from recfunnel.atomic import atomic_dir, recover_dir
from recfunnel.errors import RecfunnelError

__all__ = [
    "LIBRARY",
    "FileSource",
    "FolderKind",
    "sha256_file",
    "check_file_name",
    "write_folder",
    "read_folder_manifest",
    "verify_folder_files",
    "read_checked_folder",
]

LIBRARY = "recfunnel"
#: a file's content, or a callable that writes the file at the path it is given
FileSource = bytes | Callable[[Path], None]
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class FolderKind:
    """What one kind of checked folder is called and holds.

    Args:
        noun: "artifact", "checkpoint", "index": used in every message.
        manifest: file name of the manifest ("manifest.json").
        format_version: the version this recfunnel writes and reads.
        error: the exception class raised for every fault (a :class:`RecfunnelError`).
        required: manifest keys that must be present, with their types.
        tolerated: entries that may lie in the folder unlisted (e.g. an artifact's ``index/``,
            itself a checked folder of its own).
    """

    noun: str
    manifest: str
    format_version: int
    error: type[RecfunnelError]
    required: tuple[tuple[str, type | tuple[type, ...]], ...] = ()
    tolerated: tuple[str, ...] = ()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def check_file_name(name: object, kind: FolderKind) -> str:
    """``name`` if it is a plain file name usable in a ``kind`` folder (letters, digits, ``_ . -``,
    not hidden, not the manifest nor a tolerated entry); else the kind's error saying why."""
    if not isinstance(name, str) or not _FILE_NAME_RE.match(name) or name in (".", ".."):
        raise kind.error(
            f"{name!r} is not usable as a file name in a {kind.noun} folder "
            "(letters, digits, _ . - only, not starting with . or -)"
        )
    if name == kind.manifest or name in kind.tolerated:
        raise kind.error(f"{name!r} is reserved in a {kind.noun} folder; choose another file name")
    return name


def write_folder(
    path: str | os.PathLike[str],
    kind: FolderKind,
    files: Mapping[str, FileSource],
    manifest: Mapping[str, Any],
) -> Path:
    """Write a ``kind`` folder at ``path`` in one atomic step (replacing any existing one).

    Each of ``files`` is written inside the temp folder (bytes as they are; a callable is called with
    the path to write), hashed, and listed under ``files`` in the manifest, which is written last:
    a folder with a manifest holds every file it lists. ``manifest`` is the kind's own content; the
    library, version and format keys are added. Nothing appears at ``path`` unless all succeed.
    """
    path = Path(path)
    for name in files:
        check_file_name(name, kind)
    body = dict(manifest)
    body.update(
        {
            "library": LIBRARY,
            "library_version": recfunnel.__version__,
            "format_version": kind.format_version,
        }
    )
    try:  # before anything is written
        json.dumps(body)
    except (TypeError, ValueError) as exc:
        raise kind.error(f"the {kind.noun}'s {kind.manifest} is not JSON-serialisable: {exc}") from exc
    with atomic_dir(path) as tmp:
        digests: dict[str, str] = {}
        for name, source in files.items():
            target = tmp / name
            if isinstance(source, (bytes, bytearray, memoryview)):
                with open(target, "wb") as fh:
                    fh.write(source)
            elif callable(source):
                source(target)
            else:
                raise TypeError(
                    f"{kind.noun} file {name!r}: expected bytes or a callable writing the path it is "
                    f"given, got {type(source).__name__}"
                )
            if not target.is_file() or target.is_symlink():
                raise kind.error(f"the writer of {kind.noun} file {name!r} did not write a regular file")
            digests[name] = sha256_file(target)
        body["files"] = digests
        text = json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / kind.manifest).write_text(text, encoding="utf-8")
    return path


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names) if names else "nothing (empty folder)"


def read_folder_manifest(path: str | os.PathLike[str], kind: FolderKind) -> dict[str, Any]:
    """Read and check the manifest of the ``kind`` folder at ``path``: existence, JSON, library,
    format version, required keys and the file names it lists. File contents are not read (see
    :func:`verify_folder_files`)."""
    path = Path(path)
    err, noun = kind.error, kind.noun
    recover_dir(path)
    if not path.exists():
        raise err(f"no {noun} at {path}: the folder does not exist")
    if not path.is_dir():
        raise err(f"no {noun} at {path}: it is a file, a saved {noun} is a folder")
    mpath = path / kind.manifest
    if not mpath.is_file():
        raise err(
            f"{mpath} is missing: {path} looks half-written or is not a recfunnel {noun} "
            f"(it contains: {_listing(path)})"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise err(f"{mpath} is not valid JSON ({exc}); the {noun} is corrupt") from exc
    if not isinstance(manifest, dict):
        raise err(f"{mpath} must hold a JSON object, found {type(manifest).__name__}")
    if manifest.get("library") != LIBRARY:
        raise err(
            f"{path} is not a recfunnel {noun} ({kind.manifest} names library {manifest.get('library')!r})"
        )
    version = manifest.get("format_version")
    if version != kind.format_version or isinstance(version, bool):
        written_by = manifest.get("library_version", "an unknown version")
        raise err(
            f"{mpath}: {noun} format v{version} was written by recfunnel {written_by}; this is recfunnel "
            f"{recfunnel.__version__} which reads format v{kind.format_version}. Save the {noun} again "
            f"with this version"
        )
    for key, typ in (("files", dict), *kind.required):
        value = manifest.get(key)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise err(f"{mpath} is malformed: {key!r} missing or not a {names}")
    for fname, digest in manifest["files"].items():
        try:
            check_file_name(fname, kind)
        except RecfunnelError:
            raise err(f"{mpath} is malformed: bad files entry {fname!r}") from None
        if not isinstance(digest, str):
            raise err(f"{mpath} is malformed: files[{fname!r}] is not a sha256 string")
    return manifest


def verify_folder_files(
    path: str | os.PathLike[str],
    kind: FolderKind,
    manifest: Mapping[str, Any],
    only: Collection[str] | None = None,
) -> None:
    """Check that every file the manifest lists (or those of them in ``only``) is in ``path`` with its
    sha256, and that nothing unlisted is (besides the manifest and the kind's tolerated entries)."""
    path = Path(path)
    listed = manifest["files"]
    for fname, expected in listed.items():
        if only is not None and fname not in only:
            continue
        fpath = path / fname
        if not fpath.is_file():
            raise kind.error(f"{fpath} is missing (listed in {kind.manifest})")
        if sha256_file(fpath) != expected:
            raise kind.error(
                f"{fpath} is corrupt (sha256 mismatch with {kind.manifest}): it was changed or damaged "
                f"after the {kind.noun} was saved; save the {kind.noun} again"
            )
    allowed = set(listed) | {kind.manifest, *kind.tolerated}
    extra = sorted(p.name for p in path.iterdir() if p.name not in allowed)
    if extra:
        raise kind.error(
            f"{path} holds {', '.join(extra)}, not listed in {kind.manifest}: a {kind.noun} is written "
            f"whole, so this was added afterwards (or by an older recfunnel) and cannot be trusted; "
            f"move it out or save the {kind.noun} again"
        )


def read_checked_folder(path: str | os.PathLike[str], kind: FolderKind) -> dict[str, Any]:
    """:func:`read_folder_manifest` then :func:`verify_folder_files`; return the manifest."""
    manifest = read_folder_manifest(path, kind)
    verify_folder_files(path, kind, manifest)
    return manifest
