"""Crash-safe writes: a reader sees either the old content or the complete new one, never a torn file.

Files go through a temp file in the same directory (flush, fsync, ``os.replace``, fsync the directory).
Folders go through :func:`atomic_dir`: everything is written into a hidden temp folder next to the
target, fsynced, then swapped into place in one step.

Temp and set-aside names carry their writer, ``.{name}.tmp-{host}-{pid}-{random}`` and
``.{name}.old-{host}-{pid}-{random}`` (``host``: 8 hex digits of a hash of the host name), so that
litter from a writer killed mid-save can be told apart from a save in progress: the next save of the
same target deletes the ones whose process is gone on this host (:func:`clean_stale`), and a folder
that a kill left set aside is put back where the target is missing (:func:`recover_dir`). A name
without that tag (older recfunnel) or of another host is never touched.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_dir",
    "fsync_dir",
    "clean_stale",
    "recover_dir",
]

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TAGGED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{12}$")


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


def _random_sibling(parent: Path, name: str, kind: str) -> Path:
    """A free ``.{name}.{kind}-{host}-{pid}-{random}`` path in ``parent``."""
    while True:
        candidate = parent / f".{name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(6)}"
        if not os.path.lexists(candidate):
            return candidate


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) may still be running; True when unsure."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True


def _dead_siblings(final: Path, kind: str) -> list[Path]:
    """Tagged ``kind`` ('tmp' or 'old') siblings of ``final`` written on this host by a dead process."""
    out = []
    try:
        names = os.listdir(final.parent)
    except OSError:
        return out
    for entry in names:
        m = _TAGGED.match(entry)
        if (
            m
            and m["name"] == final.name
            and m["kind"] == kind
            and m["host"] == _HOST
            and not _alive(int(m["pid"]))
        ):
            out.append(final.parent / entry)
    return out


def recover_dir(final: str | os.PathLike[str]) -> bool:
    """Put back the previous version of folder ``final`` if a writer was killed after setting it aside
    (``final`` missing, a ``.{name}.old-*`` of a dead process present); return whether it did.

    Only where the platform cannot swap two folders in one step (see :func:`atomic_dir`) is there
    such a window; readers call this before they report a folder missing.
    """
    final = Path(final)
    if os.path.lexists(final):
        return False
    candidates = _dead_siblings(final, "old")
    if not candidates:
        return False

    def ctime(p: Path) -> int:
        try:
            return os.lstat(p).st_ctime_ns
        except OSError:
            return -1

    try:  # the newest set-aside copy is the one that was at `final` last
        os.rename(max(candidates, key=ctime), final)
    except OSError:  # another reader or writer got there first
        return False
    fsync_dir(final.parent)
    return True


def clean_stale(final: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp and set-aside siblings of ``final`` left by dead writers on this host (after
    :func:`recover_dir`, so the last complete version is never among them); return what was deleted.
    A sibling whose writer is alive, or of another host, or without a writer tag is left alone, and
    so is everything on platforms without a harmless liveness probe (Windows)."""
    final = Path(final)
    recover_dir(final)
    removed = []
    stale = _dead_siblings(final, "tmp")
    if os.path.lexists(final):
        stale += _dead_siblings(final, "old")
    for p in stale:
        try:
            _remove(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            warnings.warn(f"could not delete stale {p}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        removed.append(p)
    if removed:
        fsync_dir(final.parent)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, replace, fsync dir)."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    # os.open with O_EXCL and mode 0o666 (rather than mkstemp's 0o600) so the umask applies as for open().
    while True:
        tmp = _random_sibling(parent, path.name, "tmp")
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


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap the entries ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    False where the platform or the file system cannot (the caller then renames twice); other
    failures raise OSError."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def _swap_in(tmp: Path, final: Path) -> Path | None:
    """Put the complete folder ``tmp`` at ``final``; return where the previous version now is (to be
    deleted), or None. Raises only with ``final`` as it was."""
    if not os.path.lexists(final):
        try:
            os.rename(tmp, final)
            return None
        except OSError as exc:  # another writer put a folder there meanwhile: replace it as below
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if _exchange(tmp, final):
        return tmp  # now holding the previous version
    # Fallback: two renames. In between, `final` is missing and the previous version lies under
    # `.{name}.old-*`; recover_dir() puts it back if this process dies there.
    old = _random_sibling(final.parent, final.name, "old")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if not os.path.lexists(final):
            os.rename(old, final)
        raise
    return old


@contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temp location and move it to ``final`` only if the block succeeds.

    Yields a fresh empty directory ``.{final.name}.tmp-{host}-{pid}-{random}`` in ``final``'s parent
    (stale siblings of dead writers are deleted first, see :func:`clean_stale`). On normal exit every
    file in it is fsynced and it takes the place of ``final``: on Linux by swapping the two in one
    atomic step (``renameat2(RENAME_EXCHANGE)``), so a reader or a kill at any moment finds the old
    complete folder or the new complete folder, never neither; elsewhere by renaming the old one aside
    to ``.{name}.old-*`` first (a kill between the two renames leaves ``final`` missing until
    :func:`recover_dir` puts the old version back). Then the previous version is deleted and the
    parent fsynced. On an exception the temp folder is deleted, ``final`` is left untouched and the
    exception propagates.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    while True:
        tmp = _random_sibling(parent, final.name, "tmp")
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _fsync_tree(tmp)
        old = _swap_in(tmp, final)
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
