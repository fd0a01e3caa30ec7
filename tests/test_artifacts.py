import hashlib
import json
from datetime import datetime

import pytest
import torch

import recfunnel
from recfunnel.artifacts import FORMAT_VERSION, ArtifactError, load_artifact, save_artifact


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
