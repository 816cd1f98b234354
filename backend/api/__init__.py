"""The Flask JSON API: an application factory and its blueprints (search, images, health).

One application object per process (a gunicorn worker): the engine (store, search service, model and
ingestion, from backend.factory) is built here once and shared by every request thread.
"""
from __future__ import annotations

import importlib.resources
import logging
import threading
import time
from pathlib import Path

from flask import Flask, current_app, request, send_from_directory
from flask.json.provider import DefaultJSONProvider

from backend.allocator import tune_allocator
from backend.config import Settings
from backend.factory import Engine, open_engine
from backend.features import FeatureExtractor
from backend.stores import StoreError

from . import errors, params

# The web page's files are package data of `frontend`, on disk wherever the package is installed.
FRONTEND_DIR = Path(str(importlib.resources.files("frontend")))
# Multipart framing and JSON's base64 (4/3 of the bytes) need room beyond the image byte limit;
# the decoder then applies the exact limit to the image itself.
_BODY_SLACK = 64 * 1024

log = logging.getLogger("lookalike.api")


def lookalike() -> Engine:
    """What the views share, kept on app.extensions["lookalike"]."""
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
    settings = settings or Settings.from_env()
    _use_gunicorn_logging()
    engine = open_engine(settings, extractor=extractor, share_query_vectors=True)
    if load_model:
        tune_allocator()   # a server process: large short-lived buffers from several threads (allocator.py)
        loaded = engine.service.load_model()
        if loaded is None:
            log.error("the model is not loaded: %s", engine.service.model_error)
        else:
            log.info("model: %s", loaded.describe())
            # One call at every input shape, beside the first requests (not before them: under a loaded
            # machine it could outlast gunicorn's boot timeout), so memory stays flat from then on. The
            # worker is ready meanwhile (architecture.md, "Memory"); /api/ready says whether it is warm.
            threading.Thread(target=_warm_up, args=(loaded,), name="model-warm-up", daemon=True).start()
        try:
            engine.store.warm_up()
        except (StoreError, OSError) as exc:   # the searches load it, or answer 503
            log.error("the store's vectors are not loaded yet: %s", exc)

    app = Flask(__name__, static_folder=str(FRONTEND_DIR), static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_image_bytes * 4 // 3 + _BODY_SLACK)
    app.json = _DocumentedOrderJSON(app)
    # A doubled or trailing slash must not turn into a redirect: unknown routes are plain 404s.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.extensions["lookalike"] = engine

    errors.register(app)
    app.before_request(params.reject_unknown_parameters)
    from .duplicates import bp as duplicates_bp
    from .browse import bp as browse_bp
    from .health import bp as health_bp
    from .images import bp as images_bp
    from .search import bp as search_bp
    app.register_blueprint(health_bp)
    app.register_blueprint(search_bp)
    app.register_blueprint(images_bp)
    app.register_blueprint(duplicates_bp)
    app.register_blueprint(browse_bp)

    @app.get("/")
    def index():
        response = send_from_directory(FRONTEND_DIR, "index.html", max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    if settings.cors_origins:
        _enable_cors(app, settings.cors_origins)
    return app


class _DocumentedOrderJSON(DefaultJSONProvider):
    sort_keys = False   # keys in the order docs/api.md shows them


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
