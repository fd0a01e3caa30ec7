"""The funnel: resolve -> retrieve (each source) -> merge with quotas -> rank -> filter -> order
(top-k, or MMR) for a batch of requests, every stage timed with ``time.perf_counter``.

    funnel = Funnel.for_dataset(
        [ANNRetriever(mf), ItemToItemRetriever.from_model(mf), PopularityRetriever(log, n_items)],
        quotas=[200, 50, 50], ranker=ScorerRanker.from_model(deepfm, dataset, split),
        dataset=dataset, split=split,
    )
    res = funnel.recommend(users=["196", None], recent_items=[[], ["242", "302"]], k=10)
    res.item_ids, res.scores, res.proposed_by(), res.timings_ms, res.unknown_items

A request is a known user, a list of recent items with no stored user, or nobody (then only
popularity answers); unknown ids are reported in the result, never fatal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import Dataset
from recfunnel.data.sequences import split_histories
from recfunnel.data.splits import Split
from recfunnel.data.vocab import Vocab
from recfunnel.funnel.candidates import Candidates
from recfunnel.funnel.filters import Filters, mmr
from recfunnel.funnel.merge import fetch_sizes, merge
from recfunnel.funnel.ranker import Ranker, RetrievalScoreRanker
from recfunnel.funnel.request import MAX_RECENT, Requests, resolve_requests
from recfunnel.funnel.retrievers import Retriever
from recfunnel.run.artifact import seen_matrix

__all__ = ["Funnel", "FunnelResult"]


@dataclass(frozen=True)
class FunnelResult:
    """The answer to B requests, best first.

    Attributes:
        items: int64 [B, k] item indices, -1 where fewer than k items survived.
        scores: float32 [B, k] final scores (the ranker's), -inf in empty places.
        stage_scores: {"retrieval": [B, k] the claiming source's score, "rank": [B, k]}.
        sources: the S source names.
        source_scores: float32 [B, k, S] each source's score, NaN where it did not propose the item.
        timings_ms: milliseconds per stage ("resolve", "retrieve.<source>", "merge", "rank",
            "filter", "order") and "total"; a source's own parts as "retrieve.<source>.<part>"
            (an ANN retriever: "user_vector" and "search").
        unknown_users: per request, the user id that was not known (served anonymously), or None.
        unknown_items: per request, the item ids (history or exclusions) that were not known.
        item_ids: per request, the raw ids of `items` (when the funnel has an item vocabulary).
    """

    items: np.ndarray
    scores: np.ndarray
    stage_scores: dict[str, np.ndarray]
    sources: tuple[str, ...]
    source_scores: np.ndarray
    timings_ms: dict[str, float]
    unknown_users: tuple[str | None, ...]
    unknown_items: tuple[tuple[str, ...], ...]
    item_ids: list[list[str]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def counts(self) -> np.ndarray:
        """int64 [B]: items returned per request."""
        return (self.items >= 0).sum(axis=1)

    def proposed_by(self) -> list[list[list[str]]]:
        """Per request, per returned item, the names of the sources that proposed it."""
        prop = ~np.isnan(self.source_scores)
        return [
            [
                [self.sources[s] for s in np.flatnonzero(prop[b, j])]
                for j in np.flatnonzero(self.items[b] >= 0)
            ]
            for b in range(len(self))
        ]


class Funnel:
    """Retrievers, their quotas, a ranker and filters, answering batches of requests.

    Args:
        retrievers: the sources, in merge priority order (distinct names).
        quotas: candidates each source may add per request (after de-duplication).
        ranker: the ranking stage; None: :class:`RetrievalScoreRanker` (reciprocal rank fusion).
        filters: the filter stage; None: :class:`Filters` defaults (seen items dropped).
        n_users, n_items: vocabulary sizes (taken from the vocabularies when given).
        user_vocab, item_vocab: raw ids <-> indices; without them requests use indices.
        seen: CSR [n_users, n_items] each stored user's seen items.
        histories: (indptr, items) each stored user's items, oldest first (recent-item tails).
        item_vectors: [n_items, d] for MMR.
        mmr_lambda: default MMR lambda (None: plain top-k by score).
        max_recent: recent items kept per request.
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        quotas: Sequence[int],
        ranker: Ranker | None = None,
        filters: Filters | None = None,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
        user_vocab: Vocab | None = None,
        item_vocab: Vocab | None = None,
        seen: sp.csr_matrix | None = None,
        histories: tuple[Any, Any] | None = None,
        item_vectors: Any = None,
        mmr_lambda: float | None = None,
        max_recent: int = MAX_RECENT,
    ) -> None:
        if not retrievers:
            raise ValueError("a funnel needs at least one retriever")
        names = [r.name for r in retrievers]
        if len(set(names)) != len(names):
            raise ValueError(f"retriever names must be distinct (they label sources), got {names}")
        self.fetch = fetch_sizes(quotas)  # also checks one int quota >= 0 per source
        if len(quotas) != len(retrievers):
            raise ValueError(f"one quota per retriever: {len(retrievers)} retrievers, {len(quotas)} quotas")
        self.retrievers, self.quotas = list(retrievers), [int(q) for q in quotas]
        self.ranker = ranker if ranker is not None else RetrievalScoreRanker()
        self.filters = filters if filters is not None else Filters()
        self.n_users = len(user_vocab) if user_vocab is not None else n_users
        self.n_items = len(item_vocab) if item_vocab is not None else n_items
        if self.n_users is None or self.n_items is None:
            raise ValueError("give n_users and n_items, or the user and item vocabularies")
        self.user_vocab, self.item_vocab = user_vocab, item_vocab
        self.seen = None if seen is None else sp.csr_matrix(seen)
        self.histories = None if histories is None else tuple(np.asarray(h, np.int64) for h in histories)
        self.item_vectors, self.mmr_lambda, self.max_recent = item_vectors, mmr_lambda, max_recent
        self.bundle_id: str | None = None  # set by Funnel.load: which bundle answers
        self.ranker_precision = "fp32"  # set by Funnel.load: the ranker MLPs' precision

    @classmethod
    def load(
        cls, path: Any, *, threads: int | None = None, mmap: bool = False, ranker_precision: str = "fp32"
    ) -> Funnel:
        """The funnel of the bundle at `path` (``recfunnel build-funnel``), checked whole first:
        checksums, format version, indexes against their models (:mod:`recfunnel.funnel.bundle`).
        `mmap`: map the indexes' vectors read-only from the bundle's files. `ranker_precision`:
        "fp32", "bf16" or "auto" (see :func:`~recfunnel.funnel.bundle.load_bundle`)."""
        from recfunnel.funnel.bundle import load_bundle

        return load_bundle(path, threads=threads, mmap=mmap, ranker_precision=ranker_precision).funnel

    @classmethod
    def for_dataset(
        cls,
        retrievers: Sequence[Retriever],
        quotas: Sequence[int],
        ranker: Ranker | None = None,
        filters: Filters | None = None,
        *,
        dataset: Dataset,
        split: Split | None = None,
        **kwargs: Any,
    ) -> Funnel:
        """A funnel over `dataset`'s vocabularies (raw ids in and out); with `split`, a known user's
        seen items and history are its train + valid interactions."""
        if split is not None:
            kwargs.setdefault("seen", seen_matrix(dataset, split))
            kwargs.setdefault("histories", split_histories(dataset, split, ("train", "valid")))
        return cls(
            retrievers, quotas, ranker, filters, user_vocab=dataset.users, item_vocab=dataset.items, **kwargs
        )

    def resolve(
        self,
        users: Sequence[Any] | None = None,
        recent_items: Sequence[Sequence[Any] | None] | None = None,
        exclude: Sequence[Sequence[Any] | None] | None = None,
        timestamp: int | None = None,
    ) -> Requests:
        """The :class:`Requests` of a call (see :func:`recfunnel.funnel.request.resolve_requests`)."""
        return resolve_requests(
            users,
            recent_items,
            exclude,
            n_users=self.n_users,
            n_items=self.n_items,
            user_vocab=self.user_vocab,
            item_vocab=self.item_vocab,
            seen=self.seen,
            histories=self.histories,
            max_recent=self.max_recent,
            timestamp=timestamp,
        )

    def candidates(self, requests: Requests, timings: dict[str, float] | None = None) -> Candidates:
        """Every source's answer, merged with the quotas."""
        timings = {} if timings is None else timings
        answers = []
        for retriever, fetch in zip(self.retrievers, self.fetch, strict=True):
            t0 = time.perf_counter()
            answers.append(retriever.retrieve(requests, max(fetch, 1)))
            timings[f"retrieve.{retriever.name}"] = _ms(t0)
            for part, ms in answers[-1].timings_ms.items():  # e.g. retrieve.ann.user_vector
                timings[f"retrieve.{retriever.name}.{part}"] = ms
        t0 = time.perf_counter()
        merged = merge(answers, self.quotas)
        timings["merge"] = _ms(t0)
        return merged

    def recommend(
        self,
        users: Sequence[Any] | None = None,
        recent_items: Sequence[Sequence[Any] | None] | None = None,
        k: int = 10,
        exclude: Sequence[Sequence[Any] | None] | None = None,
        *,
        timestamp: int | None = None,
        mmr_lambda: float | None = None,
        filters: Filters | None = None,
    ) -> FunnelResult:
        """Top-`k` items for each request.

        Args:
            users: one per request: a user id, or None (anonymous); None: all anonymous.
            recent_items: one list of item ids per request, oldest first (events newer than the
                stored log, or an anonymous visitor's history).
            k: items per request.
            exclude: one list of item ids per request never to return.
            timestamp: the request time (unix seconds) for time-aware stages.
            mmr_lambda: diversify by MMR with this lambda (default: the funnel's).
            filters: this call's filter stage instead of the funnel's (e.g. a request's
                availability set).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if sum(self.quotas) < k:
            raise ValueError(f"the quotas {self.quotas} hold {sum(self.quotas)} candidates, fewer than k={k}")
        lam = self.mmr_lambda if mmr_lambda is None else mmr_lambda
        if lam is not None and self.item_vectors is None:
            raise ValueError("MMR needs item vectors: build the funnel with item_vectors=")
        start = time.perf_counter()
        timings: dict[str, float] = {}
        requests = self.resolve(users, recent_items, exclude, timestamp)
        timings["resolve"] = _ms(start)
        cand = self.candidates(requests, timings)

        t0 = time.perf_counter()
        rank = np.asarray(self.ranker.rank(requests, cand), np.float32)
        timings["rank"] = _ms(t0)

        t0 = time.perf_counter()
        keep = (self.filters if filters is None else filters).keep(requests, cand.items, rank)
        final = np.where(keep, rank, -np.inf).astype(np.float32)
        timings["filter"] = _ms(t0)

        t0 = time.perf_counter()
        if lam is None:
            order = np.argsort(-final, axis=1, kind="stable")[:, :k]
            order = np.where(np.take_along_axis(keep, order, 1), order, -1)
        else:
            order = mmr(np.where(keep, cand.items, -1), final, self.item_vectors, k, lam)
        if order.shape[1] < k:
            order = np.pad(order, ((0, 0), (0, k - order.shape[1])), constant_values=-1)
        top = cand.take_slots(order)
        empty = order < 0
        scores = np.full(order.shape, -np.inf, np.float32)
        if final.shape[1]:
            scores = np.where(empty, scores, np.take_along_axis(final, np.maximum(order, 0), 1))
        timings["order"] = _ms(t0)
        timings["total"] = _ms(start)
        ids = None
        if self.item_vocab is not None:
            names = self.item_vocab.ids
            ids = [[names[i] for i in row if i >= 0] for row in top.items.tolist()]
        return FunnelResult(
            items=top.items,
            scores=scores.astype(np.float32),
            stage_scores={"retrieval": top.scores, "rank": scores.astype(np.float32)},
            sources=top.sources,
            source_scores=top.source_scores,
            timings_ms=timings,
            unknown_users=requests.unknown_users,
            unknown_items=requests.unknown_items,
            item_ids=ids,
        )


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
