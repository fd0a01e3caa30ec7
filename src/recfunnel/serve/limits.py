"""Readable validation errors: one line naming each bad field and why, and JSON-safe details
(the input is never echoed back). Body size is bounded by FastAPI's own ``max_body_size`` (413
from the Content-Length before reading, and counted as a chunked body arrives)."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError

__all__ = ["validation_details", "validation_message"]


def _not_json(err: dict) -> bool:
    return tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), (bytes, str))


def validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    """The first 20 errors as JSON-safe dicts: field location, message, type (the input is not
    echoed back: it may be large or not JSON)."""
    return [
        {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in exc.errors()[:20]
    ]


def validation_message(exc: RequestValidationError) -> str:
    """One line naming each bad field and why (the first few)."""
    parts = []
    if exc.errors() and _not_json(exc.errors()[0]):
        return "the body must be a JSON object, sent with Content-Type: application/json"
    for err in exc.errors()[:5]:
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON (at character {err.get('loc', ('', '?'))[-1]})")
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
