"""FAISS inverted files (Jégou et al., TPAMI 2011): k-means cells, search the ``nprobe`` nearest.

* ``ivf``: IVF-Flat, raw vectors in the lists; with ``nprobe = nlist`` it is exact.
* ``ivfpq``: IVF-PQ, residuals product-quantised to ``m`` codes of ``nbits`` bits (``m * nbits / 8``
  bytes per vector); lossy by design, so recall tops out below 1 even with ``nprobe = nlist``.

``nlist`` (cells) defaults to ``round(sqrt(n))`` at build time, capped so every cell has ~39 training
points; k-means trains on a seeded sample of ``train_per_list * nlist`` vectors. New items from
:meth:`add` go to the nearest trained cell (no retraining), so a catalogue that drifts far from the
training data should be rebuilt.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from pydantic import Field

from recfunnel.index.base import IndexParams
from recfunnel.index.faiss_base import FaissIndex, _faiss

__all__ = ["IVFIndex", "IVFParams", "IVFPQIndex", "IVFPQParams"]


class IVFParams(IndexParams):
    nlist: int | None = Field(None, ge=1, description="k-means cells; None: round(sqrt(n)) at build")
    nprobe: int = Field(16, ge=1, description="cells searched per query")
    train_per_list: int = Field(39, ge=1, description="k-means training sample size, per cell")
    seed: int = Field(0, description="seed of the training sample")


class IVFPQParams(IVFParams):
    m: int | None = Field(
        None, ge=1, description="PQ sub-quantisers (must divide the dim); None: dim / 2 if even, else dim"
    )
    nbits: int = Field(8, ge=1, le=16, description="bits per sub-quantiser code")


class IVFIndex(FaissIndex):
    """faiss.IndexIVFFlat with inner product; supports add() of new items (no retraining)."""

    backend = "ivf"
    Params = IVFParams
    search_params = ("nprobe",)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # None parameters resolve at each build and are saved resolved
        self._auto = {k for k in ("nlist", "m") if getattr(self.params, k, 0) is None}

    def _mmap_flag(self) -> int:
        return _faiss().IO_FLAG_MMAP  # the inverted lists (codes and ids) stay in the file

    def _nlist(self, n: int) -> int:
        if "nlist" not in self._auto:
            if self.params.nlist > n:
                raise ValueError(f"nlist={self.params.nlist} is larger than the {n} vectors to train on")
            return self.params.nlist
        return max(1, min(round(math.sqrt(n)), n // 39))

    def _make(self, quantizer, dim: int, nlist: int):
        faiss = _faiss()
        return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def _build(self, x: np.ndarray) -> None:
        faiss = _faiss()
        nlist = self._nlist(len(x))
        index = self._make(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist)
        sample = self._training_sample(x, nlist)
        index.train(sample)
        index.add(x)
        self.params.nlist = nlist
        self._index = index

    def _training_sample(self, x: np.ndarray, nlist: int) -> np.ndarray:
        size = self.params.train_per_list * nlist
        if size >= len(x):
            return x
        rng = np.random.default_rng(self.params.seed)
        return x[np.sort(rng.choice(len(x), size, replace=False))]

    def _nprobe(self, effort: int) -> int:
        return min(self._index.nlist, self.params.nprobe * 4**effort)

    def _apply_search_params(self) -> None:
        if self._index is not None:
            self._index.nprobe = min(self._index.nlist, self.params.nprobe)

    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        params = faiss.SearchParametersIVF(nprobe=self._nprobe(effort))
        scores, pos = self._index.search(q, fetch, params=params)
        return pos, scores

    def _exhaustive(self, fetch: int, effort: int) -> bool:
        return self._nprobe(effort) >= self._index.nlist

    def _effort_value(self, fetch: int, effort: int) -> int:
        return self._nprobe(effort)


class IVFPQIndex(IVFIndex):
    """faiss.IndexIVFPQ with inner product: compressed codes, approximate scores."""

    backend = "ivfpq"
    Params = IVFPQParams
    exact_scores = False  # scores from PQ codes: a widened pass only fills a short row's empty places

    def _make(self, quantizer, dim: int, nlist: int):
        faiss = _faiss()
        m = self.params.m if "m" not in self._auto else (dim // 2 if dim % 2 == 0 else dim)
        if dim % m:
            raise ValueError(f"ivfpq m={m} must divide the vector dim {dim}")
        self.params.m = m
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, self.params.nbits, faiss.METRIC_INNER_PRODUCT)
        # one Python warning below instead of faiss printing one line per sub-quantiser
        index.pq.cp.min_points_per_centroid = 1
        return index

    def _training_sample(self, x: np.ndarray, nlist: int) -> np.ndarray:
        need = 2**self.params.nbits
        if len(x) < need:
            raise ValueError(
                f"ivfpq with nbits={self.params.nbits} trains {need} centroids per sub-quantiser but only "
                f"{len(x)} vectors were given; lower nbits (e.g. {max(1, int(math.log2(len(x))))})"
            )
        if len(x) < 39 * need:
            warnings.warn(
                f"ivfpq trains {need} centroids per sub-quantiser on {len(x)} vectors (faiss advises "
                f">= {39 * need}); codes will be coarse",
                RuntimeWarning,
                stacklevel=4,
            )
        size = max(self.params.train_per_list * nlist, 39 * need)
        if size >= len(x):
            return x
        rng = np.random.default_rng(self.params.seed)
        return x[np.sort(rng.choice(len(x), size, replace=False))]
