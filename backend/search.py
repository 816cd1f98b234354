"""The search service: by uploaded image, by keywords, and "more like" an indexed image.

It knows nothing of HTTP; the API and the command line both call it. The model is needed only to
search by an uploaded image; "similar" reads the stored vector.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .features import DIMS, FeatureExtractor
from .imaging import Limits, decode, one_picture
from .stores.base import Page, Store


log = logging.getLogger(__name__)


class NotFound(LookupError):
    """No document has that id."""


class QueryVectorCache:
    """Query vectors of recent uploads, by descriptor and content hash, in files that every worker of
    a server shares. "Load more" and a changed tag filter send the same picture again, to any worker,
    and the model pass (~0.3 s per picture, more under load) is the whole cost of such a search."""

    def __init__(self, folder: Path, keep: int = 2000):
        self.folder = Path(folder)
        self.keep = keep            # files kept (2 KB each); older ones are removed now and then
        self.hits = 0               # in this process, for tests and logs
        self._writes = 0
        self._warned = False        # one warning per process, not one per search

    def path(self, descriptor: str, data: bytes) -> Path:
        """Where the vector of these bytes under this descriptor is kept: the key of get and put."""
        return self.folder / descriptor / f"{hashlib.sha256(data).hexdigest()}.f32"

    def get(self, path: Path) -> np.ndarray | None:
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if len(raw) != DIMS * 4:       # not ours: ignore it
            return None
        self.hits += 1
        return np.frombuffer(raw, dtype=np.float32).copy()

    def put(self, path: Path, vector: np.ndarray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(np.asarray(vector, dtype=np.float32).tobytes())
            os.replace(tmp, path)       # readers see the whole file or none
            self._writes += 1
            if self._writes % 100 == 0:
                self._prune(path.parent)
        except OSError as exc:          # a full or read-only disk costs speed, never a search
            if not self._warned:
                self._warned = True
                log.warning("query vector cache: cannot write %s: %s (next pages of image searches will "
                            "run the model again)", path, exc)

    def _prune(self, folder: Path) -> None:
        entries = sorted(os.scandir(folder), key=lambda e: e.stat().st_mtime, reverse=True)
        for entry in entries[self.keep:]:
            Path(entry.path).unlink(missing_ok=True)


class SearchService:
    def __init__(self, store: Store, extractor: Callable[[], FeatureExtractor] | FeatureExtractor,
                 limits: Limits = Limits(), query_cache: QueryVectorCache | None = None):
        self.store = store
        self.limits = limits
        self.query_cache = query_cache
        self._extractor = extractor
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, store: Store) -> "SearchService":
        return cls(store, lambda: FeatureExtractor.from_settings(settings),
                   Limits(settings.max_image_bytes, settings.max_image_pixels))

    @property
    def extractor(self) -> FeatureExtractor:
        with self._lock:  # built once, even when the first requests arrive together
            if not isinstance(self._extractor, FeatureExtractor):
                self._extractor = self._extractor()
            return self._extractor

    @property
    def model_loaded(self) -> bool:
        return isinstance(self._extractor, FeatureExtractor)

    def by_image(self, data: bytes, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 24,
                 min_score: float | None = None, source: str = "upload") -> Page:
        """Raises ImageError for bytes that are not an image we can decode."""
        extractor = self.extractor
        vector = self._query_vector(data, source, extractor)
        return self.store.knn(vector, descriptor=extractor.descriptor_id, tags=tags, offset=offset, limit=limit,
                              min_score=min_score)

    def _query_vector(self, data: bytes, source: str, extractor: FeatureExtractor) -> np.ndarray:
        cache = self.query_cache
        key = cache.path(extractor.descriptor_id, data) if cache else None
        vector = cache.get(key) if key else None
        if vector is None:
            picture = decode(data, self.limits, source=source, draft_size=extractor.spec.image_size).image
            with one_picture(source):
                pixels = extractor.prepare(picture)
            vector = extractor.embed([pixels])[0]
            if key:
                cache.put(key, vector)
        return vector

    def by_text(self, text: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 24) -> Page:
        return self.store.keyword(text, tags=tags, offset=offset, limit=limit)

    def similar(self, doc_id: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 24,
                min_score: float | None = None) -> Page:
        doc = self.store.get(doc_id, with_vector=True)
        if doc is None:
            raise NotFound(doc_id)
        return self.store.knn(doc.vector, descriptor=doc.descriptor, tags=tags, offset=offset, limit=limit,
                              exclude=[doc_id], min_score=min_score)
