"""Where a Milvus index's data lives: pymilvus on demand, the private milvus-lite database folder of
an embedded index, and the ``milvus.tar`` payload that carries it (or, for a server, only the
collection's address) inside a saved index folder. The index class is :mod:`recfunnel.index.milvus`."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import weakref
from pathlib import Path
from typing import Any

__all__ = ["MilvusConnectionError"]

INSTALL_HINT = "the milvus backend needs `pip install 'recfunnel[milvus]'`"
LITE_DIR = "milvus.db"
DESCRIPTOR = "collection.json"


class MilvusConnectionError(ConnectionError):
    """The Milvus server of an index cannot be reached (wrong uri, server down, bad credentials)."""


def _pymilvus(lite: bool):
    """The pymilvus module (and, for an embedded database, a check that milvus-lite is there)."""
    try:
        import pymilvus

        if lite:
            import milvus_lite  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return pymilvus


class _LiteFolder:
    """A private milvus-lite database folder in a temp dir; removed by close() or garbage collection."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="recfunnel-milvus-"))
        self.path = self.root / LITE_DIR
        self.clients: list[Any] = []  # closed before the server stops
        self._finalizer = weakref.finalize(
            self, _remove_lite_folder, str(self.path), str(self.root), self.clients
        )

    def wait_for_indexing(self, collection: str) -> None:
        """Block until milvus-lite's background worker has indexed every flushed row of `collection`.

        milvus-lite 3.x builds a flushed segment's index (and compacts segments) in a background
        thread and searches unindexed segments exhaustively meanwhile, so results right after a
        flush would depend on timing. It offers no RPC to wait for that, so this reaches into its
        in-process objects; should those change, it does not wait (results are then exact for a while).
        """
        try:
            from milvus_lite.server_manager import server_manager_instance

            _, db, _ = server_manager_instance._servers[os.path.abspath(self.path)]
            db.get_collection(collection)._wait_for_bg()
        except Exception:
            pass

    def stop_server(self) -> None:
        """Stop milvus-lite's in-process server for this folder (it flushes and unlocks the files)."""
        _stop_lite_server(str(self.path))

    def close(self) -> None:
        self._finalizer()


def _stop_lite_server(path: str) -> None:
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)


def _remove_lite_folder(path: str, root: str, clients: list[Any]) -> None:
    for client in clients:
        try:
            client.close()
        except Exception:
            pass
    clients.clear()
    _stop_lite_server(path)
    shutil.rmtree(root, ignore_errors=True)


def _tar_folder(folder: Path | None, descriptor: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        blob = json.dumps(descriptor, indent=2, sort_keys=True).encode("utf-8")
        info = tarfile.TarInfo(DESCRIPTOR)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        if folder is not None:
            for p in sorted(folder.rglob("*")):
                if p.name == "LOCK" or not (p.is_file() or p.is_dir()) or p.is_symlink():
                    continue
                tar.add(p, arcname=f"{LITE_DIR}/{p.relative_to(folder).as_posix()}", recursive=False)
    return buf.getvalue()


def _untar(blob: bytes, target: Path | None) -> dict[str, Any]:
    """The descriptor of a milvus.tar payload; the lite database is unpacked into `target` if given."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                raise ValueError(f"unexpected entry {m.name!r} in the archive")
        try:
            descriptor = json.loads(tar.extractfile(DESCRIPTOR).read().decode("utf-8"))
        except KeyError:
            raise ValueError(f"the archive holds no {DESCRIPTOR}") from None
        if not isinstance(descriptor, dict):
            raise ValueError(f"{DESCRIPTOR} is not a JSON object")
        if target is not None:
            lite = [m for m in members if m.name == LITE_DIR or m.name.startswith(LITE_DIR + "/")]
            if not lite:
                raise ValueError(f"the archive holds no {LITE_DIR} database")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(target, members=lite, **kwargs)
    return descriptor
