"""Item vectors -> nearest-neighbour index (exact | FAISS HNSW | FAISS IVF-Flat | FAISS IVF-PQ | Milvus).

    index = build_index("hnsw", item_vectors, ids, ef_search=128)
    index = index_from_model(model, "hnsw")                 # any Factorised model, its exact score
    ids, scores = index.search(user_vectors, k=10, exclude=seen_rows)
    index.save(index_dir(artifact_path, "hnsw")); index = load_index(index_dir(artifact_path, "hnsw"))

Every backend has the interface of :class:`Index` (build / add / search / save / load). FAISS is
imported only when a FAISS backend is used, pymilvus only when the milvus backend is (an optional
extra: ``pip install 'recfunnel[milvus]'``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recfunnel.index.base import Index, IndexFileError, IndexParams, read_meta, recall_at_k
from recfunnel.index.exact import ExactIndex
from recfunnel.index.faiss_hnsw import HNSWIndex
from recfunnel.index.faiss_ivf import IVFIndex, IVFPQIndex
from recfunnel.index.milvus import MilvusIndex  # imports pymilvus only when used

__all__ = [
    "INDEXES",
    "ExactIndex",
    "HNSWIndex",
    "IVFIndex",
    "IVFPQIndex",
    "Index",
    "IndexFileError",
    "IndexParams",
    "MilvusIndex",
    "build_index",
    "check_index_matches",
    "index_class",
    "index_dir",
    "index_from_model",
    "load_index",
    "model_item_vectors",
    "read_meta",
    "recall_at_k",
]

#: backend name -> class
INDEXES: dict[str, type[Index]] = {
    "exact": ExactIndex,
    "hnsw": HNSWIndex,
    "ivf": IVFIndex,
    "ivfpq": IVFPQIndex,
    "milvus": MilvusIndex,
}

Scoring = Literal["model", "cosine"]


def index_class(name: str) -> type[Index]:
    """The backend class registered as `name`; the error lists the valid names."""
    try:
        return INDEXES[name]
    except KeyError:
        raise ValueError(f"unknown index backend {name!r}; valid: {', '.join(sorted(INDEXES))}") from None


def build_index(
    name: str,
    vectors: Any,
    ids: Any = None,
    *,
    bias: Any = None,
    normalize: bool = True,
    threads: int | None = None,
    **params: Any,
) -> Index:
    """Build backend `name` over `vectors` [n, d] with `ids` [n] (default 0..n-1).

    `params` are the backend's (exact: block_elements; hnsw: m, ef_construction, ef_search;
    ivf: nlist, nprobe, train_per_list, seed; ivfpq: those + m, nbits; milvus: uri, collection,
    index_type, m, ef_construction, ef_search, nlist, nprobe, db_name, token, timeout)."""
    cls = index_class(name)
    return cls(normalize=normalize, threads=threads, **params).build(vectors, ids, bias=bias)


def index_dir(artifact: str | os.PathLike[str], backend: str) -> Path:
    """Where a model artifact keeps its index of `backend`: ``<artifact>/index/<backend>``."""
    index_class(backend)
    return Path(artifact) / "index" / backend


def load_index(
    path: str | os.PathLike[str], *, threads: int | None = None, mmap: bool = False, device: str | None = None
) -> Index:
    """Load a saved index folder of any backend (meta.json and checksums are checked first);
    `mmap`: map the stored vectors read-only; `device`: where exact / IVF search runs instead of the
    saved setting (:meth:`Index.load`)."""
    return Index.load(path, threads=threads, mmap=mmap, device=device)


@torch.no_grad()
def model_item_vectors(model: Any, scoring: Scoring = "model") -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(item vectors [n, d], item bias [n] or None, normalize) for indexing a Factorised model.

    scoring="model": the index returns the model's own score ``<u, v_i> + b_i`` (exact maximum inner
    product): vectors as they are, the item bias (if the model has one, `item_bias_all()`) as one
    extra dimension matched by a constant 1 on the query side, no normalisation. For models whose
    vectors are L2-normalised already (two-tower) this is also cosine.
    scoring="cosine": normalised vectors, bias ignored: cosine retrieval, which differs from the
    model's ranking when vector norms or biases carry popularity (MF)."""
    from recfunnel.models.base import Factorised

    if not isinstance(model, Factorised):
        raise TypeError(
            f"{type(model).__name__} has no item vectors: only Factorised models (user_vectors / "
            "item_vectors) can feed an index"
        )
    if scoring not in ("model", "cosine"):
        raise ValueError(f"scoring must be 'model' or 'cosine', got {scoring!r}")
    vectors = model.item_vectors().detach().float().cpu().numpy()
    if scoring == "cosine":
        return vectors, None, True
    bias_fn = getattr(model, "item_bias_all", None)
    bias = bias_fn() if callable(bias_fn) else 0.0
    if isinstance(bias, torch.Tensor):
        bias = bias.detach().float().cpu().numpy().reshape(-1)
        if bias.shape != (len(vectors),):
            raise ValueError(f"item_bias_all() has shape {bias.shape}; expected ({len(vectors)},)")
        return vectors, bias, False
    if bias != 0.0:
        raise ValueError(f"item_bias_all() returned the scalar {bias!r}; expected a tensor or 0.0")
    return vectors, None, False


def _fingerprint(vectors: np.ndarray, bias: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(vectors, np.float32).tobytes())
    if bias is not None:
        h.update(np.ascontiguousarray(bias, np.float32).tobytes())
    return h.hexdigest()


def index_from_model(
    model: Any,
    backend: str = "hnsw",
    *,
    scoring: Scoring = "model",
    threads: int | None = None,
    **params: Any,
) -> Index:
    """Index the items of a Factorised model (ids = item indices 0..n_items-1); see
    :func:`model_item_vectors` for `scoring`. Query it with ``model.user_vectors(users)``: the bias
    column, if any, is appended to the queries inside. The index's ``source`` records the model
    family and a hash of the vectors, so :func:`check_index_matches` catches a stale index."""
    vectors, bias, normalize = model_item_vectors(model, scoring)
    index = build_index(backend, vectors, bias=bias, normalize=normalize, threads=threads, **params)
    index.source = {
        "family": getattr(model, "family", type(model).__name__),
        "n_items": len(vectors),
        "scoring": scoring,
        "vectors_sha256": _fingerprint(vectors, bias),
    }
    return index


def check_index_matches(index: Index, model: Any) -> None:
    """Raise IndexFileError if `index` was not built from `model`'s current item vectors."""
    scoring = index.source.get("scoring")
    if scoring not in ("model", "cosine"):
        raise IndexFileError("the index records no model it was built from (built from raw vectors?)")
    vectors, bias, _ = model_item_vectors(model, scoring)
    if index.source.get("vectors_sha256") != _fingerprint(vectors, bias):
        raise IndexFileError(
            f"the {index.backend!r} index was built from other item vectors than this "
            f"{getattr(model, 'family', type(model).__name__)!r} model's (retrained since?); rebuild it"
        )
