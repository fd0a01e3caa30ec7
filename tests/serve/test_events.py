"""The event store (issue 13): one contract run against both backends, validation, the URL forms
of open_event_store, and durability against SIGKILL (of a writer process for SQLite, of the
server for Redis)."""

from __future__ import annotations

import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import recfunnel
from recfunnel.errors import ConfigError
from recfunnel.serve import Event, EventStore, EventStoreError, InvalidEventError, open_event_store
from recfunnel.serve.events import validate_events
from recfunnel.serve.events_sqlite import SQLiteEventStore

MakeStore = Callable[..., EventStore]


def ev(user: str, item: str, ts: int, weight: float = 1.0) -> Event:
    return Event(user, item, ts, weight)


def items(events: list[Event]) -> list[str]:
    return [e.item for e in events]


# -- the contract, both backends ------------------------------------------------------------


def test_round_trip(make_store: MakeStore) -> None:
    store = make_store()
    assert isinstance(store, EventStore)
    assert store.count() == 0
    stored = store.append([{"user": "u1", "item": "a", "timestamp": 10}, ev("u1", "b", 11, 2.5)])
    assert stored == 2
    assert store.append([]) == 0
    assert store.recent(["u1"], 5) == [[ev("u1", "a", 10, 1.0), ev("u1", "b", 11, 2.5)]]
    out = store.recent(["u1"], 5)[0]
    assert all(type(e.timestamp) is int and type(e.weight) is float for e in out)
    # ids with separators, quotes and non-ASCII survive (Redis keeps them in keys and JSON)
    odd = ev('ユーザー:"1"', 'item,"x"\\ é', 2**40, 0.125)
    store.append([odd])
    assert store.recent([odd.user], 1) == [[odd]]
    assert store.count() == 3


def test_newest_n_oldest_first(make_store: MakeStore) -> None:
    store = make_store()
    store.append([ev("u", "t5", 5), ev("u", "t1", 1), ev("u", "t9", 9)])
    store.append([ev("u", "t3", 3), ev("u", "t7", 7)])  # late events land by timestamp
    assert items(store.recent(["u"], 10)[0]) == ["t1", "t3", "t5", "t7", "t9"]
    assert items(store.recent(["u"], 2)[0]) == ["t7", "t9"]
    assert store.recent(["u"], 0) == [[]]


def test_timestamp_ties_keep_insertion_order(make_store: MakeStore) -> None:
    store = make_store()
    store.append([ev("u", "c", 7), ev("u", "a", 7)])
    store.append([ev("u", "b", 7), ev("u", "early", 6)])
    store.append([ev("u", "a", 7)])  # identical to an earlier event: stored again, not collapsed
    assert items(store.recent(["u"], 10)[0]) == ["early", "c", "a", "b", "a"]
    assert items(store.recent(["u"], 2)[0]) == ["b", "a"]
    assert store.count() == 5


def test_many_users_unknown_and_repeated(make_store: MakeStore) -> None:
    store = make_store()
    store.append([ev("u1", "a", 1), ev("u2", "b", 2), ev("u1", "c", 3)])
    got = store.recent(["u2", "nobody", "u1", "u2", ""], 10)
    assert [items(x) for x in got] == [["b"], [], ["a", "c"], ["b"], []]
    assert store.recent([], 3) == []
    with pytest.raises(ValueError, match="single string"):
        store.recent("u1", 3)
    with pytest.raises(ValueError, match="n must be"):
        store.recent(["u1"], -1)


def test_trimming_keeps_each_users_newest(make_store: MakeStore) -> None:
    store = make_store(max_per_user=3)
    store.append([ev("u1", f"a{t}", t) for t in range(5)])
    store.append([ev("u2", "b0", 0), ev("u2", "b1", 1)])
    assert store.count() == 5
    assert items(store.recent(["u1"], 10)[0]) == ["a2", "a3", "a4"]
    store.append([ev("u1", "old", 0)])  # older than everything kept: trimmed at once
    store.append([ev("u1", "a5", 5), ev("u2", "b2", 2), ev("u2", "b3", 3)])
    assert [items(x) for x in store.recent(["u1", "u2"], 10)] == [["a3", "a4", "a5"], ["b1", "b2", "b3"]]
    assert store.count() == 6


