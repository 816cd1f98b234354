"""Stores: the contract (base.py) and its backends. `open_store` picks the configured one."""
from __future__ import annotations

from .base import (BACKENDS, DescriptorMismatch, Document, Entry, Hit, InvalidVector, Page, Store, StoreError,
                   StoreUnavailable, document_id, search_words)

__all__ = ["BACKENDS", "DescriptorMismatch", "Document", "Entry", "Hit", "InvalidVector", "Page", "Store",
           "StoreError", "StoreUnavailable", "document_id", "open_store", "search_words"]


def load_native_libraries() -> None:
    """Load the native libraries the stores use before a library that bundles its own copy is imported: the
    first copy loaded serves the whole process. (TensorFlow carries a SQLite without FTS5; the embedded
    store, imported after it, would fail with "no such module: fts5".)"""
    import sqlite3  # noqa: F401


def open_store(settings) -> Store:
    """The store named by settings.store: 'embedded' or an Elasticsearch URL."""
    if settings.uses_elasticsearch:
        from .elastic import ElasticStore  # the client is imported only when it is used
        return ElasticStore.from_settings(settings)
    from .embedded import EmbeddedStore
    return EmbeddedStore(settings.embedded_path)
