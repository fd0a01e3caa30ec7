"""The HTTP service over a funnel bundle (FastAPI).

    app = create_app(ServiceSettings(bundle="bundles/ml100k", events="sqlite:///var/events.db"))

Routes: ``GET /health`` (the process answers), ``GET /ready`` (a bundle is loaded and warmed),
``GET /metrics`` (Prometheus), ``POST /recommend``, ``POST /similar-items``, ``POST /events``,
``POST /admin/reload`` (needs the key in ``X-API-Key``), OpenAPI at ``/docs``.

Freshness: ``POST /events`` appends to the event store durably before it answers; the next
``/recommend`` for that user reads the user's newest events from the store and sends them to the
funnel as the request's recent items, so the two-tower's user vector, the ranker's history field
and the seen-item filter all see them, with no reload.

Reload: the bundle in use is one reference. A reload loads and checks the new bundle completely and
answers one request with it (warm-up) before the reference is swapped; a request reads the
reference once at its start, so requests in flight finish on the bundle they started with and none
sees a half-loaded one. One reload runs at a time; a failed one leaves the served bundle as it was.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from recfunnel.funnel.bundle import Bundle, load_bundle
from recfunnel.funnel.filters import Filters
from recfunnel.funnel.retrievers import ItemToItemRetriever
from recfunnel.serve.batching import Batcher
from recfunnel.serve.events import Event, EventStore, open_event_store
from recfunnel.serve.limits import validation_details, validation_message
from recfunnel.serve.metrics import ServiceMetrics
from recfunnel.serve.schemas import (
    EventsRequest,
    EventsResponse,
    Limits,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    ScoredItem,
    SimilarRequest,
)

__all__ = ["ADMIN_KEY_ENV", "ServiceSettings", "ServiceState", "create_app"]

ADMIN_KEY_ENV = "RECFUNNEL_ADMIN_KEY"
log = logging.getLogger("recfunnel.serve")


@dataclass(frozen=True)
class ServiceSettings:
    """What one service process serves.

    Args:
        bundle: the funnel bundle folder (``recfunnel build-funnel``).
        events: event store URL (``sqlite:///path.db``, ``redis://host:port/0``); None: no store
            (``POST /events`` answers 503).
        limits: bounds of a request.
        fresh_events: newest stored events read per user and request.
        admin_key: the admin key; None: read ``$RECFUNNEL_ADMIN_KEY`` (unset: admin routes refused).
        ranker_precision: the ranker's MLP layers in "fp32", "bf16" or "auto" (bf16 on CPUs with
            AMX; :func:`~recfunnel.funnel.bundle.load_bundle`).
        max_batch: most /recommend requests answered by one funnel call when several wait at
            once (:mod:`recfunnel.serve.batching`); 1 answers each alone.
    """

    bundle: Path
    events: str | None = None
    limits: Limits = Limits()
    fresh_events: int = 50
    admin_key: str | None = None
    ranker_precision: str = "auto"
    max_batch: int = 16


class ServiceState:
    """The served bundle (one reference, swapped whole), the event store and the metrics."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.events: EventStore | None = (
            open_event_store(settings.events) if settings.events is not None else None
        )
        self._reload = threading.Lock()
        self.bundle: Bundle = self._load(Path(settings.bundle))

    def _load(self, path: Path) -> Bundle:
        """Load, check and warm a bundle (one anonymous request and one stored user's). Index
        vectors are memory-mapped read-only from the bundle's files: the server processes share
        one copy in the page cache."""
        bundle = load_bundle(
            path, mmap=True, ranker_precision=self.settings.ranker_precision, index_device="cpu"
        )
        funnel = bundle.funnel
        funnel.recommend(users=[None], k=1)
        if funnel.n_users:
            funnel.recommend(users=[funnel.user_vocab.ids[0]] if funnel.user_vocab else [0], k=1)
        return bundle

    def reload(self, path: Path | None = None) -> tuple[Bundle, Bundle]:
        """Swap in the bundle at `path` (default: the served one's folder, rebuilt in place);
        -> (old, new). Raises (and keeps serving the old one) if the new one does not load."""
        with self._reload:
            old = self.bundle
            new = self._load(Path(path) if path is not None else old.path)
            self.bundle = new  # one reference assignment: atomic for every reader
            return old, new


