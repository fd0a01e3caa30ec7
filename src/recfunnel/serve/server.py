"""Running the service on several cores: N server processes, each with its own listening socket on
the same port (SO_REUSEPORT, so the kernel spreads connections over them) and TCP_NODELAY (no
delayed-ACK stalls on small responses), each loading the bundle read-only and sharing the event
store. Not ``uvicorn --workers``: one inherited socket balanced badly in our measurements, and
each process binding its own socket spread load evenly (DEVELOPERS.md, "Serving").

    serve(ServiceSettings(bundle=...), host="127.0.0.1", port=8000, workers=2)

The parent supervises: a worker that dies is started again (at most `max_restarts` a minute), and
SIGTERM / SIGINT stop every worker. With several workers, Prometheus values are kept in a shared
folder (``PROMETHEUS_MULTIPROC_DIR``) so ``/metrics`` on any worker reports them all.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import tempfile
import time
from dataclasses import replace
from typing import Any

from recfunnel.serve.app import ServiceSettings, create_app

__all__ = ["bind_socket", "run_worker", "serve"]

log = logging.getLogger("recfunnel.serve")


def bind_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT (several processes on one port) and TCP_NODELAY
    (inherited by accepted connections on Linux)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        if not hasattr(socket, "SO_REUSEPORT"):
            raise OSError("SO_REUSEPORT is not available on this platform: run one worker")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def run_worker(
    settings: ServiceSettings, host: str, port: int, threads: int = 1, log_level: str = "warning"
) -> None:
    """One server process: load the bundle, bind its own socket, serve until stopped."""
    import torch
    import uvicorn

    torch.set_num_threads(threads)
    app = create_app(settings)  # loads, checks and warms the bundle before the socket opens
    sock = bind_socket(host, port)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])


def _start(ctx: Any, args: tuple) -> Any:
    proc = ctx.Process(target=run_worker, args=args, daemon=False)
    proc.start()
    return proc


def serve(
    settings: ServiceSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int = 1,
    log_level: str = "warning",
    max_restarts: int = 5,
) -> None:
    """Serve `settings.bundle` with `workers` processes (1: in this process)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        run_worker(settings, host, port, threads, log_level)
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recfunnel-metrics-")
    admin = settings.admin_key or os.environ.get("RECFUNNEL_ADMIN_KEY")
    settings = replace(settings, admin_key=admin)
    ctx = mp.get_context("spawn")  # a clean interpreter per worker (no forked torch threads)
    args = (settings, host, port, threads, log_level)
    procs = [_start(ctx, args) for _ in range(workers)]
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    restarts: list[float] = []
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if p.is_alive() or stopping:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > max_restarts:
                    log.error("workers keep dying (%d restarts in a minute): stopping", len(restarts))
                    stopping = True
                    break
                log.warning("worker %d (pid %s) exited with %s: starting another", i, p.pid, p.exitcode)
                procs[i] = _start(ctx, args)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 10
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for s, h in old.items():
            signal.signal(s, h)
