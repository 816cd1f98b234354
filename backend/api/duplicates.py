"""Duplicates: the collection's groups of copies and near copies, and one picture's group."""
from __future__ import annotations

import time

from flask import Blueprint, request

from backend import duplicates

from . import lookalike, params, results
from .errors import ApiError

bp = Blueprint("duplicates", __name__)


def _level_and_score(source: params.Source) -> tuple[str, float | None]:
    level = source.one("level")
    level = duplicates.NEAR if level is params.MISSING else level
    try:
        return level, duplicates.check(level, params.min_score(source))
    except duplicates.BadRequest as exc:
        raise params.bad(str(exc)) from None


def member(m: duplicates.Member, keeper: bool) -> dict:
    """A group member: a result with what a person needs to choose the copy to keep."""
    doc = m.document
    return {**results.result(doc, m.score), "keeper": keeper, "path": doc.path, "bytes": doc.bytes,
            "modified_at": doc.modified_at, "content_hash": doc.content_hash}


def group(g: duplicates.Group) -> dict:
    return {"size": len(g.members), "members": [member(m, m is g.keeper) for m in g.members]}


@bp.get("/api/duplicates")
def report():
    source = params.Source(request.args)
    level, min_score = _level_and_score(source)
    opts = params.options(source, with_min_score=False)
    started = time.perf_counter()
    found = duplicates.find_groups(lookalike().store, level=level, min_score=min_score, filters=opts.filters,
                                   offset=opts.offset, limit=opts.limit)
    return {"query": {"level": level, "min_score": min_score, **opts.filters.echo(), "limit": opts.limit,
                      "offset": opts.offset},
            "groups": [group(g) for g in found.groups], "total": found.total, "pictures": found.pictures,
            "took_ms": round((time.perf_counter() - started) * 1000, 1)}


@bp.get("/api/images/<doc_id>/duplicates")
def of_image(doc_id: str):
    results.check_id(doc_id)
    level, min_score = _level_and_score(params.Source(request.args))
    store = lookalike().store
    if store.get(doc_id) is None:
        raise ApiError(404, "not_found", f"no image with id {doc_id!r}")
    found = duplicates.group_of(store, doc_id, level=level, min_score=min_score)
    return {"query": {"id": doc_id, "level": level, "min_score": min_score},
            "group": None if found is None else group(found)}
