"""The service's durable event store: what ``POST /events`` appends and what the next
recommendation for that user reads back as the user's recent items (issue 13).

Why a store of its own: the trained artifacts are frozen at fit time, so a user who just clicked
something would get the same recommendations until the next training run. The funnel takes the
user's recent items as a request input; this store is where the service keeps them between a
``POST /events`` and the next ``GET /recommend``, shared by every server process.

The contract every backend keeps (:class:`EventStore`):

- ``append`` is durable before it returns (committed and fsynced), so an acknowledged event
  survives a crash of the process or the machine; it is all-or-nothing per call.
- ``recent`` gives each user's newest ``n`` events, oldest first (the order the funnel reads a
  history in); events with equal timestamps keep their insertion order.
- each user keeps at most ``max_per_user`` events: the store serves freshness, not history (the
  full log belongs to the data pipeline), so it stays small and reads stay cheap.

Backends: :class:`~recfunnel.serve.events_sqlite.SQLiteEventStore` (one file, several processes on
one machine) and :class:`~recfunnel.serve.events_redis.RedisEventStore` (several machines); pick one
with :func:`open_event_store`. They are imported lazily, so the ``redis`` client is needed only
when a ``redis://`` URL is opened.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from recfunnel.errors import ConfigError, RecfunnelError

MAX_ID_LENGTH = 256
# Redis keeps timestamps as sorted-set scores (doubles): every int up to 2**53 is exact there, and
# unix seconds stay far below it (year ~285 million), so the bound costs no real timestamp.
MAX_TIMESTAMP = 2**53 - 1
EVENT_FIELDS = ("user", "item", "timestamp", "weight")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
URL_FORMS = (
    "sqlite:///abs/path.db (absolute path)",
    "sqlite://relative/path.db (relative to the working directory)",
    "a plain path ending in .db, .sqlite or .sqlite3",
    "redis://host:port/db (or rediss:// for TLS)",
)


class EventStoreError(RecfunnelError):
    """The event store cannot be opened or used: a file that is not a recfunnel event database,
    a server that cannot be reached, a store used after ``close``."""


class InvalidEventError(RecfunnelError, ValueError):
    """An event that fails validation; the message names the event's index and the field (the
    service returns it as a 422 to the client that sent it)."""


@dataclass(frozen=True)
class Event:
    """One interaction: ``user`` did something with ``item`` at ``timestamp`` (unix seconds).

    ``weight`` (finite, > 0) is how strong the signal is (a purchase may weigh more than a view).
    Ids are the raw string ids of the dataset, not the dense indices of a fitted model: the
    store outlives any one model, and an item unknown to today's model may be known tomorrow.
    Constructing an Event does not validate it (reads from the store build many of them);
    :func:`validate_events` does, and every backend's ``append`` calls it.
    """

    user: str
    item: str
    timestamp: int
    weight: float = 1.0


@runtime_checkable
class EventStore(Protocol):
    """What the service needs from an event store; see the module docstring for the contract."""

    def append(self, events: Sequence[Event]) -> int:
        """Store ``events`` durably before returning (all or none); return how many were stored."""
        ...

    def recent(self, users: Sequence[str], n: int) -> list[list[Event]]:
        """Per user, in the order of ``users``: the newest ``n`` events, oldest first ([] if none)."""
        ...

    def count(self) -> int:
        """The number of events stored (after trimming to ``max_per_user`` per user)."""
        ...

    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...

    def __enter__(self) -> EventStore: ...

    def __exit__(self, *exc: object) -> None: ...


def _check_id(value: Any, field: str, where: str) -> str:
    if value is None:
        raise InvalidEventError(f"{where}: missing field {field!r} (a non-empty string id)")
    if not isinstance(value, str):
        raise InvalidEventError(
            f"{where}: field {field!r} must be a string id, got {type(value).__name__} {value!r:.60}"
        )
    if not value:
        raise InvalidEventError(f"{where}: field {field!r} is empty (ids are non-empty strings)")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEventError(
            f"{where}: field {field!r} is {len(value)} characters long (at most {MAX_ID_LENGTH})"
        )
    if "\x00" in value:
        raise InvalidEventError(f"{where}: field {field!r} contains a NUL character")
    try:
        value.encode("utf-8")  # a lone surrogate (a JSON "\ud800" escape) cannot be stored
    except UnicodeEncodeError as err:
        raise InvalidEventError(f"{where}: field {field!r} is not valid Unicode ({err.reason})") from None
    return value


def _check_timestamp(value: Any, where: str) -> int:
    if value is None:
        raise InvalidEventError(f"{where}: missing field 'timestamp' (unix seconds, an integer >= 0)")
    # bool is an int subclass and a float may hide milliseconds or a fraction: both are refused
    # rather than silently truncated.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidEventError(
            f"{where}: field 'timestamp' must be an integer (unix seconds), "
            f"got {type(value).__name__} {value!r:.60}"
        )
    ts = int(value)
    if not 0 <= ts <= MAX_TIMESTAMP:
        raise InvalidEventError(
            f"{where}: field 'timestamp' is {ts}; it must be in [0, {MAX_TIMESTAMP}] (unix seconds)"
        )
    return ts


def _check_weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidEventError(
            f"{where}: field 'weight' must be a number, got {type(value).__name__} {value!r:.60}"
        )
    weight = float(value)
    if not math.isfinite(weight) or weight <= 0.0:
        raise InvalidEventError(f"{where}: field 'weight' is {weight!r}; it must be finite and > 0")
    return weight


def validate_events(raw: Iterable[Mapping[str, Any]] | Sequence[Event]) -> list[Event]:
    """Check and normalise a batch of events (mappings with keys ``user``, ``item``, ``timestamp``
    and optionally ``weight``, or :class:`Event` objects) into a list of :class:`Event`.

    Raises :class:`InvalidEventError` (a ``ValueError``) at the first bad event, naming its index
    and field. Unknown keys are refused too: a misspelt ``"wieght"`` would otherwise be dropped
    and the event stored with the default weight.
    """
    if isinstance(raw, (str, bytes, Mapping, Event)):
        raise InvalidEventError(
            f"expected a list of events, got a single {type(raw).__name__}; wrap it in a list"
        )
    out: list[Event] = []
    for index, ev in enumerate(raw):
        where = f"event {index}"
        if isinstance(ev, Event):
            user, item, ts, weight = ev.user, ev.item, ev.timestamp, ev.weight
        elif isinstance(ev, Mapping):
            unknown = [key for key in ev if key not in EVENT_FIELDS]
            if unknown:
                raise InvalidEventError(
                    f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                    f"the fields are {', '.join(EVENT_FIELDS)}"
                )
            user, item, ts = ev.get("user"), ev.get("item"), ev.get("timestamp")
            weight = ev.get("weight", 1.0)
        else:
            raise InvalidEventError(
                f"{where}: expected an object with fields {', '.join(EVENT_FIELDS)}, got {type(ev).__name__}"
            )
        out.append(
            Event(
                user=_check_id(user, "user", where),
                item=_check_id(item, "item", where),
                timestamp=_check_timestamp(ts, where),
                weight=_check_weight(weight, where),
            )
        )
    return out


def check_max_per_user(max_per_user: int) -> int:
    """``max_per_user`` as a positive int (shared by the backends' constructors)."""
    if isinstance(max_per_user, bool) or not isinstance(max_per_user, int) or max_per_user < 1:
        raise ConfigError(f"max_per_user must be an integer >= 1, got {max_per_user!r}")
    return max_per_user


def check_recent_args(users: Sequence[str], n: int) -> list[str]:
    """The arguments of ``recent`` checked; returns ``users`` as a list. A single string is refused:
    iterating it would silently look up one user per character."""
    if isinstance(users, (str, bytes)):
        raise ValueError(f"users must be a sequence of user ids, got a single string {users!r:.60}")
    users = list(users)
    for i, user in enumerate(users):
        if not isinstance(user, str):
            raise ValueError(f"users[{i}] must be a string id, got {type(user).__name__} {user!r:.60}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return users


def open_event_store(url: str | os.PathLike[str], *, max_per_user: int = 200) -> EventStore:
    """Open the event store that ``url`` names (see ``URL_FORMS``); each user keeps at most
    ``max_per_user`` events.

    ``sqlite:///abs/path.db`` and ``sqlite://relative.db`` follow one rule (the path is what
    follows ``sqlite://``), and so does a plain path with a SQLite suffix: a deployment can put
    either form in its config without thinking about it.
    """
    check_max_per_user(max_per_user)
    text = os.fspath(url)
    if not isinstance(text, str):
        raise ConfigError(f"event store URL must be a string, got {type(text).__name__}")
    if text.startswith("sqlite:"):
        if not text.startswith("sqlite://") or not text[len("sqlite://") :]:
            raise ConfigError(f"bad SQLite URL {text!r}; valid forms: {'; '.join(URL_FORMS)}")
        return _open_sqlite(text[len("sqlite://") :], max_per_user)
    if text.startswith(("redis://", "rediss://")):
        from recfunnel.serve.events_redis import RedisEventStore

        return RedisEventStore(text, max_per_user=max_per_user)
    if "://" not in text and text.lower().endswith(SQLITE_SUFFIXES):
        return _open_sqlite(text, max_per_user)
    raise ConfigError(f"unknown event store URL {text!r}; valid forms: {'; '.join(URL_FORMS)}")


def _open_sqlite(path: str, max_per_user: int) -> EventStore:
    if path == ":memory:" or path.startswith("file:"):
        # every thread gets its own connection, and an in-memory database is private to one
        raise ConfigError(
            f"the event store needs a file path, not {path!r}; valid forms: {'; '.join(URL_FORMS)}"
        )
    from recfunnel.serve.events_sqlite import SQLiteEventStore

    return SQLiteEventStore(path, max_per_user=max_per_user)
