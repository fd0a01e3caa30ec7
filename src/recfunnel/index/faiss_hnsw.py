"""FAISS HNSW (Malkov & Yashunin, TPAMI 2018): a layered proximity graph over the raw vectors.

``m`` (links per node) and ``ef_construction`` fix the graph at build time; ``ef_search`` (the size of
the candidate list while searching) trades recall for speed and can change after build. A search for
``k`` results explores at least ``k`` candidates (FAISS uses ``max(ef_search, k)``).

Defaults come from the ``ann`` benchmark (bench/results/ann.json, shared 2-core machine, one batch of
1000 queries, 1 thread; BENCHMARKS.md renders it): on 1M clustered 64-d vectors m=32,
ef_construction=100 (473 s to build, 504 MB) and ef_search=128 gave recall@10 0.9975 / recall@100
0.993 at 1,582 queries/s, 26x exact search's 61 (ef_search=64: 0.988 at 47x; 32: 0.943). On ml-100k
item vectors it gave recall@100 0.997 (MF-BPR) and 0.981 (TwoTower-logQ). 128 keeps a margin for
real embeddings, which are usually harder than Gaussian clusters; lower it where queries per second
matter more than the last percent of recall.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recfunnel.index.base import IndexParams
from recfunnel.index.faiss_base import FaissIndex, _faiss

__all__ = ["HNSWIndex", "HNSWParams"]


class HNSWParams(IndexParams):
    m: int = Field(32, ge=2, le=512, description="graph links per node (HNSW's M)")
    ef_construction: int = Field(100, ge=1, description="candidate list size while building")
    ef_search: int = Field(128, ge=1, description="candidate list size while searching")


class HNSWIndex(FaissIndex):
    """faiss.IndexHNSWFlat with inner product; supports add() of new items."""

    backend = "hnsw"
    Params = HNSWParams
    search_params = ("ef_search",)

    def _build(self, x: np.ndarray) -> None:
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(x.shape[1], self.params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.params.ef_construction
        index.add(x)
        self._index = index

    def _apply_search_params(self) -> None:
        if self._index is not None:
            self._index.hnsw.efSearch = self.params.ef_search

    def _effort_value(self, fetch: int, effort: int) -> int:
        # the candidate list FAISS explores: at least the fetch; a retry (effort > 0) doubles it
        return max(self.params.ef_search, fetch) * (2**effort)

    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        ef = self._effort_value(fetch, effort)
        scores, pos = self._index.search(q, fetch, params=faiss.SearchParametersHNSW(efSearch=ef))
        return pos, scores

    def _exhaustive(self, fetch: int, effort: int) -> bool:
        return self._effort_value(fetch, effort) >= self.count
