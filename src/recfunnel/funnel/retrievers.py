"""Retrievers: the funnel's first stage, each proposing up to k candidates for a batch of requests.

* :class:`ANNRetriever` - a user vector at request time from a Factorised model, then a
  nearest-neighbour search (:mod:`recfunnel.index`);
* :class:`ItemToItemRetriever` - items close to the request's recent items (summed cosine);
* :class:`PopularityRetriever` - the most interacted-with items, over the whole log or its last
  ``window_seconds`` (fresh trends); the one source that answers an anonymous request with no
  history.

Every retriever skips the items a request blocks (its exclusions, and its seen items unless built
with ``exclude_seen=False``), so no quota slot is spent on an item the filters would drop. A request
a retriever cannot answer (ANN: nobody and no history) gets an all-empty row, never an error.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from recfunnel.data.dataset import Interactions
from recfunnel.funnel.candidates import Candidates, top_k_excluding
from recfunnel.funnel.request import Requests, ragged_tail
from recfunnel.index import Index, IndexFileError, build_index, check_index_matches, index_from_model
from recfunnel.models.base import Factorised, HistoryAware, RecentEncoder

__all__ = ["ANNRetriever", "ItemToItemRetriever", "PopularityRetriever", "Retriever", "top_stable"]


@runtime_checkable
class Retriever(Protocol):
    name: str

    def retrieve(self, requests: Requests, k: int) -> Candidates:
        """Up to `k` candidates per request, best first: :class:`Candidates` [B, k], one source."""
        ...


def _scatter(name: str, b: int, k: int, rows: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> Candidates:
    """[len(rows), k] answers of some requests placed into a [B, k] answer (others empty)."""
    items = np.full((b, k), -1, np.int64)
    out = np.full((b, k), -np.inf, np.float32)
    items[rows], out[rows] = ids, scores
    return Candidates.single(name, items, out)


def _mean_item_vectors(vectors: torch.Tensor, indptr: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[B, d]: mean vector of each ragged row of items (zeros for an empty row)."""
    lengths = indptr.diff()
    row = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    out = torch.zeros(len(lengths), vectors.shape[1], dtype=vectors.dtype)
    out.index_add_(0, row, vectors[items])
    return out / lengths.clamp(min=1).unsqueeze(1).to(out.dtype)


class ANNRetriever:
    """Nearest items to a user vector built at request time, from a Factorised model's index.

    The user vector: a sequence-aware model (``HistoryAware``: SASRec, GRU4Rec, Item2Vec) encodes the
    request's recent items (the stored history tail plus the request's own events); a
    ``RecentEncoder`` (the two-tower) puts them in its history field when the request sent events
    of its own or names no stored user (else the stored user vector is used as it is); otherwise a
    known user gets ``model.user_vectors`` and an anonymous request with recent items the mean of
    their item vectors (fold-in by averaging). Anonymous requests without history get nothing.

    Args:
        model: a Factorised model (user_vectors / item_vectors).
        index: an index built from this model (:func:`recfunnel.index.index_from_model`), checked
            against its item vectors; None builds one of `backend`.
        backend: index backend when `index` is None ("exact", "hnsw", ...).
        exclude_seen: skip the requests' seen items (their exclusions are always skipped).
        name: the source name candidates record.
        **index_params: the backend's parameters when it is built here.
    """

    def __init__(
        self,
        model: Any,
        index: Index | None = None,
        *,
        backend: str = "exact",
        exclude_seen: bool = True,
        name: str = "ann",
        **index_params: Any,
    ) -> None:
        if not isinstance(model, Factorised):
            raise TypeError(
                f"ANNRetriever needs a Factorised model (user_vectors / item_vectors); "
                f"{getattr(model, 'family', type(model).__name__)!r} has none"
            )
        if index is None:
            index = index_from_model(model, backend, **index_params)
        else:
            check_index_matches(index, model)
        self.model, self.index, self.exclude_seen, self.name = model, index, exclude_seen, name
        self._item_vectors: torch.Tensor | None = None

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """The model's item vectors, computed once (a two-tower runs its item tower over the whole
        catalogue for them): the retriever serves a trained, frozen model."""
        if self._item_vectors is None:
            self._item_vectors = self.model.item_vectors()
        return self._item_vectors

    @torch.no_grad()
    def query_vectors(self, requests: Requests) -> tuple[np.ndarray, np.ndarray]:
        """(rows [R], user vectors [R, d]) of the requests this retriever can answer."""
        has_recent = requests.recent_lengths > 0
        model = self.model
        if isinstance(model, HistoryAware):  # the sequence encodes the recent items
            by_history = has_recent
        elif isinstance(model, RecentEncoder):  # the stored history unless the request adds to it
            by_history = has_recent & (~requests.known | (requests.fresh_lengths > 0))
        else:
            by_history = np.zeros(len(requests), bool)
        by_user = requests.known & ~by_history
        by_mean = ~requests.known & has_recent & ~by_history
        rows = np.flatnonzero(by_history | by_user | by_mean)
        out = torch.zeros(len(rows), self.item_vectors().shape[1])

        def from_history(r: np.ndarray) -> torch.Tensor:
            if isinstance(model, HistoryAware):
                return model.encode_items(*requests.recent(r))
            return model.user_vectors_from_recent(torch.from_numpy(requests.users[r]), *requests.recent(r))

        for mask, encode in (
            (by_history, from_history),
            (by_user, lambda r: model.user_vectors(torch.from_numpy(requests.users[r]))),
            (by_mean, lambda r: _mean_item_vectors(self.item_vectors(), *requests.recent(r))),
        ):
            sel = np.flatnonzero(mask)
            if len(sel):
                out[torch.from_numpy(np.searchsorted(rows, sel))] = encode(sel).float()
        return rows, out.numpy()

    def retrieve(self, requests: Requests, k: int) -> Candidates:
        """Top-`k` items per request; ``timings_ms`` splits the time into "user_vector" (computing
        the query vectors) and "search" (the index, exclusions included)."""
        t0 = time.perf_counter()
        rows, queries = self.query_vectors(requests)
        t1 = time.perf_counter()
        if not len(rows):
            return Candidates.empty(self.name, len(requests), k)
        blocked = requests.blocked(self.exclude_seen)[rows]
        ids, scores = self.index.search(queries, k, exclude=blocked)
        out = _scatter(self.name, len(requests), k, rows, ids, scores)
        out.timings_ms.update(user_vector=(t1 - t0) * 1000.0, search=(time.perf_counter() - t1) * 1000.0)
        return out


