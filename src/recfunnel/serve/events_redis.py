"""The Redis event store: for a service that runs on several machines, which cannot share a
SQLite file.

Durability is the server's, not the client's: an acknowledged append survives a crash of Redis
only if the server runs with ``appendonly yes`` and ``appendfsync always`` (Redis then fsyncs the
append-only file before it replies). With ``appendfsync everysec`` up to a second of acknowledged
events can be lost, and without ``appendonly`` everything since the last snapshot. The store reads
both settings when it opens and warns (:class:`EventDurabilityWarning`) when the server would not
keep an acknowledged write; servers that forbid ``CONFIG`` (managed Redis) are not checked.

Layout, under ``prefix`` (default ``recfunnel:events:``):

- ``prefix + user``: a sorted set of the user's events, scored by timestamp. A member is a
  16-hex-digit sequence number followed by compact JSON ``[item, weight]``. The sequence number
  makes identical events distinct members (a set would collapse them), and since Redis orders
  equal scores by member bytes, a fixed-width number keeps timestamp ties in insertion order.
- ``prefix`` itself (no user id is empty, so no user's key equals it): a hash with the global
  sequence counter ``seq`` and the total event count ``count``.

An append is one Lua script, which Redis runs atomically (no other command in between) and logs
to the append-only file as one unit: it allocates the sequence numbers, adds, trims each touched
user to ``max_per_user`` and keeps ``count`` exact. MULTI/EXEC could not do this in one round
trip: a transaction cannot use the sequence number it allocates or the number of trimmed events.
The script checks every key's type before writing anything, so a bad key fails the whole call.
A connection lost after the server ran an append but before its reply reaches the client makes
the call fail although the events were stored: a client that retries may store them twice.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from recfunnel.serve.events import (
    Event,
    EventStoreError,
    check_max_per_user,
    check_recent_args,
    validate_events,
)

DEFAULT_PREFIX = "recfunnel:events:"
_SEQ_DIGITS = 16

# KEYS: the touched users' keys, then the meta hash. ARGV: max_per_user, then per event the
# 1-based index of its user's key in KEYS, its timestamp and its JSON payload.
_APPEND_LUA = """
local meta = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'zset' and t ~= 'none' then
    return redis.error_reply('key ' .. KEYS[i] .. ' holds a ' .. t .. ', not recfunnel events')
  end
end
local keep = tonumber(ARGV[1])
local n = (#ARGV - 1) / 3
local seq = redis.call('HINCRBY', meta, 'seq', n) - n
for j = 0, n - 1 do
  seq = seq + 1
  local key = KEYS[tonumber(ARGV[2 + 3 * j])]
  redis.call('ZADD', key, ARGV[3 + 3 * j], string.format('%016x', seq) .. ARGV[4 + 3 * j])
end
local removed = 0
for i = 1, #KEYS - 1 do
  removed = removed + redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(keep + 1))
