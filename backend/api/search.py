"""Searches: by an uploaded image, by keywords, "more like this" indexed image, refining from marked
images ("more like these, less like those"); the tag list."""
from __future__ import annotations

import time

from flask import Blueprint, request

from backend import duplicates
from backend.feedback import MAX_MARKED

from . import lookalike, params, results
from .body import image_base64, json_object, read_image
from .errors import ApiError

bp = Blueprint("search", __name__)


@bp.post("/api/search/image")
def by_image():
    ctx = lookalike()
    body = read_image()
    source = params.Source(request.args, body.fields)
    opts, crop, expand = params.options(source), params.crop(source), params.expand(source)
    collapse = params.collapse(source)
    started = time.perf_counter()
    found = _collapsed(collapse, opts, lambda offset, limit: ctx.service.by_image(
        body.data, filters=opts.filters, offset=offset, limit=limit, min_score=opts.min_score, crop=crop,
        expand=expand))
    return results.page({"type": "image", **opts.echo(), "crop": _echo_crop(crop), "expand": expand,
                         "collapse": collapse}, found, started)


def _collapsed(collapse: str | None, opts: params.Options, search) -> results.Found:
    """search(offset, limit) as asked, or with collapse=near a page of results whose near duplicates are folded
    into them (offset and limit then count folded results)."""
    if collapse is None:
        return search(opts.offset, opts.limit)
    groups, total = duplicates.collapsed_page(search, opts.offset, opts.limit)
    return results.Folded(groups, total)


def _echo_crop(crop):
    return None if crop is None else [round(v, 6) for v in crop]


@bp.get("/api/search")
def by_text():
    ctx = lookalike()
    source = params.Source(request.args)
    words = params.text(source)
    opts = params.options(source, with_min_score=False)
    if not words and not opts.filters:
        raise ApiError(400, "missing_query", "give q (words to look for in file names and tags), or tags or another "
                                             "filter (GET /api/images lists every image)")
    collapse = params.collapse(source)
    started = time.perf_counter()
    found = _collapsed(collapse, opts, lambda offset, limit: ctx.service.by_text(words, filters=opts.filters,
                                                                                 offset=offset, limit=limit))
    echo = {"type": "text", "q": words, **opts.echo(), "collapse": collapse}
    del echo["min_score"]  # keyword relevance is not a cosine: no min_score here
    return results.page(echo, found, started)


@bp.get("/api/images/<doc_id>/similar")
def similar(doc_id: str):
    ctx = lookalike()
    results.check_id(doc_id)
    source = params.Source(request.args)
    opts, crop, expand = params.options(source), params.crop(source), params.expand(source)
    collapse = params.collapse(source)
    started = time.perf_counter()
    found = _collapsed(collapse, opts, lambda offset, limit: ctx.service.similar(
        doc_id, filters=opts.filters, offset=offset, limit=limit, min_score=opts.min_score, crop=crop, expand=expand))
    return results.page({"type": "similar", "id": doc_id, **opts.echo(), "crop": _echo_crop(crop),
                         "expand": expand, "collapse": collapse}, found, started)


REFINE_KEYS = ("positive", "negative", "image_base64", "crop", "collapse")


@bp.post("/api/search/refine")
def refine():
    ctx = lookalike()
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       'send application/json such as {"positive": ["<id>"], "negative": ["<id>"]}')
    body = json_object('{"positive": ["<id>"], "negative": ["<id>"]}')
    params.refuse_unknown("JSON key", body, (*REFINE_KEYS, *params.QUERY_PARAMETERS["search.refine"]))
    positive, negative = _ids(body, "positive"), _ids(body, "negative")
    both = sorted(set(positive) & set(negative))
    if both:
        raise params.bad(f"an image cannot be both positive and negative (got {both[0][:40]!r} in both)")
    if len(positive) + len(negative) > MAX_MARKED:
        raise params.bad(f"at most {MAX_MARKED} positive and negative ids together "
                         f"(got {len(positive) + len(negative)})")
    image = image_base64(body["image_base64"]) if "image_base64" in body else None
    if not positive and image is None:
        raise ApiError(400, "missing_positive",
                       "give at least one positive: an id in positive, or a picture in image_base64")
    source = params.Source(request.args, body)
    opts, crop, expand = params.options(source), params.crop(source), params.expand(source)
    collapse = params.collapse(source)
    if crop is not None and image is None:
        raise params.bad("crop applies to the picture in image_base64, and none is given")
    started = time.perf_counter()
    found = _collapsed(collapse, opts, lambda offset, limit: ctx.service.refine(
        positive, negative, image=image, crop=crop, filters=opts.filters, offset=offset, limit=limit,
        min_score=opts.min_score, expand=expand))
    return results.page({"type": "refine", "positive": positive, "negative": negative, "image": image is not None,
                         **opts.echo(), "crop": _echo_crop(crop), "expand": expand, "collapse": collapse},
                        found, started)


def _ids(body: dict, name: str) -> list[str]:
    """A JSON array of image ids (repeats dropped, order kept); strings that are not ids are unknown (404)."""
    value = body.get(name, [])
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise params.bad(f"{name} must be an array of image ids (strings) {params.got(value, True)}")
    if len(value) > MAX_MARKED:
        raise params.bad(f"at most {MAX_MARKED} positive and negative ids together (got {len(value)} in {name})")
    return list(dict.fromkeys(value))


@bp.get("/api/tags")
def tags():
    limit = params.integer(params.Source(request.args), "limit", 50, 1, 1000)
    return {"tags": [{"tag": tag, "count": count} for tag, count in lookalike().store.tag_counts(limit)]}