class ItemToItemRetriever:
    """Items most similar to a request's recent items: score(j) = sum over the last `recent`
    items i of cos(v_i, v_j) (Sarwar et al. 2001's item-based neighbourhood, over learned vectors).

    The sum of cosines is one inner product, <sum_i v_i / |v_i|, v_j / |v_j|>, so one index search
    over the normalised item vectors answers it exactly (no per-item lists to merge).

    Args:
        item_vectors: [n_items, d] item vectors (e.g. ``model.item_vectors()``).
        recent: how many of the newest recent items count.
        index: an index this class built before over the same vectors (a loaded bundle's), checked
            against them; None builds one.
        backend, **index_params: the index over the normalised vectors, when it is built here.
        exclude_seen: skip the requests' seen items (their own recent items included).
        name: the source name candidates record.
    """

    def __init__(
        self,
        item_vectors: Any,
        *,
        recent: int = 20,
        index: Index | None = None,
        backend: str = "exact",
        exclude_seen: bool = True,
        name: str = "item2item",
        **index_params: Any,
    ) -> None:
        v = torch.as_tensor(item_vectors).detach().float().cpu()
        if v.ndim != 2:
            raise ValueError(f"item_vectors must be [n_items, d], got shape {tuple(v.shape)}")
        if recent < 1:
            raise ValueError(f"recent must be >= 1, got {recent}")
        self.vectors = torch.nn.functional.normalize(v, dim=1)
        source = {
            "scoring": "item2item",
            "n_items": len(v),
            "vectors_sha256": hashlib.sha256(self.vectors.numpy().tobytes()).hexdigest(),
        }
        if index is None:
            index = build_index(backend, self.vectors.numpy(), normalize=False, **index_params)
            index.source = source
        elif index.source != source:
            raise IndexFileError(
                f"the {index.backend!r} index was not built over these item vectors "
                f"(it records {index.source or 'no source'}); rebuild it"
            )
        self.index = index
        self.recent, self.exclude_seen, self.name = recent, exclude_seen, name

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> ItemToItemRetriever:
        """Over a Factorised model's item vectors."""
        if not isinstance(model, Factorised):
            raise TypeError(f"{type(model).__name__} has no item vectors (not Factorised)")
        return cls(model.item_vectors(), **kwargs)

    def retrieve(self, requests: Requests, k: int) -> Candidates:
        indptr, items = ragged_tail(requests.recent_indptr, requests.recent_items, self.recent)
        rows = np.flatnonzero(np.diff(indptr) > 0)
        if not len(rows):
            return Candidates.empty(self.name, len(requests), k)
        lengths = torch.from_numpy(np.diff(indptr))
        owner = torch.repeat_interleave(torch.arange(len(requests)), lengths)
        queries = torch.zeros(len(requests), self.vectors.shape[1])
        queries.index_add_(0, owner, self.vectors[torch.from_numpy(items)])
        blocked = requests.blocked(self.exclude_seen)[rows]
        ids, scores = self.index.search(queries[rows].numpy(), k, exclude=blocked)
        return _scatter(self.name, len(requests), k, rows, ids, scores)


