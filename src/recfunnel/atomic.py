"""Crash-safe writes: a reader sees either the old content or the complete new one, never a torn file.

Files go through a temp file in the same directory (flush, fsync, ``os.replace``, fsync the directory).
Folders go through :func:`atomic_dir`: everything is written into a hidden temp folder next to the
target, fsynced, then renamed into place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_dir", "fsync_dir"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames/creations inside it are durable.

    Best effort: platforms (Windows) or file systems that cannot open or fsync a directory are skipped.
    """
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _random_sibling(parent: Path, prefix: str) -> Path:
    while True:
        candidate = parent / f"{prefix}{secrets.token_hex(6)}"
        if not os.path.lexists(candidate):
            return candidate


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, replace, fsync dir)."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    # os.open with O_EXCL and mode 0o666 (rather than mkstemp's 0o600) so the umask applies as for open().
    while True:
        tmp = _random_sibling(parent, f".{path.name}.tmp-")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode(encoding))


def _fsync_tree(root: Path) -> None:
    """fsync every regular file and every directory under ``root`` (symlinks are not followed)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temp location and move it to ``final`` only if the block succeeds.

    Yields a fresh empty directory ``.{final.name}.tmp-<random>`` in ``final``'s parent. On normal exit
    every file in it is fsynced, an existing ``final`` is renamed aside to ``.{name}.old-<random>``, the
    temp folder is renamed to ``final``, the old one is deleted and the parent is fsynced. On an exception
    the temp folder is deleted, ``final`` is left untouched and the exception propagates.

    Between the two renames ``final`` briefly does not exist (POSIX has no portable atomic swap of
    directories); a crash in that window leaves the previous version under ``.{name}.old-*``.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _random_sibling(parent, f".{final.name}.tmp-")
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _fsync_tree(tmp)
        old: Path | None = None
        if os.path.lexists(final):
            old = _random_sibling(parent, f".{final.name}.old-")
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            if old is not None and not os.path.lexists(final):
                os.rename(old, final)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    if old is not None:
        try:
            _remove(old)
        except OSError as exc:  # the new folder is already in place; leftover is only litter
            warnings.warn(f"could not delete previous version {old}: {exc}", RuntimeWarning, stacklevel=3)
        else:
            fsync_dir(parent)
