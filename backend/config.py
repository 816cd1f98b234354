"""The settings, read from the environment (12-factor): `Settings` for the product, `ServerSettings` for
gunicorn.

Each field declares, with `setting(...)`, its environment variable, its parser, its allowed values and
its one-line meaning; `from_env` is derived from those declarations, and README's configuration tables
are checked against them (tests/test_config.py; `python -m backend.config` prints the tables).
"""
from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

# dense_vector HNSW index types: float, int8- / int4-quantised, better binary quantisation.
ES_INDEX_TYPES = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


# -- parsers: (variable name, stripped text) -> value, or ConfigError naming the variable -------------

Parser = Callable[[str, str], Any]


def text(name: str, value: str) -> str:
    return value


def path(name: str, value: str) -> Path:
    return Path(value).expanduser()


def positive(kind: type) -> Parser:
    """A number above zero of `kind` (int or float)."""
    def parse(name: str, value: str):
        try:
            number = kind(value)
            if number <= 0:
                raise ValueError(value)
            return number
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not valid: expected a positive {kind.__name__}") from None
    parse.__name__ = f"positive_{kind.__name__}"
    return parse


def boolean(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not valid: expected a positive bool")


def whole_number(name: str, value: str) -> int:
    """0 or more."""
    try:
        number = int(value)
        if number < 0:
            raise ValueError(value)
        return number
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not valid: expected a whole number") from None


def store_location(name: str, value: str) -> str:
    """'embedded', or one or more Elasticsearch node URLs separated by commas (kept as one string)."""
    if value == "embedded":
        return value
    urls = [url.strip() for url in value.split(",")]
    if not all(url.startswith(("http://", "https://")) for url in urls):
        raise ConfigError(f"{name}={value!r} is not valid: use 'embedded' or Elasticsearch URLs such as "
                          "http://localhost:9200 (several nodes separated by commas)")
    return ",".join(urls)


def replica_count(name: str, value: str) -> str:
    """A number of replicas ("1") or an auto-expanding range ("0-1", "0-all")."""
    if not re.fullmatch(r"\d+|\d+-(\d+|all)", value):
        raise ConfigError(f"{name}={value!r} is not valid: expected a whole number of replicas (such as 1) "
                          "or a range that follows the number of nodes (such as 0-1 or 0-all)")
    return value


def oversample_factor(name: str, value: str) -> float:
    """0 (off) or a factor from 1 to 10, the range Elasticsearch accepts for `rescore_vector.oversample`."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number != 0 and not 1 <= number <= 10:
        raise ConfigError(f"{name}={value!r} is not valid: expected 0 (off) or a number from 1 to 10")
    return number


def origins(name: str, value: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in value.split(",") if o.strip())


def text_or_none(name: str, value: str) -> str | None:
    """For a variable whose empty value means "none" (not "the default")."""
    return value or None


# -- declarations --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variable:
    """How one setting is read from the environment, and how README's table shows it."""
    names: tuple[str, ...]              # the first one set wins; every one set is checked
    parse: Parser
    meaning: str                        # README's "meaning" column, word for word
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    shown_default: str | None = None    # README's "default" column where the field's default is computed
    empty_is_value: bool = False        # an empty value is given to the parser instead of meaning "unset"

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value of the first variable set, or MISSING when none is."""
        found: Any = MISSING
        for name in self.names:
            raw = env.get(name)
            if raw is None or (raw.strip() == "" and not self.empty_is_value):
                continue
            value = self.parse(name, raw.strip())
            allowed = self.allowed()
            if allowed is not None and value not in allowed:
                raise ConfigError(f"{name}={value!r} is not valid: use one of {', '.join(allowed)}")
            if found is MISSING:
                found = value
        return found


def setting(names: str | Sequence[str], meaning: str, *, parse: Parser = text, default: Any = MISSING,
            default_factory: Callable[[], Any] | Any = MISSING, choices=None, shown_default: str | None = None,
            empty_is_value: bool = False) -> Any:
    """A dataclass field read from the environment variable `names` (or the first of several)."""
    variable = Variable((names,) if isinstance(names, str) else tuple(names), parse, meaning, choices,
                        shown_default, empty_is_value)
    return field(default=default, default_factory=default_factory, metadata={"env": variable})


def variables(cls) -> Iterator[tuple[Any, Variable]]:
    """(dataclass field, Variable) of every setting of `cls`, in declaration order."""
    for f in fields(cls):
        if "env" in f.metadata:
            yield f, f.metadata["env"]


def read_environment(cls, environ: Mapping[str, str] | None = None):
    """An instance of the settings class `cls` from `environ` (default: os.environ)."""
    env = os.environ if environ is None else environ
    values = {}
    for f, variable in variables(cls):
        value = variable.read(env)
        if value is not MISSING:
            values[f.name] = value
    return cls(**values)


def shown_default(f, variable: Variable) -> str:
    """The default as README's table shows it."""
    if variable.shown_default is not None:
        return variable.shown_default
    value = f.default
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return f"`{value}`"


def table_rows(cls) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every setting of `cls`, as README's configuration tables show them."""
    return [(", else ".join(f"`{name}`" for name in variable.names), shown_default(f, variable), variable.meaning)
            for f, variable in variables(cls)]


def markdown_table(cls) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| {name} | {default} | {meaning} |" for name, default, meaning in table_rows(cls)]
    return "\n".join(lines)


# -- the product's settings ----------------------------------------------------------------------------

def _default_model_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike" / "models"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lookalike"


def _poolings() -> tuple[str, ...]:
    from backend.features import POOLINGS  # the list lives next to its implementations
    return POOLINGS


def _precisions() -> tuple[str, ...]:
    from backend.precision import PRECISIONS
    return PRECISIONS


@dataclass(frozen=True)
class Settings:
    # Where documents live: "embedded" (SQLite under data_dir) or an Elasticsearch URL.
    store: str = setting(
        "LOOKALIKE_STORE", "`embedded`, or an Elasticsearch URL such as `http://localhost:9200` "
        "(or `https://user:password@host:9200`); for a cluster, several nodes' URLs separated by commas",
        parse=store_location, default="embedded")
    data_dir: Path = setting(
        "LOOKALIKE_DATA_DIR", "where the embedded store (`index.sqlite3`, and `index.sqlite3.vectors/`: a copy "
        "of the vectors that all workers map, see [docs/architecture.md](docs/architecture.md)), uploads and "
        "thumbnails live", parse=path, default_factory=_default_data_dir,
        shown_default="`~/.local/share/lookalike` (under `XDG_DATA_HOME`); `make` uses `./data`")
    # "imagenet" lets Keras download the weights; a path loads a local .h5 file;
    # "random" builds a seeded, untrained network (tests and demos only).
    vgg16_weights: str = setting(
        "LOOKALIKE_VGG16_WEIGHTS", "`imagenet` (Keras downloads them), or a path to a local `..._notop.h5` file",
        default="imagenet")
    # The descriptor: how conv5 is pooled and at what input size (see docs/benchmarks.md).
    pooling: str = setting(
        "LOOKALIKE_POOLING", "conv5 pooling: `gem` (generalised mean, p = 1.5), `avg`, `max`, `rmac`",
        default="gem", choices=_poolings)
    image_size: int = setting(
        "LOOKALIKE_IMAGE_SIZE", "the network's input size: longer side, or side of the square",
        parse=positive(int), default=336)
    square: bool = setting(
        "LOOKALIKE_SQUARE", "`true` to squash to a square instead of keeping the aspect",
        parse=boolean, default=False)
    batch_size: int = setting(
        "LOOKALIKE_BATCH_SIZE", "images per model call when indexing", parse=positive(int), default=16)
    # Numeric precision of the model (backend/precision.py) and where converted models are kept.
    precision: str = setting(
        "LOOKALIKE_PRECISION", "the model's arithmetic: `auto` (the fastest this CPU runs natively that passed "
        "the accuracy gate, see below), "
        "`float32` (TensorFlow), `bfloat16` or `int8` (OpenVINO)", default="auto", choices=_precisions)
    model_cache: Path = setting(
        "LOOKALIKE_MODEL_CACHE", "where converted and int8 models are kept, built once per machine and shared "
        "by every store and worker", parse=path, default_factory=_default_model_cache,
        shown_default="`~/.cache/lookalike/models` (under `XDG_CACHE_HOME`)")
    # Safety limits for decoding files and uploads.
    max_image_bytes: int = setting(
        "LOOKALIKE_MAX_IMAGE_BYTES", "largest file or upload accepted", parse=positive(int),
        default=50 * 1024 * 1024)
    max_image_pixels: int = setting(
        "LOOKALIKE_MAX_IMAGE_PIXELS", "largest width x height decoded, against decompression bombs",
        parse=positive(int), default=50_000_000)
    # API.
    api_key: str | None = setting(
        "LOOKALIKE_API_KEY", "bearer key for adding and deleting images through the API (unset: writes are off)",
        default=None)
    cors_origins: tuple[str, ...] = setting(
        "LOOKALIKE_CORS_ORIGINS", "comma-separated origins allowed to call the API from a browser, or `*` "
        "(unset: CORS off)", parse=origins, default=())
    thumbnail_size: int = setting(
        "LOOKALIKE_THUMBNAIL_SIZE", "thumbnail size in pixels", parse=positive(int), default=256)
    # Elasticsearch (docs/elasticsearch.md).
    es_index: str = setting(
        "LOOKALIKE_ES_INDEX", "Elasticsearch: the alias searched; physical indices are named after it",
        default="lookalike")
    es_num_candidates: int = setting(
        "LOOKALIKE_ES_NUM_CANDIDATES", "Elasticsearch: kNN candidates per shard (raised to `k` when `k` is "
        "larger; at most 10,000)", parse=positive(int), default=200)
    es_timeout: float = setting(
        "LOOKALIKE_ES_TIMEOUT", "Elasticsearch: seconds per request", parse=positive(float), default=30.0)
    es_wait: float = setting(
        "LOOKALIKE_ES_WAIT", "Elasticsearch: seconds the app and the indexer wait at start-up for our index "
        "(or, before it exists, the cluster) to answer", parse=positive(float), default=60.0)
    es_index_type: str = setting(
        "LOOKALIKE_ES_INDEX_TYPE", "Elasticsearch: the vectors' index, `hnsw`, `int8_hnsw`, `int4_hnsw` or "
        "`bbq_hnsw` (docs/elasticsearch.md, \"Vectors\")", default="hnsw", choices=ES_INDEX_TYPES)
    es_hnsw_m: int = setting(
        "LOOKALIKE_ES_HNSW_M", "Elasticsearch: HNSW graph neighbours per node", parse=positive(int), default=16)
    es_hnsw_ef_construction: int = setting(
        "LOOKALIKE_ES_HNSW_EF_CONSTRUCTION", "Elasticsearch: HNSW candidates while building the graph",
        parse=positive(int), default=100)
    es_api_key: str | None = setting(
        "LOOKALIKE_ES_API_KEY", "Elasticsearch: API key (base64 `id:key`) for a cluster with security enabled",
        default=None)
    es_ca_certs: str | None = setting(
        "LOOKALIKE_ES_CA_CERTS", "Elasticsearch: CA bundle for `https://` with a private CA", default=None)
    labels: bool = setting(
        "LOOKALIKE_LABELS", "`true` to give indexed and uploaded pictures content labels (ImageNet classes found "
        "by keyword), `false` for none (`lookalike index --no-labels`)", parse=boolean, default=True)
    es_shards: int = setting(
        "LOOKALIKE_ES_SHARDS", "Elasticsearch: primary shards of a new index (docs/elasticsearch.md, "
        "\"Running a cluster\")", parse=positive(int), default=1)
    es_replicas: str = setting(
        "LOOKALIKE_ES_REPLICAS", "Elasticsearch: replicas of each shard, a number or a range that follows the "
        "cluster's size (`0-1`: none on one node, one from two nodes on)", parse=replica_count, default="0-1")
    es_rescore_oversample: float = setting(
        "LOOKALIKE_ES_RESCORE_OVERSAMPLE", "Elasticsearch: on a quantized index (`int8_hnsw`, `int4_hnsw`, "
        "`bbq_hnsw`), each shard gathers this many times `k` hits and ranks them again by the float vectors "
        "(`rescore_vector`; exact scores); 0: off (docs/elasticsearch.md, \"Vectors\")", parse=oversample_factor,
        default=3.0)

    @property
    def uses_elasticsearch(self) -> bool:
        return self.store.startswith(("http://", "https://"))

    @property
    def es_urls(self) -> list[str]:
        """The Elasticsearch nodes' URLs given in LOOKALIKE_STORE."""
        return self.store.split(",") if self.uses_elasticsearch else []

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
        return read_environment(cls, environ)


# -- the server's settings (gunicorn; backend/gunicorn_conf.py) ----------------------------------------

@dataclass(frozen=True)
class ServerSettings:
    bind: str | None = setting(
        "GUNICORN_BIND", "where to listen, e.g. `127.0.0.1:8000` or `unix:/run/lookalike.sock`",
        default=None, shown_default="`HOST:PORT`")
    host: str = setting("HOST", "the address listened on when `GUNICORN_BIND` is not set", default="127.0.0.1")
    port: str = setting("PORT", "the port listened on when `GUNICORN_BIND` is not set", default="8000")
    workers: int = setting(
        ("GUNICORN_WORKERS", "WEB_CONCURRENCY"), "processes (0: 1); each holds one model (about 1.5 GB resident "
        "with the real weights)", parse=whole_number, default=2)
    threads: int = setting(
        "GUNICORN_THREADS", "request threads per worker (gthread; 0: 1)", parse=whole_number, default=4)
    timeout: int = setting(
        "GUNICORN_TIMEOUT", "seconds a worker may stay silent; one loading the model cannot report meanwhile",
        parse=whole_number, default=120)
    graceful_timeout: int = setting(
        "GUNICORN_GRACEFUL_TIMEOUT", "seconds to finish requests on SIGTERM", parse=whole_number, default=30)
    keepalive: int = setting(
        "GUNICORN_KEEPALIVE", "seconds a kept-alive connection waits for its next request",
        parse=whole_number, default=5)
    log_level: str = setting(
        "GUNICORN_LOG_LEVEL", "gunicorn's log level: `debug`, `info`, `warning`, `error` or `critical`",
        default="info")
    access_log: str | None = setting(
        "GUNICORN_ACCESS_LOG", "where the access log goes: `-` for standard output, a file, or empty for none",
        parse=text_or_none, default="-", empty_is_value=True)
    max_requests: int = setting(
        "GUNICORN_MAX_REQUESTS", "recycle a worker after this many requests (0: never)",
        parse=whole_number, default=0)
    control_socket: str | None = setting(
        "GUNICORN_CONTROL_SOCKET", "a path turns on gunicorn's control socket (`gunicornc`)", default=None,
        shown_default="unset: off")

    @property
    def address(self) -> str:
        return self.bind or f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServerSettings":
        return read_environment(cls, environ)


if __name__ == "__main__":
    print(markdown_table(Settings), markdown_table(ServerSettings), sep="\n\n")