end
redis.call('HINCRBY', meta, 'count', n - removed)
return n
"""


class EventDurabilityWarning(UserWarning):
    """The Redis server would not keep an acknowledged append through a crash."""


class RedisEventStore:
    """An :class:`~recfunnel.serve.events.EventStore` in Redis (see the module docstring for the
    layout and for the server settings durability needs); each user keeps its newest
    ``max_per_user`` events. ``url`` is a redis-py URL such as ``redis://host:6379/0``.
    """

    def __init__(
        self,
        url: str,
        max_per_user: int = 200,
        prefix: str = DEFAULT_PREFIX,
        *,
        socket_timeout_s: float = 10.0,
    ):
        try:
            import redis
        except ImportError as err:  # the serve extra installs it
            raise EventStoreError(
                "the Redis event store needs the redis client: pip install 'recfunnel[serve]'"
            ) from err
        if not isinstance(prefix, str) or not prefix:
            raise EventStoreError(f"prefix must be a non-empty string, got {prefix!r}")
        self.url = url
        self.max_per_user = check_max_per_user(max_per_user)
        self.prefix = prefix
        self._errors = (redis.RedisError,)
        self._closed = False
        try:
            self.client: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
            )
            self.client.ping()
        except (ValueError, redis.RedisError) as err:
            raise EventStoreError(f"cannot use the Redis event store at {url}: {err}") from err
        self._append_script = self.client.register_script(_APPEND_LUA)
        self.persistence = self._check_persistence(redis.ResponseError)

    def _check_persistence(self, response_error: type[Exception]) -> dict[str, str] | None:
        """The server's ``appendonly``/``appendfsync`` (None where CONFIG is forbidden); warns if
        an acknowledged append could be lost in a crash of the server."""
        try:
            config = self.client.config_get("append*")
        except response_error:
            return None
        appendonly, appendfsync = config.get("appendonly"), config.get("appendfsync")
        if appendonly != "yes":
            warnings.warn(
                f"Redis at {self.url} runs with appendonly={appendonly}: acknowledged events are lost "
                "if the server crashes; run it with appendonly yes and appendfsync always",
                EventDurabilityWarning,
                stacklevel=3,
            )
        elif appendfsync != "always":
            warnings.warn(
                f"Redis at {self.url} runs with appendfsync={appendfsync}: up to a second of "
                "acknowledged events can be lost if the machine crashes; set appendfsync always",
                EventDurabilityWarning,
                stacklevel=3,
            )
        return {"appendonly": str(appendonly), "appendfsync": str(appendfsync)}

    def _key(self, user: str) -> str:
        return self.prefix + user

    def _check_open(self) -> None:
        if self._closed:
            raise EventStoreError(f"the Redis event store at {self.url} is closed")

    # -- the EventStore protocol -------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> int:
        """Validate, then add and trim in one atomic script; returns once Redis has acknowledged."""
        batch = validate_events(events)
        self._check_open()
        if not batch:
            return 0
        slots: dict[str, int] = {}
        args: list[Any] = [self.max_per_user]
        for ev in batch:
            slot = slots.setdefault(self._key(ev.user), len(slots) + 1)
            payload = json.dumps([ev.item, ev.weight], separators=(",", ":"), ensure_ascii=False)
            args += [slot, ev.timestamp, payload]
        keys = [*slots, self.prefix]
        try:
            stored = self._append_script(keys=keys, args=args)
        except self._errors as err:
            raise EventStoreError(f"append to the Redis event store at {self.url} failed: {err}") from err
        return int(stored)

    def recent(self, users: Sequence[str], n: int) -> list[list[Event]]:
        """Each user's newest ``n`` events, oldest first, read in one MULTI/EXEC round trip (so
        all users are read at one moment)."""
        users = check_recent_args(users, n)
        self._check_open()
        # "" is never a stored user, and its key would be the meta hash
        unique = [user for user in dict.fromkeys(users) if user]
        found: dict[str, list[Event]] = {}
        if n > 0 and unique:
            pipe = self.client.pipeline(transaction=True)
            for user in unique:
                pipe.zrange(self._key(user), -n, -1, withscores=True)
            try:
                replies = pipe.execute()
            except self._errors as err:
                raise EventStoreError(f"read from the Redis event store at {self.url} failed: {err}") from err
            for user, members in zip(unique, replies, strict=True):
                found[user] = [self._decode(user, member, score) for member, score in members]
        return [list(found.get(user, ())) for user in users]

    @staticmethod
    def _decode(user: str, member: str, score: float) -> Event:
        item, weight = json.loads(member[_SEQ_DIGITS:])
        return Event(user, item, int(score), float(weight))

    def count(self) -> int:
        """Events stored, kept exact by every append (O(1))."""
        self._check_open()
        try:
            value = self.client.hget(self.prefix, "count")
        except self._errors as err:
            raise EventStoreError(f"read from the Redis event store at {self.url} failed: {err}") from err
        return int(value or 0)

    def close(self) -> None:
        """Release the connection pool (the data stays on the server)."""
        if not self._closed:
            self._closed = True
            self.client.close()

    def __enter__(self) -> RedisEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisEventStore({self.url!r}, max_per_user={self.max_per_user}, prefix={self.prefix!r})"
