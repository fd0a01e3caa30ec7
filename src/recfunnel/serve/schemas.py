"""The service's request and response bodies (pydantic): every field typed and bounded, so a bad
request is a 422 naming the field and the rule, never an exception inside the funnel.

Limits (:class:`Limits`) bound every list and ``k``: a request cannot make the service allocate
without bound, and the OpenAPI page at ``/docs`` shows them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EventIn",
    "EventsRequest",
    "EventsResponse",
    "Limits",
    "RecommendRequest",
    "RecommendResponse",
    "ReloadRequest",
    "ReloadResponse",
    "ScoredItem",
    "SimilarRequest",
]

MAX_K = 1000
MAX_LIST = 1000
MAX_EVENTS = 1000


class Limits(BaseModel):
    """Bounds of one request; the defaults are the schema's maxima."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_k: int = Field(200, ge=1, le=MAX_K, description="largest k a request may ask")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestFilters(_Body):
    available: list[str] | None = Field(
        None, max_length=100_000, description="only these item ids may be returned (e.g. in stock)"
    )
    exclude_seen: bool = Field(True, description="drop items the user has seen (stored and fresh events)")


class RecommendRequest(_Body):
    user_id: str | None = Field(None, min_length=1, max_length=256, description="a user id (may be unknown)")
    recent_items: list[str] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="item ids the visitor interacted with, oldest first (after the stored events)",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="items to return")
    exclude: list[str] = Field(default_factory=list, max_length=MAX_LIST, description="never return these")
    filters: RequestFilters | None = None
    diversity: float | None = Field(
        None, ge=0, le=1, description="MMR lambda (1: relevance only); needs a bundle with filters.mmr_model"
    )
    explain: bool = Field(False, description="add each item's per-source scores and the stage timings")
    timestamp: int | None = Field(
        None,
        ge=0,
        description="request time, unix seconds, for time-aware stages (trending windows, time features); "
        "default: the end of the bundle's log, the time its models and features were built for",
    )


class ScoredItem(BaseModel):
    item: str
    score: float
    sources: list[str]
    source_scores: dict[str, float] | None = None


class RecommendResponse(BaseModel):
    bundle_id: str
    user_id: str | None
    known_user: bool
    items: list[ScoredItem]
    fresh_events: int = Field(description="events from the event store used for this answer")
    unknown_items: list[str]
    timings_ms: dict[str, float] | None = None


class SimilarRequest(_Body):
    item_id: str = Field(min_length=1, max_length=256)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude: list[str] = Field(default_factory=list, max_length=MAX_LIST)


class EventIn(_Body):
    user: str = Field(min_length=1, max_length=256)
    item: str = Field(min_length=1, max_length=256)
    timestamp: int | None = Field(None, ge=0, description="unix seconds (default: now)")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)


class EventsRequest(_Body):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    stored: int
    unknown_items: list[str] = Field(description="item ids the loaded bundle does not know (stored anyway)")


class ReloadRequest(_Body):
    bundle: str | None = Field(None, description="bundle folder to load (default: the one served)")


class ReloadResponse(BaseModel):
    bundle_id: str
    previous_bundle_id: str
    seconds: float
