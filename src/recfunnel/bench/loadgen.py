"""A cheap HTTP/1.1 load generator for the service benchmark, run in its own process.

An asyncio client over ``asyncio.open_connection`` (uvloop when installed) with a pool of
keep-alive connections and request bytes encoded before the clock starts; no client library on the
hot path. Two modes:

* **open loop** (``mode="open"``): request i is due at ``t0 + i / rate``. A scheduler hands each
  request to the pool at its due time; when every connection is busy it waits in the queue. Its
  latency runs from the *due* time to the last byte of the answer, so time spent queued behind a
  slow answer counts (no coordinated omission). ``send_lag_ms`` says how late requests left
  (client queueing and scheduler lateness together).
* **closed loop** (``mode="closed"``): `concurrency` connections, each sending its next request when
  the previous answer arrives, for `duration_s`: the saturation throughput at that concurrency.
  Latency runs from the write to the answer.

Requests are a mix of endpoints (``shares``) with bodies drawn at random from ``bodies`` (seeded).
Every run is bounded: open loop sends ``rate * duration_s`` requests and waits at most
``grace_s`` after the last is due; what is still unanswered then is an error ("unanswered"), what
was never sent is "unsent". Errors are non-2xx answers and transport failures (a broken
connection is reopened for the next request).

Result (a dict, JSON in the subprocess form): per endpoint and for all requests ``sent``, ``ok``,
``errors``, ``status`` counts, ``achieved_rps`` (ok answers per second of the run), ``p50_ms``,
``p95_ms``, ``p99_ms``, ``max_ms``, ``mean_ms`` (open loop: a request never answered or never sent
counts with the time it had waited when the run ended, a lower bound; ``censored`` counts them);
and the client's own ``client_cpu_s`` (user + system, ``resource.getrusage``) and
``client_cpu_share`` (of one core), so its cost on a small machine shows.

    python -m recfunnel.bench.loadgen SPEC.json --out RESULT.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LoadSpec", "run_load", "run_load_process", "summarise"]

TRANSPORT_ERROR = -1  # the connection failed or closed before the answer
UNANSWERED = -2  # sent, not answered within the run's grace time
UNSENT = -3  # never sent: the run ended first
#: every time taken here (uvloop's loop.time() ticks in whole milliseconds)
clock = time.perf_counter


@dataclass(frozen=True)
class LoadSpec:
    """One load run.

    Args:
        host, port: the service.
        mode: "open" (fixed offered rate) or "closed" (fixed concurrency).
        duration_s: open: the schedule's length (rate * duration_s requests); closed: how long
            requests are sent.
        bodies: endpoint path -> JSON bodies (strings) to draw from.
        shares: endpoint path -> share of the requests (normalised; default equal).
        rate: open loop: requests per second offered.
        concurrency: closed loop: connections, one request in flight each; open loop: the size of
            the connection pool (the most requests in flight).
        grace_s: open loop: how long after the last due time answers are still awaited.
        max_requests: closed loop: stop after this many requests (None: only the duration).
        seed: draws of the endpoint and body of each request.
    """

    host: str
    port: int
    mode: str
    duration_s: float
    bodies: dict[str, list[str]]
    shares: dict[str, float] = field(default_factory=dict)
    rate: float | None = None
    concurrency: int = 8
    grace_s: float = 10.0
    max_requests: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("open", "closed"):
            raise ValueError(f"mode must be 'open' or 'closed', got {self.mode!r}")
        if self.mode == "open" and not (self.rate and self.rate > 0):
            raise ValueError("open loop needs a rate > 0 (requests per second)")
        if self.concurrency < 1 or self.duration_s <= 0:
            raise ValueError("concurrency must be >= 1 and duration_s > 0")
        if not self.bodies or not all(self.bodies.values()):
            raise ValueError("bodies: at least one endpoint with at least one body")


def _request_bytes(host: str, port: int, path: str, body: str) -> bytes:
    data = body.encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _plan(spec: LoadSpec, n: int) -> tuple[list[str], np.ndarray, list[bytes]]:
    """(endpoints, endpoint index per request [n], request bytes per request [n]), seeded."""
    endpoints = list(spec.bodies)
    shares = np.array([spec.shares.get(e, 1.0 if not spec.shares else 0.0) for e in endpoints], float)
    if shares.sum() <= 0:
        raise ValueError(f"shares {spec.shares} give no endpoint of {endpoints} a share")
    rng = np.random.default_rng(spec.seed)
    which = rng.choice(len(endpoints), n, p=shares / shares.sum())
    encoded = [[_request_bytes(spec.host, spec.port, e, b) for b in spec.bodies[e]] for e in endpoints]
    pick = [rng.integers(0, len(encoded[e]), n) for e in range(len(endpoints))]
    payloads = [encoded[e][pick[e][i]] for i, e in enumerate(which.tolist())]
    return endpoints, which, payloads


class _Conn:
    """One keep-alive connection; reopened after a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, payload: bytes) -> int:
        """Send one request, read its whole answer -> HTTP status (TRANSPORT_ERROR on failure)."""
        try:
            if self.writer is None:
                await self.open()
            assert self.reader is not None and self.writer is not None
            self.writer.write(payload)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if chunked:
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await self.reader.readexactly(length)
            if close:
                self.close()
            return status
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return TRANSPORT_ERROR


