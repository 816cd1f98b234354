"""JSON shapes of documents and result pages, shared by the search and image views."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from flask import url_for

from backend.stores.base import Document, Hit, Page

from .errors import ApiError

# Ids are document_id(): 20 hex digits. Anything else cannot name a document.
_ID = re.compile(r"[0-9a-f]{20}")


def check_id(doc_id: str) -> str:
    if not _ID.fullmatch(doc_id):
        raise ApiError(404, "not_found", "no image with that id (ids are 20 hexadecimal digits)")
    return doc_id


def urls(doc_id: str) -> dict:
    return {"image_url": url_for("images.file", doc_id=doc_id),
            "thumbnail_url": url_for("images.thumbnail", doc_id=doc_id)}


def result(doc: Document, score: float) -> dict:
    return {"id": doc.id, "filename": doc.filename, "tags": list(doc.tags), "score": round(score, 6),
            "width": doc.width, "height": doc.height, **doc.photo(), **urls(doc.id)}


def metadata(doc: Document) -> dict:
    """A document without its vector or its server path."""
    return {"id": doc.id, "filename": doc.filename, "tags": list(doc.tags), "width": doc.width,
            "height": doc.height, "bytes": doc.bytes, "content_hash": doc.content_hash,
            "descriptor": doc.descriptor, "indexed_at": doc.indexed_at, "modified_at": doc.modified_at,
            **doc.photo(), **urls(doc.id), "similar_url": url_for("search.similar", doc_id=doc.id)}


@dataclass
class Folded:
    """A page of results with their near duplicates folded in (collapse=near): (hit, its copies), and how
    many documents matched."""
    groups: list[tuple[Hit, list[Hit]]]
    total: int


Found = Page | Folded


def page(query: dict, found: Found, started: float) -> dict:
    """The answer of every search: {"query", "results", "total", "took_ms"}; folded results carry their copies."""
    if isinstance(found, Folded):
        shown = [{**result(hit.document, hit.score), "copies": [result(c.document, c.score) for c in copies]}
                 for hit, copies in found.groups]
    else:
        shown = [result(hit.document, hit.score) for hit in found.hits]
    return {"query": query, "results": shown, "total": found.total,
            "took_ms": round((time.perf_counter() - started) * 1000, 1)}
