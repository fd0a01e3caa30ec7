"""Fixtures of the service tests: real ``redis-server`` processes (the Redis store's durability
is the server's, so a fake client would test nothing that matters), a factory that opens a
fresh store of either backend for the shared contract tests, and two small funnel bundles built
on synthetic data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recfunnel.data.dataset import build_dataset
from recfunnel.data.splits import leave_one_out
from recfunnel.funnel.build import build_funnel
from recfunnel.funnel.bundle import save_bundle
from recfunnel.funnel.config import FunnelConfig
from recfunnel.serve.events import EventStore

REDIS_SERVER = shutil.which("redis-server")
NO_REDIS = (
    "redis-server is not on PATH; install it (apt-get install redis-server) to run the Redis "
    "event-store tests"
)
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 that persists to ``directory`` with ``appendonly yes`` and
    ``appendfsync always`` (no RDB snapshots), so an acknowledged write is on disk. ``start`` again
    after ``kill`` reloads what the append-only file holds."""

    def __init__(self, directory: Path, *extra: str):
        self.directory = directory
        self.extra = extra
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start on a free port; returns the URL once the server answers PING."""
        import redis

        assert REDIS_SERVER is not None, NO_REDIS
        self.port = free_port()
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)]
        args += list(self.extra)
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
                try:
                    if client.ping():
                        return self.url
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server did not answer PING in {START_TIMEOUT_S} s: {self.log_tail()}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def log_tail(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; what survives is what was fsynced."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """A factory of not-yet-started servers persisting under ``tmp_path`` (extra args appended
    to the command line); every one is stopped at teardown."""
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    pytest.importorskip("redis")
    servers: list[RedisServer] = []

    def make(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", *extra)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of one redis-server shared by the session's tests (each test uses its own key
    prefix, so they do not see each other's events)."""
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS)
    pytest.importorskip("redis")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., EventStore]]:
    """A factory of fresh, empty stores of one backend (``make_store(max_per_user=...)``); every
    store it opened is closed at teardown."""
    stores: list[EventStore] = []
    if request.param == "redis":
        from recfunnel.serve.events_redis import RedisEventStore

        url = request.getfixturevalue("redis_url")
        prefix = f"test:{uuid.uuid4().hex}:"

        def make(max_per_user: int = 200) -> EventStore:
            stores.append(RedisEventStore(url, max_per_user=max_per_user, prefix=prefix))
            return stores[-1]

    else:
        from recfunnel.serve.events_sqlite import SQLiteEventStore

        def make(max_per_user: int = 200) -> EventStore:
            stores.append(SQLiteEventStore(tmp_path / "events.db", max_per_user=max_per_user))
            return stores[-1]

    yield make
    for store in stores:
        store.close()


N_USERS, N_ITEMS = 40, 60


def toy_dataset():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(N_USERS), 12)
    items = np.concatenate([rng.choice(N_ITEMS, 12, replace=False) for _ in range(N_USERS)])
    frame = pl.DataFrame(
        {
            "user": [f"u{x:02d}" for x in users],
            "item": [f"i{x:02d}" for x in items],
            "timestamp": 1_000_000 + np.arange(len(users), dtype=np.int64) * 60,
            "rating": rng.integers(1, 6, len(users)).astype(np.float64),
        }
    )
    return build_dataset("toy", frame)


def config(seed: int = 0) -> FunnelConfig:
    quiet = {"epochs": 2, "progress": False, "lr": 0.05, "seed": seed}
    return FunnelConfig.model_validate(
        {
            "models": {"mf": {"model": {"name": "mf", "params": {"factors": 8}}, "train": quiet}},
            "retrievers": [
                {"kind": "ann", "model": "mf", "quota": 20, "backend": "exact"},
                {"kind": "item2item", "model": "mf", "quota": 10, "backend": "exact"},
                {"kind": "popular", "quota": 10},
            ],
            "ranker": {
                "family": "deepfm",
                "features": {"preset": "ids"},
                "train": {"epochs": 1, "progress": False, "seed": seed},
            },
        }
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> tuple[Path, Path]:
    """Two bundles of the same data built with different seeds (different ids)."""
    ds = toy_dataset()
    split = leave_one_out(ds)
    root = tmp_path_factory.mktemp("bundles")
    a = save_bundle(build_funnel(config(0), ds, split, evaluate=False), root / "a")
    b = save_bundle(build_funnel(config(1), ds, split, evaluate=False), root / "b")
    return a, b