async def _open_loop(spec: LoadSpec, payloads: list[bytes]) -> dict[str, Any]:
    n = len(payloads)
    assert spec.rate is not None
    conns = [_Conn(spec.host, spec.port) for _ in range(spec.concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    status = np.full(n, UNSENT, np.int64)
    latency = np.full(n, np.nan)
    lag = np.full(n, np.nan)
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    t0 = clock() + 0.05
    interval = 1.0 / spec.rate

    async def worker(conn: _Conn) -> None:
        while (i := await queue.get()) is not None:
            due = t0 + i * interval
            lag[i] = clock() - due
            status[i] = UNANSWERED
            status[i] = await conn.exchange(payloads[i])
            latency[i] = clock() - due

    async def scheduler() -> None:
        for i in range(n):
            delay = t0 + i * interval - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(i)
        for _ in conns:
            queue.put_nowait(None)

    tasks = [asyncio.ensure_future(scheduler())] + [asyncio.ensure_future(worker(c)) for c in conns]
    deadline = t0 + n * interval + spec.grace_s
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - clock()))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    end = clock()
    for c in conns:
        c.close()
    due = t0 + np.arange(n) * interval
    done = ~np.isnan(latency)
    last = float(np.max(latency[done] + due[done])) if done.any() else end
    # never answered or never sent: the time it had waited when the run ended (a lower bound)
    latency[~done] = np.maximum(end - due[~done], 0.0)
    wall = max(last, t0 + n * interval) - t0
    return {"status": status, "latency": latency, "lag": lag, "wall_s": wall, "censored": ~done}


