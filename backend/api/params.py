"""Reading and checking request options: limit, offset, the filters (tags, dates, cameras, ...), min_score, q.

Options come from the query string, and for POST bodies also from form fields or JSON keys.
A bad value, or a name the endpoint does not take, is a 400 that names the option.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any, Mapping

from flask import request
from werkzeug.datastructures import MultiDict

from backend.stores.base import normalise_tags
from backend.stores.filters import Filters, parse_day

from .errors import ApiError

DEFAULT_LIMIT = 24
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_TAGS = 20
MAX_TAG_LENGTH = 100
MAX_QUERY_LENGTH = 500
MAX_EXPAND = 10


MAX_VALUES = 20                # of each repeatable filter
MAX_VALUE_LENGTH = 200         # a camera name, a folder, a type
MAX_SIDE = 1_000_000           # min_width, min_height

# What narrows every search and listing (backend/stores/filters.py).
FILTER_PARAMETERS = ("tags", "taken_from", "taken_to", "camera", "folder", "type", "min_width", "min_height")
# The query parameters each endpoint takes. Any other is a 400: a misspelt `tag=` must not silently
# return unfiltered results. The page and static files are not checked (cache-busting parameters).
QUERY_PARAMETERS = {
    "search.by_text": ("q", "limit", "offset", *FILTER_PARAMETERS, "collapse"),
    "search.by_image": ("limit", "offset", *FILTER_PARAMETERS, "min_score", "crop", "expand", "collapse"),
    "search.similar": ("limit", "offset", *FILTER_PARAMETERS, "min_score", "crop", "expand", "collapse"),
    "search.refine": ("limit", "offset", *FILTER_PARAMETERS, "min_score", "expand", "collapse"),
    "search.tags": ("limit",),
    "images.upload": ("tags",),
    "duplicates.report": ("level", "min_score", *FILTER_PARAMETERS, "limit", "offset"),
    "duplicates.of_image": ("level", "min_score"),
    "browse.images": ("limit", "offset", "sort", *FILTER_PARAMETERS),
    "browse.facets": ("limit", *FILTER_PARAMETERS),
}
UNCHECKED = {"static", "index"}


def reject_unknown_parameters() -> None:
    """before_request: 400 for a query parameter the endpoint does not take."""
    if request.endpoint is None or request.endpoint in UNCHECKED:
        return
    refuse_unknown("query parameter", request.args, QUERY_PARAMETERS.get(request.endpoint, ()))


def refuse_unknown(kind: str, names, allowed: tuple[str, ...]) -> None:
    """400 naming the first of `names` that is not `allowed` (query parameters, form fields, JSON keys)."""
    # A multipart part without a name comes as the name None: an unknown field too, never a crash.
    unknown = sorted("" if name is None else name for name in set(names) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        named = repr(unknown[0][:40]) if unknown[0] else "without a name"
        raise bad(f"unknown {kind} {named} ({takes})")


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message)


@dataclass(frozen=True)
class Options:
    limit: int
    offset: int
    filters: Filters
    min_score: float | None

    def echo(self) -> dict:
        return {**self.filters.echo(), "limit": self.limit, "offset": self.offset, "min_score": self.min_score}


MISSING = object()  # an option not given (JSON null is given: it is refused like any wrong type)


class Source:
    """Option values by name: query string first, then the body's fields (form or JSON).

    Query-string and form values are text, parsed here; JSON values are typed and must have the right
    JSON type ("limit": "5" is refused like "limit": true).
    """

    def __init__(self, args, body: Mapping[str, Any] | None = None):
        self.args, self.body = args, body or {}
        self.json = not isinstance(self.body, MultiDict)  # form fields may repeat; JSON keys cannot

    def values(self, name: str) -> list:
        found = list(self.args.getlist(name))
        if isinstance(self.body, MultiDict):
            found.extend(self.body.getlist(name))
        elif name in self.body:            # a JSON value, as sent (tags may be a list; null is a value too)
            found.append(self.body[name])
        return found

    def one(self, name: str):
        """The value, or MISSING."""
        values = self.values(name)
        if len(values) > 1:
            raise bad(f"{name} is given {len(values)} times; give it once")
        return values[0] if values else MISSING

    def typed(self, name: str) -> bool:
        """Whether `name` came as a JSON value rather than as text (one() has made sure it came once)."""
        return self.json and name in self.body


def got(value, typed: bool) -> str:
    """What the client sent, for messages: text as text, JSON as JSON (so "5" shows it was a string)."""
    if not typed:
        return f"(got {str(value)[:40]!r})"
    if isinstance(value, (list, dict)):  # not dumped: it may be long or deeply nested
        return f"(got {'an array' if isinstance(value, list) else 'an object'})"
    return f"(got {json.dumps(value)[:40]})"


def integer(source: Source, name: str, default: int, low: int, high: int) -> int:
    value = source.one(name)
    if value is MISSING:
        return default
    typed = source.typed(name)
    message = f"{name} must be an integer from {low} to {high} {got(value, typed)}"
    if typed:
        # A JSON number; 5.0 is the integer 5 (as in JSON Schema), "5" and true are not numbers.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(message)
        number = value
    else:
        try:
            number = int(value.strip())
        except ValueError:
            raise bad(message) from None
    if not low <= number <= high:
        raise bad(message)
    return number


def min_score(source: Source) -> float | None:
    value = source.one("min_score")
    if value is MISSING:
        return None
    typed = source.typed("min_score")
    message = f"min_score must be a number from -1 to 1 {got(value, typed)}"
    if typed:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(message)
        number = value  # compared before float(): a huge JSON integer does not fit a float
    else:
        try:
            number = float(value)
        except ValueError:
            raise bad(message) from None
    if not -1 <= number <= 1:  # NaN fails this too
        raise bad(message)
    return float(number)


def tags(source: Source) -> list[str]:
    """`tags=a&tags=b`, `tags=a,b` or a JSON list: every one must match."""
    values = [part for value in _strings(source, "tags", MAX_TAGS, limit_each=False) for part in value.split(",")]
    result = normalise_tags(values)
    if len(result) > MAX_TAGS:
        raise bad(f"at most {MAX_TAGS} tags can be given (got {len(result)})")
    for tag in result:
        if len(tag) > MAX_TAG_LENGTH:
            raise bad(f"tags are at most {MAX_TAG_LENGTH} characters each (got one of {len(tag)})")
    return result


def _strings(source: Source, name: str, most: int, limit_each: bool = True) -> list[str]:
    """A repeatable text option (`name=a&name=b`, or a JSON string or list of strings); at most `most`
    values, each without NUL or JSON's lone surrogates (\ud800), which no store can encode."""
    values = []
    for value in source.values(name):
        values.extend(value if isinstance(value, list) else [value])
    if len(values) > most:  # even empty ones: the request is not what the client meant
        raise bad(f"at most {most} {name} values can be given (got {len(values)})")
    for value in values:
        if not isinstance(value, str):  # only JSON can send anything else
            raise bad(f"{name} must be strings {got(value, True)}")
        if limit_each and len(value) > MAX_VALUE_LENGTH:
            raise bad(f"{name} values are at most {MAX_VALUE_LENGTH} characters each (got one of {len(value)})")
        if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
            raise bad(f"{name} may not contain NUL or a lone surrogate (got {json.dumps(value)[:40]})")
    return values


