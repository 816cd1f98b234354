"""The search service: by uploaded image, by keywords, and "more like" an indexed image.

It knows nothing of HTTP; the API and the command line both call it. The model is needed only to
search by an uploaded image; "similar" reads the stored vector.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

from .features import FeatureExtractor
from .imaging import Limits, decode
from .stores.base import Page, Store


class NotFound(LookupError):
    """No document has that id."""


class SearchService:
    # Query vectors of recent uploads, by content: "load more" and a changed tag filter send the same
    # picture again, and the model pass (~0.3 s per picture, more under load) is the whole cost of it.
    QUERY_CACHE_SIZE = 128   # 2 KB each

    def __init__(self, store: Store, extractor: Callable[[], FeatureExtractor] | FeatureExtractor,
                 limits: Limits = Limits()):
        self.store = store
        self.limits = limits
        self._extractor = extractor
        self._lock = threading.Lock()
        self._query_vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.query_cache_hits = 0

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
        key = hashlib.sha256(data).digest()
        with self._cache_lock:
            vector = self._query_vectors.get(key)
            if vector is not None:
                self._query_vectors.move_to_end(key)
                self.query_cache_hits += 1
                return vector
        picture = decode(data, self.limits, source=source, draft_size=extractor.spec.image_size).image
        vector = extractor.embed_picture(picture)
        with self._cache_lock:
            self._query_vectors[key] = vector
            while len(self._query_vectors) > self.QUERY_CACHE_SIZE:
                self._query_vectors.popitem(last=False)
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
