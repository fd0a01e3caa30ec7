"""Exact search: one torch matmul + topk per block, the reference every ANN backend is measured against."""

from __future__ import annotations

import io

import numpy as np
import torch
from pydantic import Field

from recfunnel.index.base import Index, IndexParams

__all__ = ["ExactIndex", "ExactParams"]


class ExactParams(IndexParams):
    block_elements: int = Field(
        1 << 24,
        ge=1,
        description="scores materialised at once (query rows x item columns); bounds memory to 4x this "
        "in bytes on catalogues of any size",
    )


class ExactIndex(Index):
    """Brute force: scores = Q @ V^T in blocks of items, running top-k merged across blocks."""

    backend = "exact"
    Params = ExactParams
    search_params = ("block_elements",)
    payload_name = "vectors.npy"
    equalise_norms = False  # brute force needs no help from equal norms

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._vectors = torch.zeros(0, 0)

    def _build(self, x: np.ndarray) -> None:
        self._vectors = torch.from_numpy(x.copy())

    def _add(self, x: np.ndarray) -> None:
        self._vectors = torch.cat([self._vectors, torch.from_numpy(x)])

    @torch.no_grad()
    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        vectors, n = self._vectors, self._vectors.shape[0]
        queries = torch.from_numpy(q)
        budget = self.params.block_elements
        q_rows = max(1, min(len(q), budget // max(1, min(n, 4096))))
        pos_out, score_out = [], []
        for qs in range(0, len(q), q_rows):
            qb = queries[qs : qs + q_rows]
            block = max(fetch, budget // len(qb))
            best_s = best_i = None
            for start in range(0, n, block):
                s = qb @ vectors[start : start + block].T
                top = torch.topk(s, min(fetch, s.shape[1]), dim=1)
                idx = top.indices + start
                if best_s is None:
                    best_s, best_i = top.values, idx
                else:
                    merged = torch.topk(torch.cat([best_s, top.values], 1), fetch, dim=1)
                    best_s = merged.values
                    best_i = torch.cat([best_i, idx], 1).gather(1, merged.indices)
            pos_out.append(best_i)
            score_out.append(best_s)
        return torch.cat(pos_out).numpy(), torch.cat(score_out).numpy()

    def _to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.save(buf, self._vectors.numpy(), allow_pickle=False)
        return buf.getvalue()

    def _from_bytes(self, blob: bytes) -> None:
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
        if arr.dtype != np.float32 or arr.ndim != 2:
            raise ValueError(f"expected a float32 matrix, found {arr.dtype} with shape {arr.shape}")
        self._vectors = torch.from_numpy(arr)

    def _stored_shape(self) -> tuple[int, int]:
        return int(self._vectors.shape[1]), int(self._vectors.shape[0])

    @property
    def nbytes(self) -> int:
        return self._vectors.numel() * self._vectors.element_size()
