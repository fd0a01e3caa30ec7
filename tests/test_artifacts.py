import hashlib
import json
import signal
import subprocess
import sys
from datetime import datetime

import pytest
import torch

import recfunnel
from recfunnel.artifacts import FORMAT_VERSION, ArtifactError, artifact_file, load_artifact, save_artifact


def _save(path, **overrides):
    torch.manual_seed(0)
    kwargs = dict(
        family="two_tower",
        config={"dim": 4, "layers": [8, 4]},
        tensors={
            "user_emb": torch.randn(3, 4),
            "item_emb": torch.randn(5, 4).t(),  # non-contiguous on purpose
            "bias": torch.arange(5, dtype=torch.int64),
        },
        vocabs={"user": ["u1", "u2", "u3"], "item": ["i1", "i2", "i3", "i4", "ü5"]},
        metrics={"recall@10": 0.25},
        extra={"note": "x"},
    )
    kwargs.update(overrides)
    save_artifact(path, **kwargs)
    return kwargs


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path, manifest):
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_round_trip_preserves_tensors_vocabs_and_manifest_fields(tmp_path):
    art_dir = tmp_path / "art"
    kw = _save(art_dir)
    art = load_artifact(art_dir)
    assert set(art.tensors) == set(kw["tensors"])
    for name, t in kw["tensors"].items():
        assert torch.equal(art.tensors[name], t)
        assert art.tensors[name].dtype == t.dtype
    assert art.vocabs == kw["vocabs"]
    m = art.manifest
    assert m["format_version"] == FORMAT_VERSION
    assert m["library"] == "recfunnel"
    assert m["library_version"] == recfunnel.__version__
    assert (art.family, art.config, art.metrics, art.extra) == (
        "two_tower",
        kw["config"],
        kw["metrics"],
        kw["extra"],
    )
    assert datetime.fromisoformat(m["created_at"]).utcoffset().total_seconds() == 0
    assert set(m["files"]) == {"weights.safetensors", "vocab_user.json", "vocab_item.json"}
    for fname, digest in m["files"].items():
        assert hashlib.sha256((art_dir / fname).read_bytes()).hexdigest() == digest
    assert m["vocab_hashes"]["item"] == m["files"]["vocab_item.json"]
    assert art.path == art_dir


def test_vocab_files_are_plain_json_lists_of_raw_ids(tmp_path):
    _save(tmp_path / "art")
    assert json.loads((tmp_path / "art" / "vocab_user.json").read_text()) == ["u1", "u2", "u3"]


def test_tied_tensors_sharing_storage_can_be_saved(tmp_path):
    w = torch.randn(4, 2)
    _save(tmp_path / "art", tensors={"a": w, "b": w})
    art = load_artifact(tmp_path / "art")
    assert torch.equal(art.tensors["a"], w) and torch.equal(art.tensors["b"], w)


