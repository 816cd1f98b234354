"""One settings object, read from the environment (12-factor).

Every variable is documented in README.md ("Configuration"); the defaults here are the documented ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping


# dense_vector HNSW index types: float, int8- / int4-quantised, better binary quantisation.
ES_INDEX_TYPES = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _default_model_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike" / "models"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lookalike"


@dataclass(frozen=True)
class Settings:
    # Where documents live: "embedded" (SQLite under data_dir) or an Elasticsearch URL.
    store: str = "embedded"
    data_dir: Path = field(default_factory=_default_data_dir)
    # "imagenet" lets Keras download the weights; a path loads a local .h5 file;
    # "random" builds a seeded, untrained network (tests and demos only).
    vgg16_weights: str = "imagenet"
    # The descriptor: how conv5 is pooled and at what input size (see docs/benchmarks.md).
    pooling: str = "gem"
    image_size: int = 336
    square: bool = False
    batch_size: int = 16
    # Numeric precision of the model (backend/precision.py) and where converted models are kept.
    precision: str = "auto"
    model_cache: Path = field(default_factory=_default_model_cache)
    # Safety limits for decoding files and uploads.
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    # API.
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    thumbnail_size: int = 256
    # Elasticsearch.
    es_index: str = "lookalike"
    es_num_candidates: int = 200
    es_timeout: float = 30.0
    es_wait: float = 60.0               # how long start-up waits for the cluster (health yellow)
    es_index_type: str = "hnsw"         # dense_vector index_options.type (docs/elasticsearch.md)
    es_hnsw_m: int = 16
    es_hnsw_ef_construction: int = 100
    es_api_key: str | None = None       # for a cluster with security enabled
    es_ca_certs: str | None = None      # CA bundle for https:// with a private CA

    @property
    def uses_elasticsearch(self) -> bool:
        return self.store.startswith(("http://", "https://"))

    @property
    def embedded_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def query_cache_dir(self) -> Path:
        return self.data_dir / "query-vectors"

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        defaults = cls()

        def get(name: str, default):
            value = env.get(f"LOOKALIKE_{name}")
            if value is None or value.strip() == "":
                return default
            value = value.strip()
            try:
                if isinstance(default, bool):
                    if value.lower() in ("1", "true", "yes", "on"):
                        return True
                    if value.lower() in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(value)
                if isinstance(default, (int, float)):
                    number = type(default)(value)
                    if number <= 0:
                        raise ValueError(value)
                    return number
            except ValueError:
                raise ConfigError(
                    f"LOOKALIKE_{name}={value!r} is not valid: expected a positive "
                    f"{type(default).__name__}") from None
            return value

        store = get("STORE", defaults.store)
        if store != "embedded" and not store.startswith(("http://", "https://")):
            raise ConfigError(f"LOOKALIKE_STORE={store!r} is not valid: use 'embedded' or an "
                              "Elasticsearch URL such as http://localhost:9200")

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = get(name, default)
            if value not in allowed:
                raise ConfigError(f"LOOKALIKE_{name}={value!r} is not valid: use one of {', '.join(allowed)}")
            return value

        from backend.features import POOLINGS  # the list lives next to its implementations
        from backend.precision import PRECISIONS
        pooling = choice("POOLING", defaults.pooling, POOLINGS)
        precision = choice("PRECISION", defaults.precision, PRECISIONS)
        es_index_type = choice("ES_INDEX_TYPE", defaults.es_index_type, ES_INDEX_TYPES)
        api_key = get("API_KEY", None)
        cors = get("CORS_ORIGINS", "")
        return cls(
            store=store,
            data_dir=Path(get("DATA_DIR", str(defaults.data_dir))).expanduser(),
            vgg16_weights=get("VGG16_WEIGHTS", defaults.vgg16_weights),
            pooling=pooling,
            image_size=get("IMAGE_SIZE", defaults.image_size),
            square=get("SQUARE", defaults.square),
            batch_size=get("BATCH_SIZE", defaults.batch_size),
            precision=precision,
            model_cache=Path(get("MODEL_CACHE", str(defaults.model_cache))).expanduser(),
            max_image_bytes=get("MAX_IMAGE_BYTES", defaults.max_image_bytes),
            max_image_pixels=get("MAX_IMAGE_PIXELS", defaults.max_image_pixels),
            api_key=api_key,
            cors_origins=tuple(o.strip() for o in cors.split(",") if o.strip()),
            thumbnail_size=get("THUMBNAIL_SIZE", defaults.thumbnail_size),
            es_index=get("ES_INDEX", defaults.es_index),
            es_num_candidates=get("ES_NUM_CANDIDATES", defaults.es_num_candidates),
            es_timeout=get("ES_TIMEOUT", defaults.es_timeout),
            es_wait=get("ES_WAIT", defaults.es_wait),
            es_index_type=es_index_type,
            es_hnsw_m=get("ES_HNSW_M", defaults.es_hnsw_m),
            es_hnsw_ef_construction=get("ES_HNSW_EF_CONSTRUCTION", defaults.es_hnsw_ef_construction),
            es_api_key=get("ES_API_KEY", None),
            es_ca_certs=get("ES_CA_CERTS", None),
        )
