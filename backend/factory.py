"""One factory for the engine: the store, the model, the search service and ingestion, built the same way
for the API, the command line and the benchmarks that run the product end to end (the benchmarks of one
part alone, such as the bare indexer or ranking over a synthetic store, build just that part)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .classifier import LABELS_NETWORK, LABELS_SIDE, Classifier
from .config import Settings
from .features import FeatureExtractor
from .imaging import Limits
from .ingest import Indexer, Uploads
from .search import QueryVectorCache, SearchService
from .stores import Store, open_store


@dataclass
class Engine:
    """Everything that reads and writes one store, sharing one model (built on first use)."""
    settings: Settings
    store: Store
    service: SearchService
    indexer: Indexer
    uploads: Uploads

    @property
    def limits(self) -> Limits:
        return self.service.limits

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_engine(settings: Settings, *, store: Store | None = None, extractor: FeatureExtractor | None = None,
                on_model: Callable[[FeatureExtractor], None] | None = None,
                share_query_vectors: bool = False) -> Engine:
    """The engine for `settings`. store: use this one instead of the configured one. extractor: use this
    model instead of building one from the settings (tests share a single model this way). on_model:
    called with the model once it is built. share_query_vectors: keep the vectors of uploaded query
    pictures in the data folder, for every worker of a server (QueryVectorCache)."""
    store = store if store is not None else open_store(settings)
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)

    def build() -> FeatureExtractor:
        model = FeatureExtractor.from_settings(settings)
        if on_model is not None:
            on_model(model)
        return model

    query_cache = QueryVectorCache(settings.query_cache_dir) if share_query_vectors else None
    service = SearchService(store, extractor if extractor is not None else build, limits, query_cache)
    # The indexer shares the service's model: one per process.
    indexer = Indexer(store, lambda: service.extractor, limits, settings.batch_size,
                      classifier=(lambda: Classifier(LABELS_NETWORK, service.extractor.precision, settings.model_cache,
                                                     LABELS_SIDE))
                      if settings.labels else None)
    # JPEGs are decoded at about the larger input of the two networks
    draft = max(settings.image_size, LABELS_SIDE) if settings.labels else settings.image_size
    uploads = Uploads(indexer, settings.uploads_dir, settings.thumbnails_dir, image_size=draft,
                      thumbnail_size=settings.thumbnail_size)
    return Engine(settings, store, service, indexer, uploads)