def test_saving_over_existing_artifact_replaces_it(tmp_path):
    _save(tmp_path / "art")
    _save(tmp_path / "art", family="mf", tensors={"w": torch.ones(2)}, vocabs={})
    art = load_artifact(tmp_path / "art")
    assert art.family == "mf"
    assert set(art.tensors) == {"w"}
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "weights.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_unserialisable_config_raises_and_writes_nothing(tmp_path):
    with pytest.raises(ArtifactError, match="config is not JSON-serialisable"):
        _save(tmp_path / "art", config={"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_non_string_vocab_entries_are_rejected(tmp_path):
    with pytest.raises(ArtifactError, match="raw ids must be strings"):
        _save(tmp_path / "art", vocabs={"user": ["u1", 2]})


def test_vocab_name_that_is_not_a_safe_file_name_is_rejected(tmp_path):
    with pytest.raises(ArtifactError, match="file name"):
        _save(tmp_path / "art", vocabs={"../evil": ["a"]})


def test_missing_folder_reports_no_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="no artifact at .*nope"):
        load_artifact(tmp_path / "nope")


def test_folder_without_manifest_is_reported_as_half_written_with_listing(tmp_path):
    _save(tmp_path / "art")
    (tmp_path / "art" / "manifest.json").unlink()
    with pytest.raises(ArtifactError) as err:
        load_artifact(tmp_path / "art")
    msg = str(err.value)
    assert "half-written" in msg and "not a recfunnel artifact" in msg
    assert "weights.safetensors" in msg and "vocab_user.json" in msg


def test_wrong_format_version_message_mentions_both_versions(tmp_path):
    _save(tmp_path / "art")
    m = _manifest(tmp_path / "art")
    m["format_version"] = 7
    m["library_version"] = "9.9.9"
    _write_manifest(tmp_path / "art", m)
    with pytest.raises(ArtifactError) as err:
        load_artifact(tmp_path / "art")
    msg = str(err.value)
    assert "format v7 was written by recfunnel 9.9.9" in msg
    assert f"this is recfunnel {recfunnel.__version__} which reads format v{FORMAT_VERSION}" in msg


def test_corrupted_weights_are_detected_by_checksum_before_loading(tmp_path, monkeypatch):
    art_dir = tmp_path / "art"
    _save(art_dir)
    wpath = art_dir / "weights.safetensors"
    data = bytearray(wpath.read_bytes())
    data[-3] ^= 0xFF  # flip bytes in the tensor payload: still a parseable safetensors file
    data[-1] ^= 0x01
    wpath.write_bytes(bytes(data))

    def must_not_load(*a, **k):
        raise AssertionError("weights were read before the checksum check")

    monkeypatch.setattr("recfunnel.artifacts.load_file", must_not_load)
    with pytest.raises(ArtifactError, match=r"weights.safetensors .*corrupt \(sha256 mismatch"):
        load_artifact(art_dir)


def test_missing_weights_file_is_reported(tmp_path):
    _save(tmp_path / "art")
    (tmp_path / "art" / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match="weights.safetensors is missing"):
        load_artifact(tmp_path / "art")


def test_edited_vocab_file_is_detected_by_checksum(tmp_path):
    _save(tmp_path / "art")
    (tmp_path / "art" / "vocab_user.json").write_text('["u1", "u3", "u2"]')
    with pytest.raises(ArtifactError, match="vocab_user.json .*sha256 mismatch"):
        load_artifact(tmp_path / "art")


def test_truncated_manifest_is_reported_as_invalid_json(tmp_path):
    _save(tmp_path / "art")
    mpath = tmp_path / "art" / "manifest.json"
    mpath.write_text(mpath.read_text()[:40])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(tmp_path / "art")


def test_manifest_with_tampered_checksum_is_rejected(tmp_path):
    _save(tmp_path / "art")
    m = _manifest(tmp_path / "art")
    m["files"]["weights.safetensors"] = "0" * 64
    _write_manifest(tmp_path / "art", m)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(tmp_path / "art")


def test_manifest_from_another_library_is_rejected(tmp_path):
    _save(tmp_path / "art")
    m = _manifest(tmp_path / "art")
    m["library"] = "otherlib"
    _write_manifest(tmp_path / "art", m)
    with pytest.raises(ArtifactError, match="not a recfunnel artifact"):
        load_artifact(tmp_path / "art")


def test_manifest_listing_a_path_outside_the_folder_is_rejected(tmp_path):
    _save(tmp_path / "art")
    (tmp_path / "secret").write_text("x")
    m = _manifest(tmp_path / "art")
    m["files"]["../secret"] = hashlib.sha256(b"x").hexdigest()
    _write_manifest(tmp_path / "art", m)
    with pytest.raises(ArtifactError, match="malformed"):
        load_artifact(tmp_path / "art")


def test_manifest_vocab_hash_disagreeing_with_files_is_rejected(tmp_path):
    _save(tmp_path / "art")
    m = _manifest(tmp_path / "art")
    m["vocab_hashes"]["user"] = "f" * 64
    _write_manifest(tmp_path / "art", m)
    with pytest.raises(ArtifactError, match="vocab_hashes"):
        load_artifact(tmp_path / "art")


def test_failed_save_keeps_previous_artifact_loadable(tmp_path, monkeypatch):
    _save(tmp_path / "art")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("recfunnel.artifacts.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "art", family="other")
    assert load_artifact(tmp_path / "art").family == "two_tower"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


# ------------------------------------------------------------------------------------------
# Extra files (files=) and refusal of unlisted files
# ------------------------------------------------------------------------------------------


def test_extra_files_are_written_inside_the_artifact_and_checksummed(tmp_path):
    art_dir = tmp_path / "art"
    _save(art_dir, files={"split.npz": b"split bytes", "notes.txt": lambda p: p.write_text("hi")})
    m = _manifest(art_dir)
    assert m["extra_files"] == ["notes.txt", "split.npz"]
    assert m["files"]["split.npz"] == hashlib.sha256(b"split bytes").hexdigest()
    art = load_artifact(art_dir)
    assert art.extra_files == ["notes.txt", "split.npz"]
    assert art.file("split.npz").read_bytes() == b"split bytes"
    assert artifact_file(art_dir, "notes.txt").read_text() == "hi"
    with pytest.raises(ArtifactError, match="lists no other.bin"):
        art.file("other.bin")


def test_an_edited_extra_file_is_refused(tmp_path):
    _save(tmp_path / "art", files={"split.npz": b"the split trained on"})
    (tmp_path / "art" / "split.npz").write_bytes(b"another split")
    with pytest.raises(ArtifactError, match=r"split\.npz is corrupt \(sha256 mismatch"):
        load_artifact(tmp_path / "art")
    with pytest.raises(ArtifactError, match=r"split\.npz is corrupt"):
        artifact_file(tmp_path / "art", "split.npz")


def test_a_file_added_after_saving_is_refused_with_the_reason(tmp_path):
    _save(tmp_path / "art")
    (tmp_path / "art" / "split.npz").write_bytes(b"written after the rename")
    with pytest.raises(
        ArtifactError, match=r"holds split\.npz, not listed in manifest\.json.*added afterwards"
    ):
        load_artifact(tmp_path / "art")
    with pytest.raises(ArtifactError, match=r"lists no split\.npz"):
        artifact_file(tmp_path / "art", "split.npz")


def test_an_index_folder_inside_the_artifact_is_tolerated(tmp_path):
    _save(tmp_path / "art")
    (tmp_path / "art" / "index" / "hnsw").mkdir(parents=True)
    assert load_artifact(tmp_path / "art").family == "two_tower"


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"../x": b""}, "not usable as a file name"),
        ({".hidden": b""}, "not usable as a file name"),
        ({"manifest.json": b""}, "reserved"),
        ({"index": b""}, "reserved"),
        ({"weights.safetensors": b""}, "clashes"),
        ({"vocab_user.json": b""}, "clashes"),
        ({"a.txt": "text, not bytes"}, "give bytes or a callable"),
    ],
)
def test_bad_extra_files_are_refused_before_writing(tmp_path, files, match):
    with pytest.raises(ArtifactError, match=match):
        _save(tmp_path / "art", files=files)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_extra_file_writer_keeps_the_previous_artifact(tmp_path):
    _save(tmp_path / "art", files={"split.npz": b"old"})

    def writer(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "art", family="other", files={"split.npz": writer})
    art = load_artifact(tmp_path / "art")
    assert (art.family, art.file("split.npz").read_bytes()) == ("two_tower", b"old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


# ------------------------------------------------------------------------------------------
# kill -9 at any point of a save leaves the old or the new artifact, complete and loadable
# ------------------------------------------------------------------------------------------

_CHILD = r"""
import os, signal, sys
from pathlib import Path
import torch
from recfunnel import artifacts, atomic

path, phase = Path(sys.argv[1]), sys.argv[2]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def after(fn, then):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        then(*a)
        return out
    return wrapped


if phase in ("set-aside", "after-rename"):  # the two-rename fallback of non-Linux platforms
    atomic._exchange = lambda a, b: False

    def kill_at(src, dst):
        dst = Path(dst)
        if dst.name.startswith(".art.old-") if phase == "set-aside" else dst == path:
            die()

    atomic.os.rename = after(os.rename, kill_at)
if phase == "weights":
    artifacts.save_file = lambda tensors, target: (Path(target).write_bytes(b"half a weights file"), die())
if phase == "before-swap":
    atomic._fsync_tree = after(atomic._fsync_tree, lambda *a: die())
if phase == "after-exchange":
    atomic._exchange = after(atomic._exchange, lambda *a: die())
if phase == "removing-old":
    def remove(p):
        next(p.iterdir()).unlink()
        die()
    atomic._remove = remove


def split_writer(target):
    target.write_bytes(b"new split" if phase != "extra-file" else b"new sp")
    if phase == "extra-file":
        die()


artifacts.save_artifact(
    path, family="new", config={}, tensors={"w": torch.full((64,), 2.0)}, vocabs={"item": ["a", "b"]},
    files={"split.npz": split_writer},
)
"""

# phase -> which artifact a reader must find afterwards
_KILL_POINTS = {
    "weights": "old",
    "extra-file": "old",
    "before-swap": "old",
    "after-exchange": "new",
    "set-aside": "old",
    "after-rename": "new",
    "removing-old": "new",
}


@pytest.mark.parametrize("phase", list(_KILL_POINTS))
def test_sigkill_during_save_leaves_the_old_or_the_new_artifact_complete(tmp_path, phase):
    from recfunnel import atomic

    if phase == "after-exchange" and atomic._renameat2 is None:
        pytest.skip("needs Linux renameat2")
    path = tmp_path / "art"
    save_artifact(
        path,
        family="old",
        config={},
        tensors={"w": torch.ones(64)},
        vocabs={},
        files={"split.npz": b"old split"},
    )
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), phase], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    if phase == "set-aside":
        assert not path.exists()  # killed between the two renames: the next reader puts it back
    art = load_artifact(path)
    assert art.family == _KILL_POINTS[phase]
    split = {"old": b"old split", "new": b"new split"}[art.family]
    assert art.file("split.npz").read_bytes() == split
    assert torch.equal(art.tensors["w"], torch.full((64,), 1.0 if art.family == "old" else 2.0))
    # the next save deletes what the killed writer left behind
    save_artifact(path, family="next", config={}, tensors={}, vocabs={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert load_artifact(path).family == "next"
