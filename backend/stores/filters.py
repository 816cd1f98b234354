"""What narrows a search or a listing, defined once for every store and every endpoint.

`Filters` crosses the store contract (knn, keyword, browse, facets); the API builds it from request
parameters (backend/api/params.py), and each store translates it: Elasticsearch into a bool filter (inside
the kNN), the embedded store into SQL that picks the eligible rows before anything is ranked. Every
condition given must hold; the values of one repeatable condition are alternatives (camera=A&camera=B:
either camera). An unknown value is not an error: it matches nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, timedelta

from .base import normalise_tags

# A date as the filters take it: YYYY-MM-DD (the day the picture was taken, on the camera's clock).
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> date:
    """A YYYY-MM-DD date; ValueError otherwise."""
    if not _DATE.fullmatch(text):
        raise ValueError(text)
    return date.fromisoformat(text)


def normalise_camera(text: str) -> str:
    """Cameras are matched case-insensitively with runs of white space folded (as tags are)."""
    return " ".join(text.split()).lower()


def normalise_folder(text: str) -> str:
    """A folder as stored: relative, '/'-separated, no leading, trailing or doubled slashes ('' is the root)."""
    return "/".join(part for part in text.replace("\\", "/").split("/") if part and part != ".")


@dataclass(frozen=True)
class Filters:
    tags: tuple[str, ...] = ()            # every tag (normalised)
    taken_from: date | None = None        # taken on this day or later (documents without a date: excluded)
    taken_to: date | None = None          # taken on this day or earlier
    cameras: tuple[str, ...] = ()         # any of: a camera's full name ("canon eos 5d") or its make ("canon")
    folders: tuple[str, ...] = ()         # any of: the folder or anything under it ('' is every folder)
    types: tuple[str, ...] = ()           # any of: file types as documents name them (jpeg, png, ...)
    min_width: int | None = None          # upright width in pixels, at least
    min_height: int | None = None

    @classmethod
    def of(cls, *, tags=(), taken_from: date | None = None, taken_to: date | None = None, cameras=(), folders=(),
           types=(), min_width: int | None = None, min_height: int | None = None) -> "Filters":
        """Filters with every value normalised (the stores compare normalised values only)."""
        return cls(tags=tuple(normalise_tags(tags)), taken_from=taken_from, taken_to=taken_to,
                   cameras=tuple(sorted({normalise_camera(c) for c in cameras} - {""})),
                   folders=tuple(sorted({normalise_folder(f) for f in folders})),
                   types=tuple(sorted({t.strip().lower() for t in types} - {""})),
                   min_width=min_width, min_height=min_height)

    def __bool__(self) -> bool:
        return bool(self.tags or self.taken_from or self.taken_to or self.cameras or self.folders or self.types
                    or self.min_width or self.min_height)

    @property
    def only_tags(self) -> bool:
        """Whether tags are the only condition (the stores have a faster path for those)."""
        return replace(self, tags=()) == NONE

    @property
    def everywhere(self) -> bool:
        """A folder filter that includes the root matches every document with a folder."""
        return "" in self.folders

    def matches(self, doc) -> bool:
        """Whether a Document meets the filters, in Python: for what filters a list already read (the
        duplicates report's members); the stores answer the same in SQL and in Elasticsearch queries."""
        low, high = self.taken_range()
        camera, make = doc.camera, doc.camera_make
        return (set(self.tags) <= set(normalise_tags(doc.tags))
                and (low is None or (doc.taken is not None and doc.taken >= low))
                and (high is None or (doc.taken is not None and doc.taken < high))
                and (not self.cameras or (camera is not None and normalise_camera(camera) in self.cameras)
                     or (make is not None and normalise_camera(make) in self.cameras))
                and (not self.folders or (doc.folder is not None and (self.everywhere or any(
                    doc.folder == f or doc.folder.startswith(f + "/") for f in self.folders))))
                and (not self.types or doc.file_type in self.types)
                and (not self.min_width or doc.width >= self.min_width)
                and (not self.min_height or doc.height >= self.min_height))

    def taken_range(self) -> tuple[str | None, str | None]:
        """The bounds on the stored local time ('YYYY-MM-DDTHH:MM:SS'): from inclusive, to exclusive."""
        low = f"{self.taken_from.isoformat()}T00:00:00" if self.taken_from else None
        high = None
        if self.taken_to:
            # the day after, exclusive; the last representable day has no day after (every time is before it)
            high = (f"{(self.taken_to + timedelta(days=1)).isoformat()}T00:00:00" if self.taken_to < date.max
                    else "9999-12-31T23:59:60")
        return low, high

    def echo(self) -> dict:
        """The filters as the API echoes them in a result page's query: tags always, the others when given
        (the file types as file_type: `type` there is the kind of search)."""
        given = {"taken_from": self.taken_from.isoformat() if self.taken_from else None,
                 "taken_to": self.taken_to.isoformat() if self.taken_to else None,
                 "camera": list(self.cameras), "folder": list(self.folders), "file_type": list(self.types),
                 "min_width": self.min_width, "min_height": self.min_height}
        return {"tags": list(self.tags), **{name: value for name, value in given.items() if value}}

NONE = Filters()



def combined(filters: Filters | None, tags=()) -> Filters:
    """`filters` with `tags` added (the stores' knn and keyword take both: tags came first)."""
    filters = filters or NONE
    if not tags:
        return filters
    return replace(filters, tags=tuple(normalise_tags([*filters.tags, *tags])))
