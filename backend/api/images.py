"""Indexed images: metadata, the file, a cached thumbnail; adding (upload) and deleting with the API key.

Only paths read from the store are ever opened: a client names a document id, never a path.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import unicodedata
from pathlib import Path

from flask import Blueprint, request, send_file, url_for
from PIL import Image

from backend.imaging import CONTENT_TYPES, decode, read_file, thumbnail_jpeg
from backend.stores.base import Document

from . import lookalike, params, results
from .body import read_image
from .errors import ApiError

bp = Blueprint("images", __name__)

FILE_MAX_AGE = 3600            # files may be re-indexed; the ETag lets browsers revalidate cheaply
THUMBNAIL_MAX_AGE = 86400
MAX_FILENAME_LENGTH = 255
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
               "TIFF": ".tif", "HEIF": ".heic", "AVIF": ".avif"}


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
    try:
        with Image.open(path) as img:  # reads the header only, for the content type
            mimetype = CONTENT_TYPES.get(img.format or "", "application/octet-stream")
    except Exception:  # noqa: BLE001 -- a file that changed since indexing: still serve its bytes
        mimetype = "application/octet-stream"
    return send_file(path, mimetype=mimetype, download_name=doc.filename, conditional=True, etag=True,
                     max_age=FILE_MAX_AGE)


@bp.get("/api/images/<doc_id>/thumbnail")
def thumbnail(doc_id: str):
    ctx = lookalike()
    doc = get_document(doc_id)
    size = ctx.settings.thumbnail_size
    # One JPEG per document, content and size: a changed file gets a new one.
    tag = f"{doc.content_hash[:16]}-{size}"
    cached = ctx.settings.thumbnails_dir / f"{doc.id}-{tag}.jpg"
    if not cached.is_file():
        path = Path(doc.path)
        if not path.is_file():
            raise ApiError(404, "file_missing", "the image is indexed but its file is no longer there")
        picture = decode(read_file(path, ctx.limits), ctx.limits, source=doc.filename, draft_size=size).image
        _write_atomically(cached, thumbnail_jpeg(picture, size))
    return send_file(cached, mimetype="image/jpeg", conditional=True, etag=tag, max_age=THUMBNAIL_MAX_AGE)


@bp.post("/api/images")
def upload():
    require_key()  # before the body is read
    ctx = lookalike()
    body = read_image(named=True)
    tags = params.tags(params.Source(request.args, body.fields))
    # Decode before anything touches the disk: bad bytes answer 413/415/422 and leave nothing behind.
    decoded = decode(body.data, ctx.limits, draft_size=ctx.settings.image_size)
    path = ctx.settings.uploads_dir / (hashlib.sha256(body.data).hexdigest() + _EXTENSIONS[decoded.format])
    existed = path.is_file()
    if not existed:
        _write_atomically(path, body.data)
    try:
        # The file is named by its content hash; the document by the client's name, for keyword search.
        doc = ctx.indexer.index_file(path, tags, filename=_client_filename(body.filename, path.name))
    except BaseException:
        if not existed:
            path.unlink(missing_ok=True)
        raise
    response = results.metadata(doc)
    return response, (200 if existed else 201), {"Location": url_for("images.metadata", doc_id=doc.id)}


def _client_filename(name: str | None, fallback: str) -> str:
    """The client's file name made safe to show: its last path part, without control characters (or
    JSON's lone surrogates), at most 255 characters; `fallback` when nothing is left."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs")).strip()
    return name[:MAX_FILENAME_LENGTH] if name not in ("", ".", "..") else fallback


@bp.delete("/api/images/<doc_id>")
def delete(doc_id: str):
    require_key()
    ctx = lookalike()
    doc = get_document(doc_id)
    ctx.store.delete([doc.id])
    for cached in ctx.settings.thumbnails_dir.glob(f"{doc.id}-*.jpg"):
        cached.unlink(missing_ok=True)
    # Uploads are ours to remove; files indexed from the user's folders are left alone.
    path = Path(doc.path)
    if path.parent == ctx.settings.uploads_dir.resolve():
        path.unlink(missing_ok=True)
    return {"id": doc.id, "deleted": True}


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers (other threads, other workers) see the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
