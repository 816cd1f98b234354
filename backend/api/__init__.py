"""The Flask JSON API: an application factory and its blueprints (search, images, health).

One application object per process (a gunicorn worker): the store, the search service and the
model are built here once and shared by every request thread (see `Lookalike`).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app, request, send_from_directory

from backend.allocator import tune_allocator
from backend.config import Settings
from backend.features import FeatureExtractor, WeightsError
from backend.imaging import Limits
from backend.search import QueryVectorCache, SearchService
from backend.stores import Store, StoreError, open_store

from . import errors, params

FRONTEND_DIR = Path(__file__).resolve().parent.parent.parent / "frontend"
# Multipart framing and JSON's base64 (4/3 of the bytes) need room beyond the image byte limit;
# the decoder then applies the exact limit to the image itself.
_BODY_SLACK = 64 * 1024

log = logging.getLogger("lookalike.api")


@dataclass
class Lookalike:
    """What the views share, kept on app.extensions["lookalike"]."""
    settings: Settings
    store: Store
    service: SearchService
    indexer: "Indexer"  # noqa: F821 (imported in create_app)
    model_error: str | None = None   # why the model could not be loaded, when it could not

    @property
    def limits(self) -> Limits:
        return self.service.limits


def lookalike() -> Lookalike:
    return current_app.extensions["lookalike"]


def create_app(settings: Settings | None = None, *, load_model: bool = True,
               extractor: FeatureExtractor | None = None) -> Flask:
    """Build the application.

    settings: defaults to Settings.from_env(). load_model: build the VGG16 extractor and load the
    store's vectors now (what a gunicorn worker does at start-up, so its first search is not slow);
    False builds the extractor on the first search by image or upload.
    extractor: use this one instead of building one (tests share a single model this way).
    A model that cannot be loaded does not stop the server: /api/ready answers 503 saying why,
    searches by image and uploads answer 503, and everything else works.
    """
    from indexer.pipeline import Indexer  # the indexer package sits beside backend

    settings = settings or Settings.from_env()
    _use_gunicorn_logging()
    store = open_store(settings)
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
    query_cache = QueryVectorCache(settings.query_cache_dir)
    service = SearchService(store, extractor or (lambda: FeatureExtractor.from_settings(settings)), limits,
                            query_cache)
    model_error = None
    if load_model:
        tune_allocator()   # a server process: large short-lived buffers from several threads (allocator.py)
        try:
            extractor = service.extractor   # builds it
            log.info("model: %s", extractor.describe())
            # One call at every input shape, beside the first requests (not before them: under a loaded
            # machine it could outlast gunicorn's boot timeout), so memory stays flat from then on. The
            # worker is ready meanwhile (architecture.md, "Memory"); /api/ready says whether it is warm.
            threading.Thread(target=_warm_up, args=(extractor,), name="model-warm-up", daemon=True).start()
        except WeightsError as exc:
            model_error = str(exc)
            log.error("the model is not loaded: %s", exc)

            def fail_again():
                raise WeightsError(model_error)
            service = SearchService(store, fail_again, limits, query_cache)
        try:
            store.warm_up()
        except (StoreError, OSError, sqlite3.Error) as exc:   # the searches load it, or answer 503
            log.error("the store's vectors are not loaded yet: %s", exc)
    # The indexer shares the service's extractor: one model per process.
    indexer = Indexer(store, lambda: service.extractor, limits, batch_size=1, decode_threads=1)

    app = Flask(__name__, static_folder=str(FRONTEND_DIR), static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_image_bytes * 4 // 3 + _BODY_SLACK)
    app.json.sort_keys = False
    # A doubled or trailing slash must not turn into a redirect: unknown routes are plain 404s.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions["lookalike"] = Lookalike(settings, store, service, indexer, model_error)

    errors.register(app)
    app.before_request(params.reject_unknown_parameters)
    from .health import bp as health_bp
    from .images import bp as images_bp
    from .search import bp as search_bp
    app.register_blueprint(health_bp)
    app.register_blueprint(search_bp)
    app.register_blueprint(images_bp)

    @app.get("/")
    def index():
        response = send_from_directory(FRONTEND_DIR, "index.html", max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    if settings.cors_origins:
        _enable_cors(app, settings.cors_origins)
    return app


def _warm_up(extractor: FeatureExtractor) -> None:
    started = time.monotonic()
    try:
        shapes = extractor.warm_up()
        log.info("model warm-up done: %d input shapes in %.1f s", shapes, time.monotonic() - started)
    except Exception:  # noqa: BLE001 -- a warm-up that fails costs speed only; searches report their own errors
        log.exception("model warm-up failed")


def _enable_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """CORS for the configured origins only ("*" for any). Off unless LOOKALIKE_CORS_ORIGINS is set."""
    allow_any = "*" in origins

    @app.after_request
    def cors(response):
        origin = request.headers.get("Origin")
        if origin and (allow_any or origin in origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
            response.headers.add("Vary", "Origin")
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response.headers["Access-Control-Max-Age"] = "600"
        return response


def _use_gunicorn_logging() -> None:
    """Under gunicorn, our log lines go where gunicorn's error log goes."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    ours = logging.getLogger("lookalike")
    if gunicorn_log.handlers and not ours.handlers:
        ours.handlers = list(gunicorn_log.handlers)
        ours.setLevel(gunicorn_log.level)
        ours.propagate = False
