"""Saved indexes: a checked folder (:mod:`recfunnel.folder`) per index.

    meta.json     backend, params, dims, count, normalize, bias, library versions, sha256 of each file
    index.<ext>   the backend's own bytes (faiss.serialize_index, or .npy vectors for exact search)
    ids.npy       int64 id of each stored row

:func:`load_index_folder` checks ``meta.json`` and every checksum (and that nothing unlisted lies in
the folder) before it deserialises anything, and raises :class:`IndexFileError` naming the file and
the fault.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recfunnel.artifacts import ArtifactError
from recfunnel.folder import FolderKind, read_folder_manifest, verify_folder_files, write_folder

if TYPE_CHECKING:
    from recfunnel.index.base import Index

__all__ = ["FORMAT_VERSION", "META_NAME", "IDS_NAME", "IndexFileError", "read_meta"]

FORMAT_VERSION = 1
META_NAME = "meta.json"
IDS_NAME = "ids.npy"


class IndexFileError(ArtifactError):
    """A saved index is missing, half-written, corrupt, or does not match what loads it."""


INDEX = FolderKind(
    noun="index",
    manifest=META_NAME,
    format_version=FORMAT_VERSION,
    error=IndexFileError,
    required=(
        ("backend", str),
        ("params", dict),
        ("dim", int),
        ("index_dim", int),
        ("count", int),
        ("normalize", bool),
        ("bias", bool),
    ),
)


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``meta.json`` of a saved index folder (existence, JSON, format, structure).
    File checksums are checked by :func:`load_index_folder`."""
    return read_folder_manifest(path, INDEX)


def save_index(index: Index, path: str | os.PathLike[str]) -> Path:
    """Write ``index`` (built) as a folder at ``path`` in one atomic step; return the path."""
    payload = index._to_bytes()
    buf = io.BytesIO()
    np.save(buf, index._ids, allow_pickle=False)
    files = {index.payload_name: payload, IDS_NAME: buf.getvalue()}
    return write_folder(path, INDEX, files, index.meta())


def load_index_folder(
    cls: type[Index],
    path: str | os.PathLike[str],
    *,
    any_backend: bool,
    threads: int | None = None,
    mmap: bool = False,
    device: str | None = None,
) -> Index:
    """Load the index folder at ``path`` as ``cls``, or as whatever backend it holds when
    ``any_backend`` (cls is then the base class); ``mmap``, ``device``: see :meth:`Index.load`."""
    from recfunnel.index import index_class

    path = Path(path)
    mpath = path / META_NAME
    meta = read_meta(path)
    target = index_class(meta["backend"]) if any_backend else cls
    if target.backend != meta["backend"]:
        raise IndexFileError(f"{mpath}: the folder holds a {meta['backend']!r} index, not {cls.backend!r}")
    verify_folder_files(path, INDEX, meta)
    for name in (target.payload_name, IDS_NAME):
        if name not in meta["files"]:
            raise IndexFileError(f"{mpath} is malformed: it does not list {name}")
    params = dict(meta["params"])
    if device is not None and "device" in target.Params.model_fields:
        params["device"] = device
    try:
        index = target(normalize=meta["normalize"], threads=threads, **params)
    except ValueError as exc:
        raise IndexFileError(f"{mpath}: {exc}") from None
    index.dim, index.bias = meta["dim"], meta["bias"]
    index.mips_norm = meta.get("mips_norm")
    if index.mips_norm is not None and not isinstance(index.mips_norm, (int, float)):
        raise IndexFileError(f"{mpath} is malformed: mips_norm is not a number")
    index.source = meta.get("source") or {}
    try:
        ids = np.load(path / IDS_NAME, allow_pickle=False)
    except ValueError as exc:
        raise IndexFileError(f"{path / IDS_NAME} cannot be read: {exc}") from exc
    if ids.dtype != np.int64 or ids.shape != (meta["count"],):
        raise IndexFileError(
            f"{path / IDS_NAME} holds {ids.dtype} {ids.shape}; {META_NAME} says int64 ({meta['count']},)"
        )
    index._ids = ids
    try:
        index._from_file(path / target.payload_name, mmap)
    except Exception as exc:  # the checksum matched, so the file was written broken
        raise IndexFileError(f"{path / target.payload_name} cannot be read: {exc}") from exc
    dim, count = index._stored_shape()
    if (dim, count) != (meta["index_dim"], meta["count"]):
        raise IndexFileError(
            f"{path / target.payload_name} holds {count} vectors of dim {dim}; {META_NAME} says "
            f"{meta['count']} of dim {meta['index_dim']}"
        )
    index._apply_search_params()
    return index
