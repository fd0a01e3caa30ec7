"""The HTTP service's building blocks (issue 13). For now: the durable event store that
``POST /events`` appends to and that recommendations read a user's recent items from
(:mod:`.events`; backends in :mod:`.events_sqlite` and :mod:`.events_redis`, imported lazily so
that the ``redis`` client is only needed for a ``redis://`` store).
"""

from recfunnel.serve.events import (
    Event,
    EventStore,
    EventStoreError,
    InvalidEventError,
    open_event_store,
    validate_events,
)

__all__ = [
    "Event",
    "EventStore",
    "EventStoreError",
    "InvalidEventError",
    "open_event_store",
    "validate_events",
]
