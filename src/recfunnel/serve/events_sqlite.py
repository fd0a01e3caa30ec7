"""The SQLite event store: one file that every server process on one machine shares.

Why these settings:

- WAL journal mode lets readers run while a writer commits, so ``GET /recommend`` in one process
  does not wait for ``POST /events`` in another.
- ``synchronous=FULL``: in WAL mode the default (NORMAL) fsyncs only at checkpoints, so a commit
  acknowledged just before a power loss could vanish. FULL fsyncs the WAL on every commit,
  which is what "nothing acknowledged may be lost" needs.
- ``busy_timeout``: a second process that wants to write waits for the lock instead of failing
  with "database is locked"; writes take the lock up front (``BEGIN IMMEDIATE``) because a read
  transaction that later upgrades to a write cannot wait for it in WAL mode.
- One connection per thread: FastAPI runs sync endpoints in a thread pool, and a sqlite3
  connection must not run two statements at once. Writers of one process also queue on a
  ``threading.Lock``, which is fairer and cheaper than SQLite's sleep-and-retry busy handler.

The file is marked with ``PRAGMA application_id`` and a schema version in ``user_version``, so
opening some other SQLite file fails with a clear message rather than a missing-table error (or,
worse, new tables written into someone else's database). Open the store in each worker process
after forking: SQLite connections must not cross a ``fork``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from recfunnel.serve.events import (
    Event,
    EventStoreError,
    check_max_per_user,
    check_recent_args,
    validate_events,
)

APPLICATION_ID = 0x52464556  # "RFEV": recfunnel events
SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, "
    "item TEXT NOT NULL, ts INTEGER NOT NULL, weight REAL NOT NULL)",
    "CREATE INDEX events_user_ts_seq ON events (user, ts, seq)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_NEWEST = "SELECT item, ts, weight FROM events WHERE user = ? ORDER BY ts DESC, seq DESC LIMIT ?"
# the newest event beyond the ones a user keeps: it and everything older goes
_CUTOFF = "SELECT ts, seq FROM events WHERE user = ? ORDER BY ts DESC, seq DESC LIMIT 1 OFFSET ?"
_TRIM = "DELETE FROM events WHERE user = ? AND (ts < ? OR (ts = ? AND seq <= ?))"


class SQLiteEventStore:
    """An :class:`~recfunnel.serve.events.EventStore` in one SQLite file (created with its parent
    folder if missing); each user keeps its newest ``max_per_user`` events.

    ``busy_timeout_s`` is how long a write waits for another process's write to finish before
    it fails; commits take milliseconds, so the default is generous.
    """

    def __init__(
        self, path: str | os.PathLike[str], max_per_user: int = 200, *, busy_timeout_s: float = 10.0
    ):
        self.path = Path(path).expanduser().absolute()
        self.max_per_user = check_max_per_user(max_per_user)
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._registry_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._schema_checked = False
        if self.path.is_dir():
            raise EventStoreError(f"event store path {self.path} is a folder, not a database file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn()
        except BaseException:
            self.close()
            raise

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened (and configured) on first use."""
        if self._closed:
            raise EventStoreError(f"the event store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        # isolation_level=None: transactions are begun and ended here, explicitly.
        # check_same_thread=False only so that close() may close every thread's connection.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        with self._registry_lock:
            self._connections.append(conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if not self._schema_checked:
                # before the journal mode: switching some other database to WAL would modify it
                self._init_schema(conn)
                self._schema_checked = True
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.DatabaseError as err:
            raise EventStoreError(
                f"{self.path} cannot be opened as a recfunnel event database ({err}); "
                "point the event store at a new file or at one it created"
            ) from err
        self._local.conn = conn
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent; a no-op once done). The switch needs a moment with no
        other connection mid-transaction, and SQLite may answer "locked" instead of waiting."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            raise EventStoreError(
                f"{self.path}: SQLite refused WAL journal mode (got {mode!r}); the event store needs "
                "a local filesystem (network filesystems do not support WAL)"
            )

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        """Create the schema in a new (empty) file, or check that an existing one is ours."""
        if self._check_schema(conn):
            return
        # another process may be creating it at the same moment: decide under the write lock
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._check_schema(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        """True if the file holds our schema, False if it is empty; raises if it is anything else."""
        # one snapshot: another process may commit the schema between two autocommit reads
        own_transaction = not conn.in_transaction
        if own_transaction:
            conn.execute("BEGIN")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        finally:
            if own_transaction:
                conn.execute("COMMIT")
        if app_id == APPLICATION_ID:
            if version != SCHEMA_VERSION:
                raise EventStoreError(
                    f"{self.path} is a recfunnel event database of schema version {version}; this "
                    f"recfunnel reads version {SCHEMA_VERSION} (upgrade recfunnel or use a new file)"
                )
            return True
        if app_id == 0 and not tables:
            return False
        what = f"tables {', '.join(tables)}" if tables else f"application_id {app_id:#x}"
        raise EventStoreError(
            f"{self.path} is not a recfunnel event database (it holds {what}); "
            "point the event store at a new file or at one it created"
        )

    # -- the EventStore protocol -------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> int:
        """Validate, insert and trim in one transaction; returns after the commit is fsynced."""
        batch = validate_events(events)
        if not batch:
            return 0
        rows = [(ev.user, ev.item, ev.timestamp, ev.weight) for ev in batch]
        users = list(dict.fromkeys(ev.user for ev in batch))
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO events (user, item, ts, weight) VALUES (?, ?, ?, ?)", rows)
                for user in users:
                    cut = conn.execute(_CUTOFF, (user, self.max_per_user)).fetchone()
                    if cut is not None:
                        conn.execute(_TRIM, (user, cut[0], cut[0], cut[1]))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return len(batch)

    def recent(self, users: Sequence[str], n: int) -> list[list[Event]]:
        """Each user's newest ``n`` events, oldest first, all read from one snapshot."""
        users = check_recent_args(users, n)
        if n == 0 or not users:
            return [[] for _ in users]
        conn = self._conn()
        found: dict[str, list[Event]] = {}
        conn.execute("BEGIN")
        try:
            for user in dict.fromkeys(users):
                rows = conn.execute(_NEWEST, (user, n)).fetchall()
                found[user] = [Event(user, item, ts, weight) for item, ts, weight in reversed(rows)]
        finally:
            conn.execute("COMMIT")
        return [list(found[user]) for user in users]

    def count(self) -> int:
        """Events stored (a full count: O(events), fine for metrics at a freshness store's size)."""
        return int(self._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection (the last one checkpoints the WAL into the file)."""
        with self._registry_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> SQLiteEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteEventStore({str(self.path)!r}, max_per_user={self.max_per_user})"
