"""Shared plumbing of the FAISS backends (HNSW, IVF, IVF-PQ): threads, (de)serialisation, versions.

FAISS is imported on first use, so ``recfunnel.index`` imports without it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from recfunnel.index.base import Index

__all__ = ["FaissIndex"]


def _faiss():
    import faiss

    return faiss


class FaissIndex(Index):
    """Shared plumbing of the FAISS backends: thread count, (de)serialisation, versions."""

    payload_name = "index.faiss"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._index = None

    def _versions(self) -> dict[str, str]:
        return {"faiss": _faiss().__version__}

    @contextmanager
    def _thread_scope(self) -> Iterator[None]:
        if self.threads is None:
            yield
            return
        faiss = _faiss()
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    def _add(self, x: np.ndarray) -> None:
        self._index.add(x)

    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self._index.search(q, fetch)
        return pos, scores

    def _to_bytes(self) -> bytes:
        return _faiss().serialize_index(self._index).tobytes()

    def _from_bytes(self, blob: bytes) -> None:
        faiss = _faiss()
        self._check(faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8)))

    def _from_file(self, path: Path, mmap: bool) -> None:
        """`mmap`: FAISS maps the flat vectors / codes (``IO_FLAG_MMAP_IFC``: HNSW's storage, flat
        codes) and IVF lists (``IO_FLAG_MMAP``) read-only from the file; the HNSW graph and IVF
        centroids are still read into memory."""
        if not mmap:
            return super()._from_file(path, mmap)
        faiss = _faiss()
        self._check(faiss.read_index(str(path), faiss.IO_FLAG_READ_ONLY | self._mmap_flag()))
        self.mapped = True

    def _mmap_flag(self) -> int:
        """The FAISS I/O flag that maps this structure's bulk data (flat codes by default)."""
        return _faiss().IO_FLAG_MMAP_IFC

    def _check(self, index: Any) -> None:
        if index.metric_type != _faiss().METRIC_INNER_PRODUCT:
            raise ValueError("the stored faiss index does not use inner product")
        self._index = index

    def _stored_shape(self) -> tuple[int, int]:
        return int(self._index.d), int(self._index.ntotal)

    @property
    def nbytes(self) -> int:
        return int(_faiss().serialize_index(self._index).nbytes) if self._index is not None else 0
