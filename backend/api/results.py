"""JSON shapes of documents and result pages, shared by the search and image views."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from flask import url_for

from backend.stores.base import Document, Hit, Label, Page

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


def matched(label: Label | None) -> dict:
    """Why a keyword result matched: its file name or tags, or a content label (named, with its confidence)."""
    if label is None:
        return {"matched": "text"}
    return {"matched": "label", **label.as_json()}


def metadata(doc: Document) -> dict:
    """A document without its vector or its server path."""
    return {"id": doc.id, "filename": doc.filename, "tags": list(doc.tags), "width": doc.width,
            "height": doc.height, "bytes": doc.bytes, "content_hash": doc.content_hash,
            "descriptor": doc.descriptor, "indexed_at": doc.indexed_at, "modified_at": doc.modified_at,
            **doc.photo(), **urls(doc.id), "similar_url": url_for("search.similar", doc_id=doc.id),
            "labels": None if doc.labels is None else [label.as_json() for label in doc.labels]}


@dataclass
class Folded:
    """A page of results with their near duplicates folded in (collapse=near): (hit, its copies), and how
    many documents matched."""
    groups: list[tuple[Hit, list[Hit]]]
    total: int


Found = Page | Folded


def page(query: dict, found: Found, started: float) -> dict:
    """The answer of every search: {"query", "results", "total", "took_ms"}; folded results carry their copies;
    keyword results say what matched."""
    keyword = query.get("type") == "text"

    def shown(hit: Hit) -> dict:
        return {**result(hit.document, hit.score), **(matched(hit.label) if keyword else {})}
    if isinstance(found, Folded):
        results = [{**shown(hit), "copies": [shown(c) for c in copies]} for hit, copies in found.groups]
    else:
        results = [shown(hit) for hit in found.hits]
    return {"query": query, "results": results, "total": found.total,
            "took_ms": round((time.perf_counter() - started) * 1000, 1)}
