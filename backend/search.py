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

from . import feedback
from .features import DIMS, FeatureExtractor, WeightsError, l2_normalise
from .filelock import write_atomically
from .imaging import Limits, decode, one_picture, read_file
from .stores.base import Hit, Page, Store
from .stores.filters import Filters, combined

# A region of a picture: (x, y, width, height) as fractions of the upright picture's sides.
Crop = tuple[float, float, float, float]


log = logging.getLogger(__name__)


class NotFound(LookupError):
    """No document has that id (args: every id that is unknown)."""


class FileMissing(LookupError):
    """The document is indexed, but its file (needed to crop it) is gone."""


def crop_picture(picture, crop: Crop | None):
    """The region `crop` of an upright picture (at least one pixel each way)."""
    if crop is None:
        return picture
    x, y, w, h = crop
    width, height = picture.size
    left, top = min(width - 1, int(x * width)), min(height - 1, int(y * height))
    right = max(left + 1, min(width, round((x + w) * width)))
    bottom = max(top + 1, min(height, round((y + h) * height)))
    return picture.crop((left, top, right, bottom))


def _draft_size(size: int, crop: Crop | None) -> int:
    """JPEG draft decoding at a scale that still leaves a cropped region `size` pixels across."""
    return size if crop is None else int(np.ceil(size / max(1e-3, min(crop[2], crop[3]))))


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
            write_atomically(path, np.asarray(vector, dtype=np.float32).tobytes())
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
    """The searches. The model is built on first use, or at once by load_model(); a model that cannot be
    loaded there is a state of the service: `model_error` says why, and every search that needs the
    model raises that WeightsError again, while the others go on."""

    def __init__(self, store: Store, extractor: Callable[[], FeatureExtractor] | FeatureExtractor,
                 limits: Limits = Limits(), query_cache: QueryVectorCache | None = None):
        self.store = store
        self.limits = limits
        self.query_cache = query_cache
        self.model_error: str | None = None    # why load_model() could not load the model
        self._extractor = extractor
        self._lock = threading.Lock()

    @property
    def extractor(self) -> FeatureExtractor:
        with self._lock:  # built once, even when the first requests arrive together
            if self.model_error is not None:
                raise WeightsError(self.model_error)
            if not isinstance(self._extractor, FeatureExtractor):
                self._extractor = self._extractor()
            return self._extractor

    @property
    def model_loaded(self) -> bool:
        return isinstance(self._extractor, FeatureExtractor)

    def load_model(self) -> FeatureExtractor | None:
        """Build the model now; None when it cannot be loaded (model_error then says why, for good)."""
        try:
            return self.extractor
        except WeightsError as exc:
            self.model_error = str(exc)
            return None

    def by_image(self, data: bytes, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 24,
                 min_score: float | None = None, source: str = "upload", crop: Crop | None = None,
                 expand: int = 0, filters: Filters | None = None) -> Page:
        """Raises ImageError for bytes that are not an image we can decode. crop: search by that region
        of the (upright) picture only; expand: average query expansion with the top `expand` results.
        tags and filters: what every result meets (every search takes them)."""
        filters = combined(filters, tags)
        extractor = self.extractor
        vector = self._query_vector(data, source, extractor, crop)
        vector = self._expanded(vector, expand, extractor.descriptor_id, filters, ())
        return self.store.knn(vector, descriptor=extractor.descriptor_id, filters=filters, offset=offset,
                              limit=limit, min_score=min_score)

    def _query_vector(self, data: bytes, source: str, extractor: FeatureExtractor,
                      crop: Crop | None = None) -> np.ndarray:
        cache = self.query_cache
        key = None
        if cache:
            key = cache.path(extractor.descriptor_id, data if crop is None else data + repr(crop).encode())
        vector = cache.get(key) if cache and key else None
        if vector is None:
            size = extractor.spec.image_size
            picture = decode(data, self.limits, source=source, draft_size=_draft_size(size, crop)).image
            with one_picture(source):
                pixels = extractor.prepare(crop_picture(picture, crop))
            vector = extractor.embed([pixels])[0]
            if cache and key:
                cache.put(key, vector)
        return vector

    def _expanded(self, vector: np.ndarray, k: int, descriptor: str, filters: Filters,
                  exclude: Sequence[str]) -> np.ndarray:
        """Average query expansion: the query plus its top k neighbours, renormalised (k = 0: as is)."""
        if k <= 0:
            return vector
        top = [h.document.id for h in self.store.knn(vector, descriptor=descriptor, filters=filters, limit=k,
                                                      exclude=exclude).hits]
        if not top:
            return vector
        found = self.store.vectors(top)
        return l2_normalise(vector + np.sum([found[i] for i in top if i in found], axis=0))

    def by_text(self, text: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 24,
                filters: Filters | None = None) -> Page:
        return self.store.keyword(text, filters=combined(filters, tags), offset=offset, limit=limit)

    def similar(self, doc_id: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 24,
                min_score: float | None = None, crop: Crop | None = None, expand: int = 0,
                filters: Filters | None = None) -> Page:
        """More like an indexed image: its stored vector, or with `crop` the vector of that region of its
        file (decoded from its stored path: the model runs). The image itself is left out."""
        doc = self.store.get(doc_id, with_vector=True)
        if doc is None:
            raise NotFound(doc_id)
        vector, descriptor = np.asarray(doc.vector), doc.descriptor   # read with its vector
        if crop is not None:
            extractor = self.extractor
            if not Path(doc.path).is_file():
                raise FileMissing(doc_id)
            vector = self._query_vector(read_file(Path(doc.path), self.limits), doc.filename, extractor, crop)
            descriptor = extractor.descriptor_id
        filters = combined(filters, tags)
        vector = self._expanded(vector, expand, descriptor, filters, [doc_id])
        return self.store.knn(vector, descriptor=descriptor, filters=filters, offset=offset, limit=limit,
                              exclude=[doc_id], min_score=min_score)

    def refine(self, positive: Sequence[str] = (), negative: Sequence[str] = (), *, image: bytes | None = None,
               crop: Crop | None = None, tags: Sequence[str] = (), offset: int = 0, limit: int = 24,
               min_score: float | None = None, expand: int = 0, method: str = feedback.METHOD,
               filters: Filters | None = None) -> Page:
        """More like the positives (indexed ids, and an uploaded picture if given), less like the
        negatives; every marked image is left out of the results. Raises NotFound naming every unknown
        id. min_score applies to the cosine similarity with the combined query vector."""
        filters = combined(filters, tags)
        marked = list(dict.fromkeys([*positive, *negative]))
        found = self.store.vectors(marked)
        missing = [i for i in marked if i not in found]
        if missing:
            raise NotFound(*missing)
        positives = [found[i] for i in positive]
        if image is not None:
            extractor = self.extractor
            positives.append(self._query_vector(image, "upload", extractor, crop))
            descriptor = extractor.descriptor_id
        else:   # the store holds the marked ids' vectors, so it is bound to a descriptor
            descriptor = self.store.descriptor() or ""
        pos = np.stack(positives).astype(np.float32)
        neg = np.stack([found[i] for i in negative]).astype(np.float32) if negative else np.zeros((0, pos.shape[1]),
                                                                                                  np.float32)
        query = self._expanded(feedback.rocchio(pos, neg), expand, descriptor, filters, marked)
        if method == "rocchio":
            return self.store.knn(query, descriptor=descriptor, filters=filters, offset=offset, limit=limit,
                                  exclude=marked, min_score=min_score)
        # The other methods re-rank the query vector's top CANDIDATES; past them, the kNN order goes on.
        pool = self.store.knn(query, descriptor=descriptor, filters=filters, limit=feedback.CANDIDATES, exclude=marked,
                              min_score=min_score)
        if not pool.hits:
            return pool
        vectors = self.store.vectors([h.document.id for h in pool.hits])
        candidates = np.stack([vectors[h.document.id] for h in pool.hits])
        if method == "fusion":
            scores = feedback.fusion_scores(candidates, pos, neg)
        elif method == "classifier":
            far = self.store.knn(-query, descriptor=descriptor, filters=filters, limit=feedback.PSEUDO_NEGATIVES,
                                 exclude=marked).hits
            far_vectors = self.store.vectors([h.document.id for h in far])
            pseudo = np.array([far_vectors[h.document.id] for h in far if h.document.id in far_vectors],
                              np.float32).reshape(-1, pos.shape[1])
            scores = feedback.classifier_scores(candidates, pos, np.concatenate([neg, pseudo]))
        else:
            raise ValueError(f"unknown feedback method {method!r}")
        order = np.argsort(-scores, kind="stable")
        hits = [Hit(pool.hits[i].document, float(scores[i])) for i in order[offset:offset + limit]]
        if offset + limit > len(pool.hits) and pool.total > len(pool.hits):
            start = max(offset, len(pool.hits))
            hits += self.store.knn(query, descriptor=descriptor, filters=filters, offset=start,
                                   limit=offset + limit - start, exclude=marked, min_score=min_score).hits
        return Page(hits, pool.total)