def top_stable(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` largest values, largest first, ties by lower index: the first `n` of a
    stable descending argsort, in O(len + n log n) rather than a full sort."""
    n = min(n, len(values))
    if n <= 0:
        return np.zeros(0, np.int64)
    if n == len(values):
        return np.argsort(-values, kind="stable")
    kth = np.partition(values, len(values) - n)[len(values) - n]  # the n-th largest value
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)[: n - len(above)]
    chosen = np.sort(np.concatenate([above, tied]))  # index order, so the stable sort keeps it on ties
    return chosen[np.argsort(-values[chosen], kind="stable")]


class PopularityRetriever:
    """The most interacted-with items of the log (score: the count), the same list for everyone
    minus each request's blocked items.

    With `window_seconds`, counts cover only the events in [now - window_seconds, now), now being
    the request's timestamp (else one second after the log's last event): what is popular lately,
    not over all time. The counts of the last `now` asked are cached.

    Args:
        log: the interactions counted (e.g. the train and valid parts).
        n_items: catalogue size.
        window_seconds: the recent window, or None for all-time counts.
        exclude_seen: skip the requests' seen items.
        name: the source name (default "popular", or "trending" with a window).
    """

    def __init__(
        self,
        log: Interactions,
        n_items: int,
        *,
        window_seconds: float | None = None,
        exclude_seen: bool = True,
        name: str | None = None,
    ) -> None:
        if window_seconds is not None:
            if window_seconds <= 0:
                raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
            if log.timestamp is None:
                raise ValueError("a popularity window needs timestamps; this log has none")
        self.n_items, self.window, self.exclude_seen = n_items, window_seconds, exclude_seen
        self.name = name or ("popular" if window_seconds is None else "trending")
        # (now, counts, the best items by count, best first) of the last `now` asked
        self._top = np.zeros(0, np.int64)
        if window_seconds is None:
            self._times = None
            self._items = None
            self._cached = (None, self._count(np.asarray(log.item)))
        else:
            order = np.argsort(log.timestamp, kind="stable")
            self._times = np.asarray(log.timestamp)[order]
            self._items = np.asarray(log.item)[order]
            self._cached = (None, None)

    def _count(self, items: np.ndarray) -> np.ndarray:
        return np.bincount(items, minlength=self.n_items).astype(np.float32)

    def counts(self, now: int | None = None) -> np.ndarray:
        """float32 [n_items]: each item's count (over the window ending at `now`, if windowed)."""
        if self._times is None:
            return self._cached[1]
        if now is None:
            now = int(self._times[-1]) + 1 if len(self._times) else 0
        if self._cached[0] != now:
            lo, hi = np.searchsorted(self._times, [now - self.window, now], side="left")
            self._cached = (now, self._count(self._items[lo:hi]))
            self._top = np.zeros(0, np.int64)
        return self._cached[1]

    def top(self, n: int, now: int | None = None) -> np.ndarray:
        """The `n` items of highest count (ties: lower index first), best first; the longest
        prefix asked so far is kept with the counts, so a static catalogue sorts once."""
        counts = self.counts(now)
        n = min(n, self.n_items)
        if len(self._top) < n:
            self._top = top_stable(counts, max(n, min(2 * len(self._top), self.n_items)))
        return self._top[:n]

    def retrieve(self, requests: Requests, k: int) -> Candidates:
        counts = self.counts(requests.timestamp)
        blocked = requests.blocked(self.exclude_seen)
        widest = int(np.diff(blocked.indptr).max()) if len(requests) else 0
        fetch = min(self.n_items, k + widest)
        top = self.top(fetch, requests.timestamp)
        ranked = np.broadcast_to(top, (len(requests), fetch))
        ids, scores = top_k_excluding(ranked, np.broadcast_to(counts[top], ranked.shape), blocked, k)
        return Candidates.single(self.name, ids, scores)
