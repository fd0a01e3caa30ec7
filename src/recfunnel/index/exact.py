"""Exact search: one torch matmul + topk per block, the reference every ANN backend is measured against.

The vectors live on the ``device`` parameter's device (``auto``: a CUDA GPU when torch sees one);
queries go there and results come back to the CPU. The saved form is the same from any device."""

from __future__ import annotations

import io

import numpy as np
import torch
from pydantic import Field, field_validator

from recfunnel.index.base import Index, IndexParams
from recfunnel.nn.device import DEVICE_HELP, check_device_spec, resolve_device

__all__ = ["ExactIndex", "ExactParams"]


class ExactParams(IndexParams):
    block_elements: int = Field(
        1 << 24,
        ge=1,
        description="scores materialised at once (query rows x item columns); bounds memory to 4x this "
        "in bytes on catalogues of any size",
    )
    device: str = Field(
        "auto",
        description=f"where the vectors are held and scored: {DEVICE_HELP}; changeable after build "
        "(set_params) and at load (load_index(..., device=...))",
    )

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        return check_device_spec(v)


class ExactIndex(Index):
    """Brute force: scores = Q @ V^T in blocks of items, running top-k merged across blocks."""

    backend = "exact"
    Params = ExactParams
    search_params = ("block_elements", "device")
    payload_name = "vectors.npy"
    equalise_norms = False  # brute force needs no help from equal norms

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._vectors = torch.zeros(0, 0)

    def _build(self, x: np.ndarray) -> None:
        device = resolve_device(self.params.device)  # an absent GPU fails before anything changes
        self._vectors = torch.from_numpy(x.copy() if device.type == "cpu" else x).to(device)

    def _add(self, x: np.ndarray) -> None:
        self._vectors = torch.cat([self._vectors, torch.from_numpy(x).to(self._vectors.device)])

    def _apply_search_params(self) -> None:
        """Move the vectors to the device the parameters name (after build, load, set_params)."""
        device = resolve_device(self.params.device)
        if self._vectors.device != device:
            self._vectors = self._vectors.to(device)

    @property
    def device(self) -> torch.device:
        """Where the vectors are held."""
        return self._vectors.device

    @torch.no_grad()
    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        vectors, n = self._vectors, self._vectors.shape[0]
        queries = torch.from_numpy(q).to(vectors.device)
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
        return torch.cat(pos_out).cpu().numpy(), torch.cat(score_out).cpu().numpy()

    def _to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.save(buf, self._vectors.cpu().numpy(), allow_pickle=False)
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
