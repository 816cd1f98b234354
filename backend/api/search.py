"""Searches: by an uploaded image, by keywords, and "more like this" indexed image; the tag list."""
from __future__ import annotations

import time

from flask import Blueprint, request

from . import lookalike, params, results
from .body import read_image
from .errors import ApiError

bp = Blueprint("search", __name__)


@bp.post("/api/search/image")
def by_image():
    ctx = lookalike()
    body = read_image()
    opts = params.options(params.Source(request.args, body.fields))
    started = time.perf_counter()
    found = ctx.service.by_image(body.data, tags=opts.tags, offset=opts.offset, limit=opts.limit,
                                 min_score=opts.min_score)
    return results.page({"type": "image", **opts.echo()}, found, started)


@bp.get("/api/search")
def by_text():
    ctx = lookalike()
    source = params.Source(request.args)
    words = params.text(source)
    opts = params.options(source, with_min_score=False)
    if not words and not opts.tags:
        raise ApiError(400, "missing_query", "give q (words to look for in file names and tags) or tags")
    started = time.perf_counter()
    found = ctx.service.by_text(words, tags=opts.tags, offset=opts.offset, limit=opts.limit)
    echo = {"type": "text", "q": words, **opts.echo()}
    del echo["min_score"]  # keyword relevance is not a cosine: no min_score here
    return results.page(echo, found, started)


@bp.get("/api/images/<doc_id>/similar")
def similar(doc_id: str):
    ctx = lookalike()
    results.check_id(doc_id)
    opts = params.options(params.Source(request.args))
    started = time.perf_counter()
    found = ctx.service.similar(doc_id, tags=opts.tags, offset=opts.offset, limit=opts.limit,
                                min_score=opts.min_score)
    return results.page({"type": "similar", "id": doc_id, **opts.echo()}, found, started)


@bp.get("/api/tags")
def tags():
    limit = params.integer(params.Source(request.args), "limit", 50, 1, 1000)
    return {"tags": [{"tag": tag, "count": count} for tag, count in lookalike().store.tag_counts(limit)]}
