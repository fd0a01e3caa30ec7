"""One interface for top-k inner-product search over item vectors, whatever the backend.

    index = HNSWIndex(m=32, ef_search=128).build(item_vectors, ids)     # [n, d] float, [n] int64
    ids, scores = index.search(user_vectors, k=10, exclude=seen_csr)   # [q, k] int64, [q, k] float32
    index.add(new_vectors, new_ids)                                     # cold-start items
    index.save(artifact / "index" / "hnsw"); index = load_index(artifact / "index" / "hnsw")

Scores are inner products. With ``normalize=True`` (the default) item vectors and queries are
L2-normalised inside, so the scores are cosines. With ``bias=`` given to :meth:`Index.build`, each item
gets its bias as one extra dimension and each query a constant 1 there, so the score is
``<u, v> + b`` exactly (maximum inner product search, which normalisation would break: it is refused).

Without normalisation the approximate backends also give every item one more dimension,
``sqrt(M^2 - |x|^2)`` with ``M`` the largest item norm at build time, and every query a 0 there
(Bachrach et al., RecSys 2014): scores are unchanged, but all items now have the same norm, so inner
product ranks like Euclidean distance and HNSW's graph / IVF's cells stay navigable. (Without it, on
ml-100k MF-BPR vectors after one epoch, item norms 0.5-3.7, HNSW's recall@100 stayed at 0.89-0.90 for
ef_search 128 to 512; with it, 1.0.)
An item added later with a norm above ``M`` gets 0 there: its score stays exact, only the search
may reach it less reliably; rebuild when many such items arrive.

Results always have shape ``[q, k]``. ``exclude`` removes per-query ids (already-seen items) by
over-fetching ``k + longest exclusion list`` and filtering; when an approximate backend still comes back
short (exclusions, or an IVF probe whose cells hold fewer than ``k`` items), the short rows are searched
again wider and merged with what they had, so widening only ever adds results: with exact scores
(flat vectors) the merge keeps the best ``k`` of both passes, with approximate ones (IVF-PQ codes) it
keeps every result of the narrower pass and fills only the empty places. Only when the catalogue minus
a query's exclusions holds fewer than ``k`` items do results run out; the missing places hold id ``-1``
and score ``-inf``. ``last_widened`` counts the widened queries of the last search and ``last_effort``
holds, per query, the search-parameter value (IVF ``nprobe``, HNSW ``ef``) its results were actually
searched at; ``search(..., widen=False)`` searches once at the configured value (short rows stay
short), which is how the ``ann`` bench measures recall at a given effort.

Saved form: a checked folder (``meta.json``, the backend's payload, ``ids.npy``) written in one
atomic step, see :mod:`recfunnel.index.persist`; :meth:`Index.load` checks ``meta.json`` and every
checksum before it deserialises anything, and raises :class:`IndexFileError` naming the file and the
fault. Row helpers (ids, exclusions, recall) live in :mod:`recfunnel.index._rows`, the FAISS plumbing
in :mod:`recfunnel.index.faiss_base`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

import recfunnel
from recfunnel.index._rows import (
    _PAD,
    _as_ids,
    _as_matrix,
    _exclusion_rows,
    _is_excluded,
    _normalise,
    _padded_sorted,
    recall_at_k,
)
from recfunnel.index.persist import (
    FORMAT_VERSION,
    IDS_NAME,
    META_NAME,
    IndexFileError,
    load_index_folder,
    read_meta,
    save_index,
)

if TYPE_CHECKING:
    from recfunnel.index._rows import ArrayLike, Exclude

__all__ = [
    "FORMAT_VERSION",
    "META_NAME",
    "IDS_NAME",
    "Index",
    "IndexParams",
    "IndexFileError",
    "read_meta",
    "recall_at_k",
]


class IndexParams(BaseModel):
    """Base of each backend's typed parameters (stored in meta.json, printed in bench rows)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Index(ABC):
    """Top-k inner-product search over vectors with int64 ids (see the module docstring).

    Args:
        normalize: L2-normalise item vectors and queries (cosine); must be False with item biases.
        threads: threads for build and search (torch / OpenMP); None leaves the library default.
        **params: the backend's typed parameters (its ``Params``).
    """

    backend: ClassVar[str] = ""
    Params: ClassVar[type[IndexParams]] = IndexParams
    #: parameters that may change after build (through :meth:`set_params`).
    search_params: ClassVar[tuple[str, ...]] = ()
    payload_name: ClassVar[str] = "index.bin"
    #: add the norm-equalising dimension when not normalising (graph / cell backends)
    equalise_norms: ClassVar[bool] = True
    #: whether _search returns exact inner products (flat vectors) rather than approximations (codes):
    #: decides how a widened pass is merged with the narrower one (see :meth:`search`)
    exact_scores: ClassVar[bool] = True

    def __init__(self, *, normalize: bool = True, threads: int | None = None, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise ValueError(f"bad parameters for the {self.backend!r} index: {exc}") from None
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.normalize = bool(normalize)
        self.threads = threads
        self.bias = False
        self.mapped = False  # loaded with mmap=True: the stored vectors are a read-only file map
        self.mips_norm: float | None = None  # M of the norm-equalising dimension, if one is used
        self.dim: int | None = None  # query dimension (without the bias column)
        self.source: dict[str, Any] = {}  # where the vectors came from (model family, hash), free-form
        self.last_widened = 0  # queries the last search() had to search again, wider (see search)
        #: per query of the last search(): the search-parameter value (nprobe, ef) of the widest pass
        #: that produced its results; None for backends without one (exact)
        self.last_effort: np.ndarray | None = None
        self._ids = np.zeros(0, dtype=np.int64)

    # ---- state ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of stored vectors."""
        return len(self._ids)

    def __len__(self) -> int:
        return self.count

    @property
    def ids(self) -> np.ndarray:
        """The id of each stored row (read-only view)."""
        v = self._ids.view()
        v.flags.writeable = False
        return v

    @property
    def index_dim(self) -> int:
        return (self.dim or 0) + int(self.bias) + int(self.mips_norm is not None)

    @property
    def built(self) -> bool:
        return self.dim is not None

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.model_dump().items())
        return (
            f"{type(self).__name__}({p}, normalize={self.normalize}, bias={self.bias}, "
            f"dim={self.dim}, count={self.count})"
        )

    def set_params(self, **search_params: Any) -> Index:
        """Change search-time parameters (e.g. ``ef_search``, ``nprobe``) of a built index."""
        unknown = set(search_params) - set(self.search_params)
        if unknown:
            raise ValueError(
                f"{sorted(unknown)} cannot change after build for {self.backend!r}; "
                f"search parameters: {', '.join(self.search_params) or 'none'}"
            )
        before = self.params.model_copy()
        try:
            for key, value in search_params.items():
                setattr(self.params, key, value)
            if self.built:
                self._apply_search_params()  # e.g. a device that is not here: refused, nothing moved
        except ValidationError as exc:
            self.params = before
            raise ValueError(f"bad search parameter for {self.backend!r}: {exc}") from None
        except BaseException:
            self.params = before
            raise
        return self

    # ---- building -----------------------------------------------------------------------------
    def _prepare_items(self, vectors: ArrayLike, bias: ArrayLike | None, what: str) -> np.ndarray:
        x = _as_matrix(vectors, what)
        if self.built and x.shape[1] != self.dim:
            raise ValueError(f"{what} have dim {x.shape[1]}; this index holds dim {self.dim}")
        if bias is not None:
            b = np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias, np.float32)
            b = b.reshape(-1)
            if len(b) != len(x):
                raise ValueError(f"bias has {len(b)} values for {len(x)} vectors")
            if not np.isfinite(b).all():
                raise ValueError(f"bias value {int(np.argmax(~np.isfinite(b)))} is NaN or inf")
            x = np.concatenate([x, b[:, None]], axis=1)
        if self.normalize:
            return _normalise(x)
        if self.equalise_norms:
            norms = np.linalg.norm(x, axis=1)
            if not self.built:
                self.mips_norm = float(max(norms.max(initial=0.0), 1e-12))
            extra = np.sqrt(np.maximum(self.mips_norm**2 - norms.astype(np.float64) ** 2, 0.0))
            x = np.concatenate([x, extra.astype(np.float32)[:, None]], axis=1)
        return np.ascontiguousarray(x)

    def build(
        self, vectors: ArrayLike, ids: ArrayLike | None = None, *, bias: ArrayLike | None = None
    ) -> Index:
        """Index `vectors` [n, d] under `ids` [n] (int64 >= 0, unique; default 0..n-1), replacing
        any previous content. `bias` [n]: per-item additive score (exact MIPS; needs normalize=False)."""
        if bias is not None and self.normalize:
            raise ValueError(
                "item biases keep exact inner-product scores only without normalisation: build with "
                "normalize=False (or drop the bias for cosine retrieval)"
            )
        before = (self.dim, self.mips_norm, self.bias)
        try:
            self.dim, self.mips_norm = None, None
            self.bias = bias is not None
            x = self._prepare_items(vectors, bias, "vectors")
            if len(x) == 0:
                raise ValueError("cannot build an index from 0 vectors")
            new_ids = _as_ids(ids, len(x), 0, "ids")
            self.dim = x.shape[1] - int(self.bias) - int(self.mips_norm is not None)
            with self._thread_scope():
                self._build(x)  # backends swap in the new structure only when it is complete
        except BaseException:
            self.dim, self.mips_norm, self.bias = before  # a failed build leaves the index as it was
            raise
        self._ids = new_ids
        self._apply_search_params()
        return self

    def add(
        self, vectors: ArrayLike, ids: ArrayLike | None = None, *, bias: ArrayLike | None = None
    ) -> Index:
        """Append `vectors` [n, d] under new `ids` (default: after the largest id so far). An item
        with a bias needs one here too; IVF backends keep their trained centroids."""
        if not self.built:
            raise RuntimeError("add() needs a built index: call build() first")
        if self.mapped:
            raise RuntimeError("this index is memory-mapped read-only: load it with mmap=False to add()")
        if self.bias != (bias is not None):
            raise ValueError(
                "this index was built with item biases: pass bias="
                if self.bias
                else "this index was built without item biases: bias= is not accepted"
            )
        x = self._prepare_items(vectors, bias, "vectors")
        start = int(self._ids.max()) + 1 if self.count else 0
        new_ids = _as_ids(ids, len(x), start, "ids")
        clash = np.isin(new_ids, self._ids)
        if clash.any():
            raise ValueError(f"ids already in the index: {new_ids[clash][:5].tolist()}")
        if len(x):
            with self._thread_scope():
                self._add(x)
            self._ids = np.concatenate([self._ids, new_ids])
        return self

    # ---- searching ------------------------------------------------------------------------------
    def _prepare_queries(self, queries: ArrayLike) -> np.ndarray:
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(
                f"queries have dim {q.shape[1]}; this index holds dim {self.dim}"
                + (" (the bias column is added inside)" if self.bias else "")
            )
        if self.normalize:
            return _normalise(q)
        extra = [np.ones((len(q), 1), np.float32)] if self.bias else []
        if self.mips_norm is not None:
            extra.append(np.zeros((len(q), 1), np.float32))
        return np.ascontiguousarray(np.concatenate([q, *extra], axis=1)) if extra else q

    def search(
        self, queries: ArrayLike, k: int, exclude: Exclude = None, *, widen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` ids and scores per query, best first: (int64 [q, k], float32 [q, k]).

        `exclude`: per-query ids never to return: a sparse matrix with one row per query (column
        indices = ids, e.g. the seen-items CSR rows of these users) or a sequence of id collections.
        Rows still hold k results; id -1 / score -inf only where the catalogue runs out. Queries that
        came back short (an IVF probe whose cells hold fewer than k + exclusions items, or most of an
        HNSW candidate list excluded) are searched again with twice the fetch and wider parameters
        (HNSW: ef x2, IVF: nprobe x4 per round) until full or exhaustive, and each wider pass is
        merged with what the row already held, so a widened row never loses a result it had: with
        exact scores the best k of both passes, with approximate scores (IVF-PQ) every earlier result
        kept and only the empty places filled. `last_widened` counts the widened queries,
        `last_effort` gives per query the parameter value its results came from.

        `widen=False`: one pass at the configured parameters, short rows left short (-1 / -inf):
        results at exactly the configured effort, as recall-vs-effort measurements need."""
        if not self.built:
            raise RuntimeError("search() needs a built index: call build() or load() first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        k = int(k)
        q = self._prepare_queries(queries)
        n = len(q)
        out_ids = np.full((n, k), -1, dtype=np.int64)
        out_scores = np.full((n, k), -np.inf, dtype=np.float32)
        self.last_widened = 0
        self.last_effort = None
        if n == 0 or self.count == 0:
            return out_ids, out_scores
        sorted_ex = None
        fetch = min(k, self.count)
        if exclude is not None:
            indptr, ex_ids = _exclusion_rows(exclude, n)
            if len(ex_ids):
                sorted_ex = _padded_sorted(indptr, ex_ids)
                fetch = min(k + int(np.diff(indptr).max()), self.count)
        rows = np.arange(n)
        effort = 0
        value = self._effort_value(fetch, effort)
        effort_used = None if value is None else np.full(n, value, dtype=np.int64)
        with self._thread_scope():
            while True:
                pos, scores = self._search(q[rows], fetch, effort)
                found = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
                usable = found >= 0
                if sorted_ex is not None:
                    usable &= ~_is_excluded(sorted_ex[torch.from_numpy(rows)], found)
                if effort:  # a wider pass: merged with what these rows already hold
                    found, scores, usable = _merge_passes(
                        out_ids[rows], out_scores[rows], found, scores, usable, k, self.exact_scores
                    )
                # stable sort on `usable` keeps the best-first order of what survives
                order = np.argsort(~usable, axis=1, kind="stable")[:, :k]
                kept = np.take_along_axis(usable, order, axis=1)
                width = order.shape[1]
                out_ids[rows, :width] = np.where(kept, np.take_along_axis(found, order, axis=1), -1)
                out_scores[rows, :width] = np.where(kept, np.take_along_axis(scores, order, axis=1), -np.inf)
                short = kept.sum(axis=1) < k
                if not widen or not short.any() or (fetch >= self.count and self._exhaustive(fetch, effort)):
                    break
                # Exclusions or a small probe left a row short; search it wider.
                rows = rows[short]
                self.last_widened = self.last_widened or len(rows)
                fetch = min(2 * fetch, self.count)
                effort += 1
                if effort_used is not None:
                    effort_used[rows] = self._effort_value(fetch, effort)
        self.last_effort = effort_used
        return out_ids, out_scores

    # ---- persistence ----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "library": "recfunnel",
            "library_version": recfunnel.__version__,
            "backend": self.backend,
            "params": self.params.model_dump(mode="json"),
            "metric": "inner_product",
            "dim": self.dim,
            "index_dim": self.index_dim,
            "count": self.count,
            "normalize": self.normalize,
            "bias": self.bias,
            "mips_norm": self.mips_norm,
            "versions": self._versions(),
            "source": self.source,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index folder at `path` atomically (replacing an existing one); return the path.

        Inside a model artifact the place is ``<artifact>/index/<backend>/`` (:func:`index_dir`)."""
        if not self.built:
            raise RuntimeError("save() needs a built index")
        return save_index(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        mmap: bool = False,
        device: str | None = None,
    ) -> Index:
        """Load a saved index folder; meta.json and every checksum are checked before deserialising.

        Called on :class:`Index` itself it loads whatever backend the folder holds; on a backend class
        it refuses a folder of another backend. `mmap`: map the stored vectors / codes read-only
        from the file instead of copying them into this process (FAISS backends; several server
        processes then share one copy in the page cache); such an index refuses `add`. `device`:
        where a backend with a ``device`` parameter (exact, ivf, ivfpq) searches, instead of the saved
        setting (e.g. ``"cpu"`` for an index saved with ``"cuda"``)."""
        return load_index_folder(
            cls, path, any_backend=cls is Index, threads=threads, mmap=mmap, device=device
        )

    # ---- backend hooks ------------------------------------------------------------------------------
    @abstractmethod
    def _build(self, x: np.ndarray) -> None:
        """Create the structure from prepared vectors x [n, index_dim] (train if needed, then add)."""

    @abstractmethod
    def _add(self, x: np.ndarray) -> None: ...

    @abstractmethod
    def _search(self, q: np.ndarray, fetch: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions (-1: none) and scores [n, fetch], best first. `effort` > 0: a retry for rows
        that came back short; search wider than the configured parameters."""

    def _exhaustive(self, fetch: int, effort: int) -> bool:
        """Whether a search with this fetch and effort already saw every stored vector."""
        return True

    def _effort_value(self, fetch: int, effort: int) -> int | None:
        """The search-parameter value (IVF nprobe, HNSW ef) a pass with this fetch and effort runs
        at, as reported in `last_effort`; None for a backend without one."""
        return None

    def _apply_search_params(self) -> None:  # noqa: B027 (optional hook: exact search has none)
        """Push the current search parameters into the built structure."""

    @abstractmethod
    def _to_bytes(self) -> bytes: ...

    @abstractmethod
    def _from_bytes(self, blob: bytes) -> None: ...

    def _from_file(self, path: Path, mmap: bool) -> None:
        """Load the payload file (a backend that can map it read-only overrides this)."""
        self._from_bytes(path.read_bytes())

    @abstractmethod
    def _stored_shape(self) -> tuple[int, int]:
        """(index_dim, count) of the loaded structure, to check against meta.json."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Memory held by the search structure (vectors, graph, codes), ids mapping excluded."""

    def _versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    @contextmanager
    def _thread_scope(self) -> Iterator[None]:
        if self.threads is None:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _merge_passes(
    old_ids: np.ndarray,
    old_scores: np.ndarray,
    new_ids: np.ndarray,
    new_scores: np.ndarray,
    new_usable: np.ndarray,
    k: int,
    exact_scores: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates (ids, scores, usable) [r, k + f] of a widened pass merged with the rows' earlier
    results, best first among the usable; the caller keeps the first k usable ones.

    `old_*` [r, k]: the rows' results so far (-1 / -inf where empty; fewer than k each, or the row
    would not have been widened). `new_*` [r, f]: the wider pass, best first. An id in both counts
    once (the earlier entry). With exact scores the best k by score win: an earlier result that drops
    out has k better-scoring results ahead of it, so it is not among the true top k either and recall
    cannot fall. With approximate scores a better-looking code is no proof of a better item, so every
    earlier result stays and the wider pass only fills the empty places (its best first)."""
    old_usable = old_ids >= 0
    seen = torch.from_numpy(np.sort(np.where(old_usable, old_ids, _PAD), axis=1))
    new_usable = new_usable & ~_is_excluded(seen, new_ids)
    if not exact_scores:
        room = k - old_usable.sum(axis=1, keepdims=True)
        new_usable &= np.cumsum(new_usable, axis=1) <= room
    ids = np.concatenate([old_ids, new_ids], axis=1)
    scores = np.concatenate([old_scores, new_scores.astype(np.float32, copy=False)], axis=1)
    usable = np.concatenate([old_usable, new_usable], axis=1)
    order = np.argsort(np.where(usable, -scores.astype(np.float64), np.inf), axis=1, kind="stable")
    return (
        np.take_along_axis(ids, order, axis=1),
        np.take_along_axis(scores, order, axis=1),
        np.take_along_axis(usable, order, axis=1),
    )


def __getattr__(name: str) -> Any:
    # FaissIndex moved to recfunnel.index.faiss_base (which imports this module); still reachable here
    if name in ("FaissIndex", "_faiss"):
        from recfunnel.index import faiss_base

        return getattr(faiss_base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