def _day(source: Source, name: str) -> date | None:
    value = source.one(name)
    if value is MISSING:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return parse_day(value.strip())
    except ValueError:
        raise bad(f"{name} must be a date, YYYY-MM-DD {got(value, source.typed(name))}") from None


def filters(source: Source) -> Filters:
    """Every filter option: tags (all of them), taken_from and taken_to (days, inclusive), camera, folder and
    type (repeatable: any of them), min_width and min_height (pixels)."""
    taken_from, taken_to = _day(source, "taken_from"), _day(source, "taken_to")
    if taken_from and taken_to and taken_from > taken_to:
        raise bad(f"taken_from ({taken_from}) is after taken_to ({taken_to})")
    min_width, min_height = (integer(source, name, 0, 0, MAX_SIDE) or None for name in ("min_width", "min_height"))
    return Filters.of(tags=tags(source), taken_from=taken_from, taken_to=taken_to,
                      cameras=_strings(source, "camera", MAX_VALUES), folders=_strings(source, "folder", MAX_VALUES),
                      types=_strings(source, "type", MAX_VALUES), min_width=min_width, min_height=min_height)


def options(source: Source, *, with_min_score: bool = True) -> Options:
    return Options(limit=integer(source, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
                   offset=integer(source, "offset", 0, 0, MAX_OFFSET),
                   filters=filters(source),
                   min_score=min_score(source) if with_min_score else None)


COLLAPSE = ("near", "none")


def collapse(source: Source) -> str | None:
    """`collapse=near`: fold near duplicates of a result into it; `none` (the default): every result apart."""
    value = source.one("collapse")
    if value is MISSING or value == "none":
        return None
    if value != "near":
        raise bad(f"collapse must be near or none {got(value, source.typed('collapse'))}")
    return value


def expand(source: Source) -> int:
    """Average query expansion with the top k results: 0 (off, the default) to MAX_EXPAND."""
    return integer(source, "expand", 0, 0, MAX_EXPAND)


def crop(source: Source) -> tuple[float, float, float, float] | None:
    """A region of the query picture, `x,y,w,h` as fractions of its upright width and height: text
    "0.1,0.2,0.5,0.5" or, in JSON, also an array of four numbers. None when not given."""
    value = source.one("crop")
    if value is MISSING:
        return None
    typed = source.typed("crop")
    message = ("crop must be x,y,w,h: four numbers from 0 to 1, w and h above 0, x + w and y + h at most 1 "
               f"{got(value, typed)}")
    if typed and isinstance(value, list):
        numbers = value
        if any(isinstance(n, bool) or not isinstance(n, (int, float)) for n in numbers):
            raise bad(message)
    elif isinstance(value, str):
        try:
            numbers = [float(part) for part in value.split(",")]
        except ValueError:
            raise bad(message) from None
    else:
        raise bad(message)
    if len(numbers) != 4:
        raise bad(message)
    x, y, w, h = (float(n) if abs(n) < 10 else float("nan") for n in numbers)   # huge JSON integers: refused
    eps = 1e-9
    if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1 and x + w <= 1 + eps
            and y + h <= 1 + eps):   # NaN and infinities fail these too
        raise bad(message)
    return (x, y, min(w, 1 - x), min(h, 1 - y))


def text(source: Source) -> str:
    value = source.one("q")  # only ever in the query string: text
    if value is MISSING:
        return ""
    if len(value) > MAX_QUERY_LENGTH:
        raise bad(f"q is at most {MAX_QUERY_LENGTH} characters (got {len(value)})")
    return value.strip()