def test_failed_batch_stores_nothing(make_store: MakeStore) -> None:
    store = make_store()
    store.append([ev("u", "a", 1)])
    with pytest.raises(InvalidEventError, match="event 1"):
        store.append([ev("u", "b", 2), ev("u", "c", -1)])
    assert store.count() == 1 and items(store.recent(["u"], 5)[0]) == ["a"]


def test_reopen_and_close(make_store: MakeStore) -> None:
    with make_store() as store:
        store.append([ev("u", "a", 1)])
    with pytest.raises(EventStoreError, match="closed"):
        store.append([ev("u", "b", 2)])
    with pytest.raises(EventStoreError, match="closed"):
        store.recent(["u"], 1)
    store.close()  # twice is fine
    assert items(make_store().recent(["u"], 5)[0]) == ["a"]


# -- validation -----------------------------------------------------------------------------

GOOD: dict[str, Any] = {"user": "u", "item": "i", "timestamp": 5, "weight": 2.0}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"user": None}, "user", "missing"),
        ({"item": ""}, "item", "empty"),
        ({"user": 7}, "user", "string"),
        ({"item": "x" * 257}, "item", "257 characters"),
        ({"item": "a\x00b"}, "item", "NUL"),
        ({"user": "\ud800"}, "user", "Unicode"),
        ({"timestamp": None}, "timestamp", "missing"),
        ({"timestamp": True}, "timestamp", "integer"),
        ({"timestamp": 1.0}, "timestamp", "integer"),
        ({"timestamp": "5"}, "timestamp", "integer"),
        ({"timestamp": -1}, "timestamp", "[0, "),
        ({"timestamp": 2**60}, "timestamp", "[0, "),
        ({"weight": 0}, "weight", "> 0"),
        ({"weight": -1.5}, "weight", "> 0"),
        ({"weight": math.nan}, "weight", "finite"),
        ({"weight": math.inf}, "weight", "finite"),
        ({"weight": False}, "weight", "number"),
        ({"weight": "1"}, "weight", "number"),
        ({"wieght": 2.0}, "wieght", "unknown field"),
    ],
)
def test_validation_names_index_and_field(change: dict[str, Any], field: str, message: str) -> None:
    bad = {**GOOD, **change}
    if change.get("user", 0) is None or change.get("timestamp", 0) is None:
        bad = {k: v for k, v in bad.items() if v is not None}  # missing, not null
    with pytest.raises(ValueError, match=r"^event 1: ") as caught:
        validate_events([GOOD, bad])
    assert f"'{field}'" in str(caught.value)
    assert any(part in str(caught.value) for part in message.split("|")), str(caught.value)


def test_validation_accepts_and_normalises() -> None:
    out = validate_events(
        [
            {"user": "u", "item": "i", "timestamp": np.int64(3)},
            ev("u", "j", 4, 2),
            {"user": "u", "item": "k", "timestamp": 5, "weight": np.float32(0.5)},
        ]
    )
    assert out == [ev("u", "i", 3, 1.0), ev("u", "j", 4, 2.0), ev("u", "k", 5, 0.5)]
    assert type(out[0].timestamp) is int and type(out[1].weight) is float
    assert validate_events([]) == []
    assert validate_events(iter([GOOD])) == [ev("u", "i", 5, 2.0)]


