"""Searches: by an uploaded image, by keywords, and "more like this" indexed image; the tag list."""
from __future__ import annotations

import base64
import binascii
import time

from flask import Blueprint, request

from . import lookalike, params, results
from .errors import ApiError

bp = Blueprint("search", __name__)


def read_image_upload() -> tuple[bytes, object]:
    """The picture's bytes from multipart field `image` or JSON `image_base64`, and the body's other
    fields (for options)."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, "missing_image", "send the picture as the multipart file field 'image'")
        return upload.read(), request.form
    if request.is_json:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # absurdly nested JSON: json raises this, not ValueError
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object such as {\"image_base64\": \"...\"}")
        encoded = body.get("image_base64")
        if not isinstance(encoded, str) or not encoded.strip():
            raise ApiError(400, "missing_image", "image_base64 must be a non-empty base64 string")
        if encoded.startswith("data:") and "," in encoded:  # a data: URL as the browser's FileReader makes
            encoded = encoded.split(",", 1)[1]
        try:
            return base64.b64decode("".join(encoded.split()), validate=True), body
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_base64", "image_base64 is not valid base64") from None
    raise ApiError(415, "unsupported_media_type",
                   "send multipart/form-data with a file field 'image', or application/json with image_base64")


@bp.post("/api/search/image")
def by_image():
    ctx = lookalike()
    data, body = read_image_upload()
    opts = params.options(params.Source(request.args, body))
    started = time.perf_counter()
    found = ctx.service.by_image(data, tags=opts.tags, offset=opts.offset, limit=opts.limit,
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