def _admin(request: Request, x_api_key: str | None = Header(None)) -> None:
    state: ServiceState = request.app.state.service
    key = state.settings.admin_key or os.environ.get(ADMIN_KEY_ENV)
    if not key:
        raise HTTPException(403, f"admin routes are disabled: start the service with ${ADMIN_KEY_ENV} set")
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), key.encode()):
        raise HTTPException(401, "admin routes need the admin key in the X-API-Key header")


def _ids(bundle: Bundle, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """(indices of the known ids, the unknown ids)."""
    vocab = bundle.dataset.items
    idx = vocab.encode(list(ids), unknown="mark")
    return idx[idx >= 0], [i for i, x in zip(ids, idx, strict=True) if x < 0]


def _check_k(state: ServiceState, k: int) -> None:
    limit = state.settings.limits.max_k
    if k > limit:
        raise HTTPException(422, f"k={k} is above this service's limit of {limit}")


@dataclass(frozen=True)
class _Prepared:
    """A validated /recommend request with what it reads from the event store, bound to one bundle."""

    req: RecommendRequest
    bundle: Bundle
    fresh: list[Event]
    recent: list[str]
    filters: Filters | None
    unknown_available: list[str]
    timestamp: int

    def key(self) -> Hashable:
        """Requests with equal keys are answered by one funnel call (same bundle, k, time, options);
        a request with filters or diversity is answered alone."""
        if self.filters is not None or self.req.diversity is not None:
            return object()
        return (id(self.bundle), self.req.k, self.timestamp)


def _prepare(state: ServiceState, req: RecommendRequest) -> _Prepared:
    bundle = state.bundle  # read once: this request answers from this bundle to the end
    funnel = bundle.funnel
    _check_k(state, req.k)
    if req.diversity is not None and funnel.item_vectors is None:
        raise HTTPException(
            422, "diversity needs a bundle built with filters.mmr_model (item vectors for MMR)"
        )
    fresh: list[Event] = []
    if req.user_id is not None and state.events is not None:
        fresh = state.events.recent([req.user_id], state.settings.fresh_events)[0]
    recent = [e.item for e in fresh] + list(req.recent_items)
    filters = None
    unknown_available: list[str] = []
    if req.filters is not None:
        available = None
        if req.filters.available is not None:
            available, unknown_available = _ids(bundle, req.filters.available)
        filters = Filters(
            exclude_seen=req.filters.exclude_seen, available=available, rules=funnel.filters.rules
        )
    timestamp = req.timestamp if req.timestamp is not None else int(time.time())
    return _Prepared(req, bundle, fresh, recent, filters, unknown_available, timestamp)


def _answer(state: ServiceState, batch: Sequence[_Prepared]) -> list[RecommendResponse]:
    """One funnel call for requests of one key (see :meth:`_Prepared.key`)."""
    p0 = batch[0]
    res = p0.bundle.funnel.recommend(
        users=[p.req.user_id for p in batch],
        recent_items=[p.recent for p in batch],
        exclude=[p.req.exclude for p in batch],
        k=p0.req.k,
        timestamp=p0.timestamp,
        mmr_lambda=p0.req.diversity,
        filters=p0.filters,
    )
    state.metrics.stages(res.timings_ms, requests=len(batch))
    proposed = res.proposed_by()
    out = []
    for row, p in enumerate(batch):
        items = []
        for j, (item, score) in enumerate(zip(res.item_ids[row], res.scores[row].tolist(), strict=False)):
            extra = None
            if p.req.explain:
                vals = res.source_scores[row, j].tolist()
                extra = {s: float(v) for s, v in zip(res.sources, vals, strict=True) if v == v}
            items.append(
                ScoredItem(item=item, score=float(score), sources=proposed[row][j], source_scores=extra)
            )
        out.append(
            RecommendResponse(
                bundle_id=p.bundle.id,
                user_id=p.req.user_id,
                known_user=p.req.user_id is not None and res.unknown_users[row] is None,
                items=items,
                fresh_events=len(p.fresh),
                unknown_items=list(dict.fromkeys([*res.unknown_items[row], *p.unknown_available])),
                timings_ms={**res.timings_ms, "batch": float(len(batch))} if p.req.explain else None,
            )
        )
    return out


def create_app(settings: ServiceSettings) -> FastAPI:
    """The FastAPI application serving `settings.bundle` (loaded, checked and warmed here)."""
    state = ServiceState(settings)
    app = FastAPI(
        title="recfunnel",
        description="Recommendations from a funnel bundle: retrieve -> rank -> filter.",
        max_body_size=settings.limits.max_body_bytes,
    )
    app.state.service = state
    state.metrics.instrument(app)
    batcher: Batcher[_Prepared, RecommendResponse] | None = None
    if settings.max_batch > 1:
        batcher = Batcher(lambda jobs: _answer(state, jobs), max_batch=settings.max_batch)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc), "detail": validation_details(exc)}, 422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the service log"}, 500)

    @app.get("/health")
    def health() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict:
        """A bundle is loaded and warmed (the service answers only once one is)."""
        funnel = state.bundle.funnel
        return {
            "status": "ready",
            "bundle_id": state.bundle.id,
            "items": funnel.n_items,
            "ranker_precision": funnel.ranker_precision,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        body, content_type = state.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    # The two CPU-bound routes run on the event loop itself (async def, no await): a process
    # answers them one at a time, in arrival order, at the speed of one request, rather than tens
    # of thread-pool threads sharing its core, each as slow as all of them together. (An A/B on a
    # shared machine was too noisy to settle the difference; see issue 13's note.) /events (a
    # durable write that waits for fsync) and /admin/reload stay in the thread pool.
    @app.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
    async def recommend(req: RecommendRequest) -> RecommendResponse:
        """Top-k items for a user id (stored and fresh events), a list of recent items, or nobody."""
        prepared = _prepare(state, req)
        if batcher is None:
            return _answer(state, [prepared])[0]
        return await batcher.submit(prepared.key(), prepared)

    @app.post("/similar-items", response_model=RecommendResponse, response_model_exclude_none=True)
    async def similar(req: SimilarRequest) -> RecommendResponse:
        """Items closest to one item (the bundle's item-to-item retriever)."""
        bundle = state.bundle
        funnel = bundle.funnel
        _check_k(state, req.k)
        i2i = next((r for r in funnel.retrievers if isinstance(r, ItemToItemRetriever)), None)
        if i2i is None:
            raise HTTPException(
                404, "this bundle has no item-to-item retriever ([[retrievers]] kind = item2item)"
            )
        requests = funnel.resolve(users=[None], recent_items=[[req.item_id]], exclude=[req.exclude])
        if requests.unknown_items[0] and req.item_id in requests.unknown_items[0]:
            raise HTTPException(404, f"unknown item {req.item_id!r}")
        cand = i2i.retrieve(requests, req.k)
        names = bundle.dataset.items.ids
        items = [
            ScoredItem(item=names[i], score=float(s), sources=[i2i.name])
            for i, s in zip(cand.items[0].tolist(), cand.scores[0].tolist(), strict=True)
            if i >= 0
        ]
        unknown = [x for x in requests.unknown_items[0] if x != req.item_id]
        return RecommendResponse(
            bundle_id=bundle.id,
            user_id=None,
            known_user=False,
            items=items,
            fresh_events=0,
            unknown_items=unknown,
        )

    @app.post("/events", response_model=EventsResponse)
    def events(req: EventsRequest) -> EventsResponse:
        """Append events durably (acknowledged = stored); the user's next recommendation uses them."""
        if state.events is None:
            raise HTTPException(503, "this service runs without an event store (start it with --events URL)")
        now = int(time.time())
        batch = [
            Event(e.user, e.item, e.timestamp if e.timestamp is not None else now, e.weight)
            for e in req.events
        ]
        stored = state.events.append(batch)
        _, unknown = _ids(state.bundle, [e.item for e in batch])
        return EventsResponse(stored=stored, unknown_items=list(dict.fromkeys(unknown)))

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=[Depends(_admin)])
    def reload(req: ReloadRequest | None = None) -> ReloadResponse:
        """Swap in a new bundle atomically (requests in flight finish on the old one)."""
        t0 = time.perf_counter()
        try:
            old, new = state.reload(Path(req.bundle) if req and req.bundle else None)
        except Exception as exc:  # the old bundle keeps serving
            raise HTTPException(409, f"reload refused, still serving the previous bundle: {exc}") from None
        state.metrics.reloaded(new.id)
        return ReloadResponse(bundle_id=new.id, previous_bundle_id=old.id, seconds=time.perf_counter() - t0)

    state.metrics.reloaded(state.bundle.id)
    return app