def test_validation_of_the_batch_itself() -> None:
    with pytest.raises(ValueError, match="single dict"):
        validate_events(GOOD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="event 0: expected an object"):
        validate_events([("u", "i", 5)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"event 0: .*'user'"):
        validate_events([ev("", "i", 1)])  # Events are checked too


# -- open_event_store -----------------------------------------------------------------------


def test_open_sqlite_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cases = {
        f"sqlite://{tmp_path}/abs.db": tmp_path / "abs.db",  # sqlite:///tmp/...
        "sqlite://rel/rel.db": tmp_path / "rel" / "rel.db",
        str(tmp_path / "plain.sqlite"): tmp_path / "plain.sqlite",
        "plain.db": tmp_path / "plain.db",
        tmp_path / "pathlike.sqlite3": tmp_path / "pathlike.sqlite3",
    }
    for url, path in cases.items():
        with open_event_store(url, max_per_user=7) as store:
            assert isinstance(store, SQLiteEventStore)
            assert store.path == path and store.max_per_user == 7 and path.is_file()


@pytest.mark.parametrize(
    "url", ["http://host/x", "events.txt", "postgres://db", "sqlite:", "sqlite:/x.db", "sqlite://", ""]
)
def test_open_bad_url_lists_valid_forms(url: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///abs/path\.db.*redis://host:port/db"):
        open_event_store(url)


def test_open_refuses_memory_and_bad_max(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file path"):
        open_event_store("sqlite://:memory:")
    with pytest.raises(ConfigError, match="max_per_user"):
        open_event_store(tmp_path / "x.db", max_per_user=0)


def test_open_redis(redis_url: str) -> None:
    from recfunnel.serve.events_redis import RedisEventStore

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the test server persists every write: no warning
        with open_event_store(redis_url, max_per_user=9) as store:
            assert isinstance(store, RedisEventStore) and store.max_per_user == 9
            assert store.persistence == {"appendonly": "yes", "appendfsync": "always"}
    with pytest.raises(EventStoreError, match="cannot use the Redis event store"):
        open_event_store(f"redis://127.0.0.1:{_closed_port()}/0")


def _closed_port() -> int:
    """A port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- SQLite specifics -----------------------------------------------------------------------


def test_sqlite_settings_and_schema(tmp_path: Path) -> None:
    with SQLiteEventStore(tmp_path / "a" / "b" / "events.db") as store:
        conn = store._conn()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(events)")]
        assert "events_user_ts_seq" in indexes


def test_sqlite_refuses_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"not a database at all " * 100)
    with pytest.raises(EventStoreError, match="cannot be opened as a recfunnel event database"):
        SQLiteEventStore(tmp_path / "junk.db")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id TEXT)")
    conn.close()
    with pytest.raises(EventStoreError, match="not a recfunnel event database .*users"):
        SQLiteEventStore(other)
    with sqlite3.connect(other) as conn:  # and it was left as it was
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    SQLiteEventStore(tmp_path / "ours.db").close()
    with sqlite3.connect(tmp_path / "ours.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(EventStoreError, match="schema version 99"):
        SQLiteEventStore(tmp_path / "ours.db")
    with pytest.raises(EventStoreError, match="folder"):
        SQLiteEventStore(tmp_path)


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(recfunnel.__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# appends batches of 10 events forever, printing "ack <batch>" once each append has returned
WRITER = """
import sys
from recfunnel.serve.events import Event, open_event_store
store = open_event_store(sys.argv[1], max_per_user=10**6)
batch = 0
while True:
    store.append([Event("u", f"{batch}:{j}", batch) for j in range(10)])
    print("ack", batch, flush=True)
    batch += 1
"""


def test_sqlite_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    proc = _child(WRITER, path)
    acked = -1
    try:
        while acked < 25:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.startswith("ack"), (
                f"writer died: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
            acked = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)  # right after reading the ack: no clean shutdown
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.communicate()
    with SQLiteEventStore(path) as store:
        stored = items(store.recent(["u"], 10**6)[0])
    batches: dict[int, int] = {}
    for item in stored:
        batches[int(item.split(":")[0])] = batches.get(int(item.split(":")[0]), 0) + 1
    assert set(range(acked + 1)) <= set(batches), "an acknowledged append was lost"
    assert set(batches.values()) == {10}, "a batch was stored in part"
    assert sorted(batches) == list(range(len(batches)))


# waits for "go" on stdin, then opens the (new) file and appends one event per call, to its own
# user and a shared one: the processes race to create the schema, then to write
RACER = """
import sys
from recfunnel.serve.events import Event, open_event_store
name, n = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
store = open_event_store(sys.argv[1], max_per_user=10**6)
for i in range(n):
    store.append([Event(name, str(i), i), Event("shared", f"{name}{i}", i)])
    if i % 10 == 0:
        assert len(store.recent([name], 10**6)[0]) == i + 1
print("done", flush=True)
"""


def test_sqlite_processes_create_and_append_concurrently(tmp_path: Path) -> None:
    path, n, names = str(tmp_path / "events.db"), 50, ("p0", "p1", "p2")
    procs = [_child(RACER, path, name, str(n)) for name in names]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            assert line == "ready\n", f"{line!r} {proc.stderr.read() if not line else ''}"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "done", err
        assert "locked" not in err
    with SQLiteEventStore(path) as store:
        assert store.count() == 2 * len(names) * n
        *mine, shared = store.recent([*names, "shared"], 10**6)
        assert all(items(events) == [str(i) for i in range(n)] for events in mine)
        assert sorted(items(shared)) == sorted(f"{name}{i}" for name in names for i in range(n))


def test_sqlite_concurrent_opens_of_a_new_file(tmp_path: Path) -> None:
    """Openers racing to create the schema all succeed (a check that read the schema in separate
    statements once saw a half-made file as someone else's database, ~1 round in 3)."""
    errors: list[Exception] = []

    def open_it(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            SQLiteEventStore(path).close()
        except Exception as err:  # reported by the main thread
            errors.append(err)

    for round_ in range(20):
        path, barrier = tmp_path / f"e{round_}.db", threading.Barrier(6)
        threads = [threading.Thread(target=open_it, args=(path, barrier)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors


def test_sqlite_threads(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", max_per_user=1000)
    errors: list[BaseException] = []
    n = 40

    def work(name: str) -> None:
        try:
            for i in range(n):
                store.append([ev(name, str(i), i), ev("shared", f"{name}:{i}", i)])
                mine, shared = store.recent([name, "shared"], 1000)
                assert items(mine) == [str(k) for k in range(i + 1)]
                assert len(shared) >= i + 1
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert store.count() == 4 * 2 * n
    store.close()


# -- Redis specifics ------------------------------------------------------------------------


def test_redis_acknowledged_appends_survive_server_sigkill(redis_server: Callable[..., Any]) -> None:
    from recfunnel.serve.events_redis import RedisEventStore

    server = redis_server()
    store = RedisEventStore(server.start(), max_per_user=50)
    for batch in range(20):
        assert store.append([ev(f"u{batch % 3}", f"{batch}:{j}", batch) for j in range(5)]) == 5
    before = store.recent(["u0", "u1", "u2"], 100)
    store.close()
    server.kill()
    with RedisEventStore(server.start(), max_per_user=50) as reopened:
        assert reopened.recent(["u0", "u1", "u2"], 100) == before
        assert reopened.count() == 100 and sum(map(len, before)) == 100
        reopened.append([ev("u0", "after", 99)])  # and the sequence counter survived too
        assert items(reopened.recent(["u0"], 1)[0]) == ["after"]


def test_redis_warns_when_writes_are_not_persisted(redis_server: Callable[..., Any]) -> None:
    from recfunnel.serve.events_redis import EventDurabilityWarning, RedisEventStore

    url = redis_server("--appendonly", "no").start()
    with pytest.warns(EventDurabilityWarning, match="appendonly=no"):
        RedisEventStore(url).close()
    url = redis_server("--appendfsync", "everysec").start()  # the last of a repeated option wins
    with pytest.warns(EventDurabilityWarning, match="appendfsync=everysec"):
        RedisEventStore(url).close()


def test_redis_tolerates_forbidden_config(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from recfunnel.serve.events_redis import RedisEventStore

    def forbidden(*args: object, **kwargs: object) -> None:
        raise redis.ResponseError("unknown command 'CONFIG'")

    monkeypatch.setattr(redis.Redis, "config_get", forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with RedisEventStore(redis_url, prefix="forbidden:") as store:
            assert store.persistence is None


def test_redis_bad_key_fails_the_whole_append(redis_url: str) -> None:
    import redis

    from recfunnel.serve.events_redis import RedisEventStore

    with RedisEventStore(redis_url, prefix="wrongtype:") as store:
        client = redis.Redis.from_url(redis_url)
        client.set("wrongtype:bad", "a string")
        client.close()
        with pytest.raises(EventStoreError, match="holds a string"):
            store.append([ev("good", "a", 1), ev("bad", "b", 2)])
        assert store.count() == 0 and store.recent(["good"], 5) == [[]]
