import os
import subprocess
import sys
from pathlib import Path

import pytest

from recfunnel import atomic
from recfunnel.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, clean_stale, recover_dir


def _names(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_atomic_write_bytes_creates_file_with_content_and_no_temp_left(tmp_path):
    target = tmp_path / "sub" / "blob.bin"
    atomic_write_bytes(target, b"\x00\x01hello")
    assert target.read_bytes() == b"\x00\x01hello"
    assert _names(target.parent) == ["blob.bin"]


def test_atomic_write_text_replaces_existing_file(tmp_path):
    target = tmp_path / "note.txt"
    target.write_text("old")
    atomic_write_text(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"
    assert _names(tmp_path) == ["note.txt"]


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "note.txt"
    target.write_text("old")

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["note.txt"]


def test_atomic_write_respects_umask_instead_of_private_temp_mode(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    target = tmp_path / "f"
    atomic_write_bytes(target, b"x")
    old = os.umask(0o022)
    os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o666 & ~old


def test_atomic_dir_creates_folder_only_on_success(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".model.tmp-")
        assert not final.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("b")
    assert (final / "a.txt").read_text() == "a"
    assert (final / "nested" / "b.txt").read_text() == "b"
    assert _names(tmp_path) == ["model"]


def test_atomic_dir_exception_removes_temp_and_keeps_old_folder(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="half way"):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
            raise ValueError("half way")
    assert _names(tmp_path) == ["model"]
    assert _names(final) == ["old.txt"]
    assert (final / "old.txt").read_text() == "old"


def test_atomic_dir_exception_without_previous_folder_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "x").write_text("x")
            raise KeyError("x")
    assert _names(tmp_path) == []


def test_atomic_dir_replaces_existing_folder_and_deletes_old_version(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(final) == ["new.txt"]
    assert _names(tmp_path) == ["model"]  # no .old-* or .tmp-* left behind


def test_atomic_dir_failed_final_rename_restores_old_folder(tmp_path, monkeypatch):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # the two-rename fallback
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(".model.tmp-"):
            raise OSError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="rename refused"):
        with atomic_dir(final) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _names(tmp_path) == ["model"]
    assert _names(final) == ["old.txt"]


def test_atomic_dir_fsyncs_every_file_before_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with atomic_dir(tmp_path / "m") as tmp:
        (tmp / "a").write_text("a")
        (tmp / "d").mkdir()
        (tmp / "d" / "b").write_text("b")
    if not os.path.exists("/proc/self/fd"):
        assert len(synced) >= 2
        return
    names = {Path(s).name for s in synced}
    assert {"a", "b"} <= names


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tagged(parent: Path, name: str, kind: str, pid: int, host: str | None = None) -> Path:
    p = parent / f".{name}.{kind}-{host or atomic._HOST}-{pid}-{'ab' * 6}"
    p.mkdir()
    (p / "f").write_text(kind)
    return p


def test_temp_folder_name_records_host_and_writer_pid(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        assert tmp.name.startswith(f".model.tmp-{atomic._HOST}-{os.getpid()}-")


@pytest.mark.skipif(atomic._renameat2 is None, reason="needs Linux renameat2")
def test_replacement_swaps_in_one_step_so_the_target_never_goes_missing(tmp_path, monkeypatch):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    real_rename = os.rename

    def rename(src, dst):  # the fallback would move the old folder aside first
        raise AssertionError(f"renamed {src} -> {dst}: the target was missing for a moment")

    monkeypatch.setattr(atomic.os, "rename", rename)
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    assert _names(final) == ["new.txt"]
    assert _names(tmp_path) == ["model"]


def test_two_rename_fallback_replaces_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(final) == ["new.txt"]
    assert _names(tmp_path) == ["model"]


def test_next_save_deletes_litter_of_dead_writers_only(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    dead = _dead_pid()
    stale_tmp = _tagged(tmp_path, "model", "tmp", dead)
    stale_old = _tagged(tmp_path, "model", "old", dead)
    live = _tagged(tmp_path, "model", "tmp", os.getppid())  # a live process: still writing
    other_host = _tagged(tmp_path, "model", "tmp", dead, host="0" * 8)
    untagged = tmp_path / ".model.tmp-0123456789ab"  # older recfunnel: owner unknown
    untagged.mkdir()
    other_target = _tagged(tmp_path, "model2", "tmp", dead)
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("x")
    left = {p.name for p in tmp_path.iterdir()}
    assert stale_tmp.name not in left and stale_old.name not in left
    assert {live.name, other_host.name, untagged.name, other_target.name, "model"} == left


def test_stale_temp_files_of_atomic_writes_are_deleted_too(tmp_path):
    stale = tmp_path / f".note.txt.tmp-{atomic._HOST}-{_dead_pid()}-{'cd' * 6}"
    stale.write_text("half")
    atomic_write_text(tmp_path / "note.txt", "whole")
    assert _names(tmp_path) == ["note.txt"]


def test_recover_dir_puts_back_the_folder_a_killed_writer_set_aside(tmp_path):
    final = tmp_path / "model"
    old = _tagged(tmp_path, "model", "old", _dead_pid())
    assert recover_dir(final)
    assert _names(final) == ["f"] and (final / "f").read_text() == "old"
    assert _names(tmp_path) == ["model"]
    assert not recover_dir(final)  # present: nothing to do
    assert not old.exists()


def test_recover_dir_leaves_a_live_writers_set_aside_folder_alone(tmp_path):
    final = tmp_path / "model"
    _tagged(tmp_path, "model", "old", os.getpid())  # this process, between its two renames
    assert not recover_dir(final)
    assert not final.exists()
    assert clean_stale(final) == []
    assert len(_names(tmp_path)) == 1


def test_clean_stale_recovers_before_deleting_so_the_last_version_survives(tmp_path):
    final = tmp_path / "model"
    dead = _dead_pid()
    _tagged(tmp_path, "model", "old", dead)
    _tagged(tmp_path, "model", "tmp", dead)  # a half-written newer version
    removed = clean_stale(final)
    assert [p.name.split(".")[2][:3] for p in removed] == ["tmp"]
    assert (final / "f").read_text() == "old"
    assert _names(tmp_path) == ["model"]
