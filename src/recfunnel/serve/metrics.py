"""Prometheus metrics of the service (prometheus-client): requests and errors per route and
status, request latency per route, time per funnel stage, and which bundle is served.

Each app has its own registry (several apps in one process, as in the tests, do not collide).
With several server processes, set ``PROMETHEUS_MULTIPROC_DIR`` (``recfunnel serve --workers N``
does): every process writes its values there and ``/metrics`` on any of them reports the sum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["ServiceMetrics"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "recfunnel_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "recfunnel_request_seconds", "request latency by route", ["route"], buckets=_LATENCY, registry=r
        )
        self.stage = Histogram(
            "recfunnel_stage_seconds", "time per funnel stage", ["stage"], buckets=_LATENCY, registry=r
        )
        self.batch = Histogram(
            "recfunnel_recommend_batch_size", "/recommend requests answered by one funnel call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r,
        )  # fmt: skip
        self.bundle = Gauge(
            "recfunnel_bundle_loaded_timestamp_seconds", "when each bundle id was loaded", ["bundle_id"],
            registry=r, multiprocess_mode="max",
        )  # fmt: skip

    def instrument(self, app: Any) -> None:
        """Count and time every request (route template as the label, so ids do not explode it).

        A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every response in a
        stream and a task group, which cost a tenth of the service's CPU under load."""
        app.add_middleware(_Timed, metrics=self)

    def observe(self, scope: dict, status: int, seconds: float) -> None:
        name = getattr(scope.get("route"), "path", "unmatched")
        self.requests.labels(name, str(status)).inc()
        self.latency.labels(name).observe(seconds)

    def stages(self, timings_ms: dict[str, float], requests: int = 1) -> None:
        """Record one funnel call's stage times for each of the `requests` it answered together
        (micro-batching): every one of them waited the whole call, so a stage's mean is its part
        of a request's latency; its CPU cost per request is that divided by the mean batch size
        (``recfunnel_recommend_batch_size``)."""
        self.batch.observe(requests)
        for name, ms in timings_ms.items():
            for _ in range(requests):
                self.stage.labels(name).observe(ms / 1000.0)

    def reloaded(self, bundle_id: str) -> None:
        self.bundle.labels(bundle_id).set(time.time())

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Timed:
    """ASGI middleware: each HTTP request's status and seconds go to :meth:`ServiceMetrics.observe`
    (status 500 when the app raised before answering)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def _send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            self.metrics.observe(scope, status, time.perf_counter() - t0)