async def _closed_loop(spec: LoadSpec, payloads: list[bytes]) -> dict[str, Any]:
    n = len(payloads)
    conns = [_Conn(spec.host, spec.port) for _ in range(spec.concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    status = np.full(n, UNSENT, np.int64)
    latency = np.full(n, np.nan)
    t0 = clock()
    stop = t0 + spec.duration_s
    nxt = 0

    async def worker(conn: _Conn) -> None:
        nonlocal nxt
        while nxt < n and clock() < stop:
            i, nxt = nxt, nxt + 1
            start = clock()
            status[i] = UNANSWERED
            status[i] = await conn.exchange(payloads[i])
            latency[i] = clock() - start

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    _, pending = await asyncio.wait(tasks, timeout=spec.duration_s + spec.grace_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = clock() - t0
    for c in conns:
        c.close()
    censored = np.zeros(nxt, bool)
    return {
        "status": status[:nxt],
        "latency": latency[:nxt],
        "lag": None,
        "wall_s": wall,
        "censored": censored,
    }


def _stats(status: np.ndarray, latency: np.ndarray, censored: np.ndarray, wall_s: float) -> dict[str, Any]:
    ok = (status >= 200) & (status < 300)
    ms = latency[~np.isnan(latency)] * 1000.0
    codes, counts = np.unique(status, return_counts=True)
    names = {TRANSPORT_ERROR: "transport", UNANSWERED: "unanswered", UNSENT: "unsent"}
    out: dict[str, Any] = {
        "sent": int((status != UNSENT).sum()),
        "ok": int(ok.sum()),
        "errors": int((~ok).sum()),
        "status": {names.get(int(c), str(int(c))): int(k) for c, k in zip(codes, counts, strict=True)},
        "achieved_rps": float(ok.sum() / wall_s) if wall_s > 0 else 0.0,
        "censored": int(censored.sum()),
    }
    pct = np.percentile(ms, [50, 95, 99]).tolist() if len(ms) else [None] * 3
    out.update(
        {
            "p50_ms": pct[0],
            "p95_ms": pct[1],
            "p99_ms": pct[2],
            "max_ms": float(ms.max()) if len(ms) else None,
            "mean_ms": float(ms.mean()) if len(ms) else None,
        }
    )
    return out


def summarise(
    endpoints: Sequence[str], which: np.ndarray, raw: dict[str, Any], spec: LoadSpec
) -> dict[str, Any]:
    """The result dict (see the module docstring) from the raw per-request arrays."""
    status, latency, wall, cens = raw["status"], raw["latency"], raw["wall_s"], raw["censored"]
    which = which[: len(status)]
    out: dict[str, Any] = {
        "mode": spec.mode,
        "offered_rps": spec.rate if spec.mode == "open" else None,
        "connections": spec.concurrency,
        "duration_s": spec.duration_s,
        "wall_s": wall,
        "all": _stats(status, latency, cens, wall),
        "endpoints": {
            e: _stats(status[which == j], latency[which == j], cens[which == j], wall)
            for j, e in enumerate(endpoints)
        },
    }
    if raw.get("lag") is not None:
        lag = raw["lag"][~np.isnan(raw["lag"])] * 1000.0
        out["send_lag_ms"] = {
            "p50": float(np.percentile(lag, 50)) if len(lag) else None,
            "p99": float(np.percentile(lag, 99)) if len(lag) else None,
            "max": float(lag.max()) if len(lag) else None,
        }
    return out


def run_load(spec: LoadSpec, use_uvloop: bool = True) -> dict[str, Any]:
    """Run `spec` in this process (blocking) -> the result dict, with the client's CPU seconds."""
    if spec.mode == "open":
        assert spec.rate is not None
        n = max(1, int(round(spec.rate * spec.duration_s)))
    else:
        n = spec.max_requests or max(1000, int(spec.duration_s * 20_000))
    endpoints, which, payloads = _plan(spec, n)
    runner = _open_loop if spec.mode == "open" else _closed_loop
    if use_uvloop:
        try:
            import uvloop

            loop_factory: Any = uvloop.new_event_loop
        except ImportError:
            loop_factory = asyncio.new_event_loop
    else:
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    try:
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        raw = loop.run_until_complete(runner(spec, payloads))
        r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    finally:
        loop.close()
    out = summarise(endpoints, which, raw, spec)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out.update(
        client_cpu_s=cpu,
        client_cpu_share=cpu / (w1 - w0),
        client_loop="uvloop" if loop_factory is not asyncio.new_event_loop else "asyncio",
    )
    return out


def run_load_process(spec: LoadSpec, timeout_s: float | None = None) -> dict[str, Any]:
    """Run `spec` in a fresh Python process (``python -m recfunnel.bench.loadgen``) -> its result."""
    with tempfile.TemporaryDirectory(prefix="recfunnel-load-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(asdict(spec)), "utf-8")
        limit = timeout_s or spec.duration_s + spec.grace_s + 120
        cmd = [sys.executable, "-m", "recfunnel.bench.loadgen", str(spec_path), "--out", str(out_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        if proc.returncode != 0 or not out_path.is_file():
            raise RuntimeError(f"load generator failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        return json.loads(out_path.read_text("utf-8"))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Drive a recfunnel service with an open- or closed-loop load.")
    p.add_argument("spec", type=Path, help="JSON of a LoadSpec")
    p.add_argument("--out", type=Path, help="write the result JSON here (default: stdout)")
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    args = p.parse_args(argv)
    spec = LoadSpec(**json.loads(args.spec.read_text("utf-8")))
    result = run_load(spec, use_uvloop=not args.no_uvloop)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", "utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
