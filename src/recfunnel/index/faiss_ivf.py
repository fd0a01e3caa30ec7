"""FAISS inverted files (Jégou et al., TPAMI 2011): k-means cells, search the ``nprobe`` nearest.

* ``ivf``: IVF-Flat, raw vectors in the lists; with ``nprobe = nlist`` it is exact.
* ``ivfpq``: IVF-PQ, residuals product-quantised to ``m`` codes of ``nbits`` bits (``m * nbits / 8``
  bytes per vector); lossy by design, so recall tops out below 1 even with ``nprobe = nlist``.

``nlist`` (cells) defaults to ``round(sqrt(n))`` at build time, capped so every cell has ~39 training
points; k-means trains on a seeded sample of ``train_per_list * nlist`` vectors. New items from
:meth:`add` go to the nearest trained cell (no retraining), so a catalogue that drifts far from the
training data should be rebuilt.

With ``faiss-gpu`` installed and ``device`` ``auto`` (the default) or ``cuda[:N]``, searches run on a
GPU replica of the index (``index_cpu_to_gpu``); the CPU structure stays the one that is saved,
added to and memory-mapped, and searches beyond FAISS's GPU limits (k or nprobe over
:data:`~recfunnel.index.faiss_gpu.GPU_MAX_K`) use it. With the CPU build nothing changes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from recfunnel.index.base import IndexParams
from recfunnel.index.faiss_base import FaissIndex, _faiss
from recfunnel.index.faiss_gpu import DEVICE_FIELD_HELP, GPU_MAX_K, faiss_gpu_device, to_gpu
from recfunnel.nn.device import DeviceError, check_device_spec

__all__ = ["IVFIndex", "IVFParams", "IVFPQIndex", "IVFPQParams"]


class IVFParams(IndexParams):
    nlist: int | None = Field(None, ge=1, description="k-means cells; None: round(sqrt(n)) at build")
    nprobe: int = Field(16, ge=1, description="cells searched per query")
    train_per_list: int = Field(39, ge=1, description="k-means training sample size, per cell")
    seed: int = Field(0, description="seed of the training sample")
    device: str = Field("auto", description=DEVICE_FIELD_HELP)

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        return check_device_spec(v)


class IVFPQParams(IVFParams):
    m: int | None = Field(
        None, ge=1, description="PQ sub-quantisers (must divide the dim); None: dim / 2 if even, else dim"
    )
    nbits: int = Field(8, ge=1, le=16, description="bits per sub-quantiser code")


class IVFIndex(FaissIndex):
    """faiss.IndexIVFFlat with inner product; supports add() of new items (no retraining)."""

    backend = "ivf"
    Params = IVFParams
    search_params = ("nprobe", "device")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._gpu: Any = None  # the search replica on a GPU, when the device setting puts one there
        self._gpu_number: int | None = None
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
        self._gpu, self._gpu_number = None, None  # a replica of the old structure is stale

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
            self._place()

    def _place(self) -> None:
        """Make (or drop) the GPU search replica the ``device`` setting asks for. A replica FAISS
        cannot make (e.g. IVF-PQ code sizes its GPU kernels lack) is an error when a GPU was asked
        for by name, and a warning and CPU search under ``auto``."""
        gpu = faiss_gpu_device(self.params.device)
        if gpu is None:
            self._gpu, self._gpu_number = None, None
            return
        if self._gpu is not None and self._gpu_number == gpu:
            return
        try:
            replica = to_gpu(self._index, gpu)
        except Exception as exc:  # FAISS raises RuntimeError with its own message
            if self.params.device != "auto":
                raise DeviceError(
                    f"the {self.backend!r} index cannot be placed on GPU {gpu}: {exc}; valid: "
                    "device='cpu' (or 'auto', which falls back to the CPU)"
                ) from None
            warnings.warn(
                f"the {self.backend!r} index stays on the CPU: FAISS could not copy it to GPU {gpu} ({exc})",
                RuntimeWarning,
                stacklevel=3,
            )
            self._gpu, self._gpu_number = None, None
            return
        self._gpu, self._gpu_number = replica, gpu

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU replica."""
        return self._gpu is not None

    def _add(self, x: np.ndarray) -> None:
        super()._add(x)
        if self._gpu is not None:  # the replica is copied again from the grown CPU structure
            self._gpu, self._gpu_number = None, None
            self._place()

    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        nprobe = self._nprobe(effort)
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if self._gpu is not None and fetch <= GPU_MAX_K and nprobe <= GPU_MAX_K:
            try:
                scores, pos = self._gpu.search(q, fetch, params=params)
                return pos, scores
            except Exception as exc:  # a GPU failure costs speed, never results
                warnings.warn(
                    f"GPU search of the {self.backend!r} index failed ({exc}); "
                    "searching on the CPU from now on",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._gpu, self._gpu_number = None, None
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
