"""Indexed images: metadata, the file, a cached thumbnail; adding (upload) and deleting with the API key.

Only paths read from the store are ever opened: a client names a document id, never a path.
"""
from __future__ import annotations

import hmac
from pathlib import Path

from flask import Blueprint, request, send_file, url_for

from backend.imaging import content_type
from backend.stores.base import Document

from . import lookalike, params, results
from .body import json_object, read_image
from .errors import ApiError
from .params import bad, refuse_unknown

bp = Blueprint("images", __name__)

FILE_MAX_AGE = 3600            # files may be re-indexed; the ETag lets browsers revalidate cheaply
THUMBNAIL_MAX_AGE = 86400


def get_document(doc_id: str) -> Document:
    doc = lookalike().store.get(results.check_id(doc_id))
    if doc is None:
        raise ApiError(404, "not_found", f"no image with id {doc_id!r}")
    return doc


def require_key() -> None:
    """Writes need `Authorization: Bearer <LOOKALIKE_API_KEY>`; with no key configured they are off."""
    key = lookalike().settings.api_key
    if not key:
        raise ApiError(403, "write_disabled",
                       "adding and deleting images is disabled on this server (no LOOKALIKE_API_KEY is set)")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "unauthorized", "send the API key as 'Authorization: Bearer <key>'",
                       {"WWW-Authenticate": 'Bearer realm="lookalike"'})


@bp.get("/api/images/<doc_id>")
def metadata(doc_id: str):
    return results.metadata(get_document(doc_id))


@bp.get("/api/images/<doc_id>/file")
def file(doc_id: str):
    doc = get_document(doc_id)
    path = Path(doc.path)
    if not path.is_file():
        raise ApiError(404, "file_missing", "the image is indexed but its file is no longer there")
    return send_file(path, mimetype=content_type(path, lookalike().limits), download_name=doc.filename,
                     conditional=True, etag=True, max_age=FILE_MAX_AGE)


@bp.get("/api/images/<doc_id>/thumbnail")
def thumbnail(doc_id: str):
    cached, tag = lookalike().uploads.thumbnail(get_document(doc_id))
    return send_file(cached, mimetype="image/jpeg", conditional=True, etag=tag, max_age=THUMBNAIL_MAX_AGE)


@bp.post("/api/images")
def upload():
    require_key()  # before the body is read
    body = read_image(named=True)
    tags = params.tags(params.Source(request.args, body.fields))
    doc, created = lookalike().uploads.add(body.data, tags, filename=body.filename)
    response = results.metadata(doc)
    return response, (201 if created else 200), {"Location": url_for("images.metadata", doc_id=doc.id)}


@bp.put("/api/images/<doc_id>/tags")
def set_tags(doc_id: str):
    """Replace an image's tags (the page adds a suggested label this way); its vector and labels stay."""
    require_key()
    body = json_object('{"tags": ["horse", "field"]}')
    refuse_unknown("JSON key", body, ("tags",))
    if "tags" not in body:
        raise bad("send the image's tags as JSON {\"tags\": [...]}")
    doc = lookalike().uploads.set_tags(get_document(doc_id), params.tags(params.Source(request.args, body)))
    if doc is None:
        raise ApiError(404, "not_found", f"no image with id {doc_id!r}")
    return results.metadata(doc)


@bp.delete("/api/images/<doc_id>")
def delete(doc_id: str):
    require_key()
    doc = get_document(doc_id)
    lookalike().uploads.delete(doc)
    return {"id": doc.id, "deleted": True}
