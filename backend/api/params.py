"""Reading and checking request options: limit, offset, tags, min_score, q.

Options come from the query string, and for POST bodies also from form fields or JSON keys.
A bad value is a 400 that names the option.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from flask import request

from backend.stores.base import normalise_tags

from .errors import ApiError

DEFAULT_LIMIT = 24
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_TAGS = 20
MAX_TAG_LENGTH = 100
MAX_QUERY_LENGTH = 500


# The query parameters each endpoint takes. Any other is a 400: a misspelt `tag=` must not silently
# return unfiltered results. The page and static files are not checked (cache-busting parameters).
QUERY_PARAMETERS = {
    "search.by_text": ("q", "limit", "offset", "tags"),
    "search.by_image": ("limit", "offset", "tags", "min_score"),
    "search.similar": ("limit", "offset", "tags", "min_score"),
    "search.tags": ("limit",),
    "images.upload": ("tags",),
}
UNCHECKED = {"static", "index"}


def reject_unknown_parameters() -> None:
    """before_request: 400 for a query parameter the endpoint does not take."""
    if request.endpoint is None or request.endpoint in UNCHECKED:
        return
    allowed = QUERY_PARAMETERS.get(request.endpoint, ())
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise bad(f"unknown query parameter {unknown[0][:40]!r} ({takes})")


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message)


@dataclass(frozen=True)
class Options:
    limit: int
    offset: int
    tags: list[str]
    min_score: float | None

    def echo(self) -> dict:
        return {"tags": self.tags, "limit": self.limit, "offset": self.offset, "min_score": self.min_score}


class Source:
    """Option values by name: query string first, then the body's fields (form or JSON)."""

    def __init__(self, args, body: Mapping[str, Any] | None = None):
        self.args, self.body = args, body or {}

    def values(self, name: str) -> list:
        found = list(self.args.getlist(name))
        if hasattr(self.body, "getlist"):  # form fields may repeat
            found.extend(self.body.getlist(name))
        elif name in self.body:            # a JSON value, as sent (tags may be a list)
            found.append(self.body[name])
        return found

    def one(self, name: str):
        values = self.values(name)
        if len(values) > 1:
            raise bad(f"{name} is given {len(values)} times; give it once")
        return values[0] if values else None


def integer(source: Source, name: str, default: int, low: int, high: int) -> int:
    value = source.one(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise bad(f"{name} must be an integer from {low} to {high}")
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise bad(f"{name} must be an integer from {low} to {high} (got {str(value)[:40]!r})") from None
    if not low <= number <= high:
        raise bad(f"{name} must be an integer from {low} to {high} (got {number})")
    return number


def _min_score(source: Source) -> float | None:
    value = source.one("min_score")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad("min_score must be a number from -1 to 1")
    try:
        number = float(value)
    except ValueError:
        raise bad(f"min_score must be a number from -1 to 1 (got {str(value)[:40]!r})") from None
    if math.isnan(number) or not -1.0 <= number <= 1.0:
        raise bad(f"min_score must be a number from -1 to 1 (got {str(value)[:40]})")
    return number


def tags(source: Source) -> list[str]:
    """`tags=a&tags=b`, `tags=a,b` or a JSON list: every one must match."""
    out: list[str] = []
    values = []
    for value in source.values("tags"):
        values.extend(value if isinstance(value, list) else [value])
    if len(values) > MAX_TAGS:  # even empty ones: the request is not what the client meant
        raise bad(f"at most {MAX_TAGS} tags can be given")
    for value in values:
        if not isinstance(value, str):
            raise bad("tags must be strings")
        out.extend(value.split(","))
    result = normalise_tags(out)
    if len(result) > MAX_TAGS:
        raise bad(f"at most {MAX_TAGS} tags can be given")
    if any(len(t) > MAX_TAG_LENGTH or "\x00" in t for t in result):
        raise bad(f"a tag is at most {MAX_TAG_LENGTH} characters, with no NUL")
    return result


def options(source: Source, *, with_min_score: bool = True) -> Options:
    return Options(limit=integer(source, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                   offset=integer(source, "offset", 0, 0, MAX_OFFSET),
                   tags=tags(source),
                   min_score=_min_score(source) if with_min_score else None)


def text(source: Source) -> str:
    value = source.one("q")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad("q must be a string")
    if len(value) > MAX_QUERY_LENGTH:
        raise bad(f"q is at most {MAX_QUERY_LENGTH} characters")
    return value.strip()
