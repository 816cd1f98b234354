"""Every error the API answers is JSON: {"error": {"code": "...", "message": "..."}}.

Flask's own errors (404 route, 405, 413 from MAX_CONTENT_LENGTH, 400 bad JSON) and the engine's
exceptions are mapped here, so no handler has to think about it and no HTML page or stack trace
ever reaches a client.
"""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from backend.features import WeightsError
from backend.imaging import ImageError
from backend.search import FileMissing, NotFound
from backend.stores.base import DescriptorMismatch, StoreError, StoreUnavailable

log = logging.getLogger("lookalike.api")

# ImageError.kind -> HTTP status and error code.
IMAGE_ERRORS = {"too_large": (413, "too_large"), "unsupported": (415, "unsupported_image"),
                "corrupt": (422, "corrupt_image")}
# Werkzeug's names for the statuses we can meet, as short codes.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 411: "length_required",
              413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type",
              416: "range_not_satisfiable", 422: "unprocessable", 431: "headers_too_large",
              500: "internal_error", 501: "not_implemented", 503: "unavailable"}


class ApiError(Exception):
    """Raise from a view to answer an error with this status, code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None, **extra):
    response = jsonify({"error": {"code": code, "message": message}, **extra})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(ImageError)
    def _image_error(exc: ImageError):
        status, code = IMAGE_ERRORS.get(exc.kind, (422, "corrupt_image"))
        # The reason only: the source may be a server path.
        return error_response(status, code, exc.reason)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        ids = [str(i)[:40] for i in exc.args]
        if len(ids) == 1:
            return error_response(404, "not_found", f"no image with id {ids[0]!r}", unknown_ids=ids)
        return error_response(404, "not_found", f"no images with ids {', '.join(map(repr, ids))}", unknown_ids=ids)

    @app.errorhandler(FileMissing)
    def _file_missing(exc: FileMissing):
        return error_response(404, "file_missing", "the image is indexed but its file is no longer there")

    @app.errorhandler(DescriptorMismatch)
    def _mismatch(exc: DescriptorMismatch):
        return error_response(409, "descriptor_mismatch", str(exc))

    @app.errorhandler(StoreUnavailable)  # e.g. the embedded store's file cannot be read (disk error, closed)
    def _unavailable(exc: Exception):
        log.warning("store unavailable: %s", exc)
        return error_response(503, "store_unavailable", f"the search store is unavailable: {exc}")

    @app.errorhandler(StoreError)  # any other refusal by the store (e.g. Elasticsearch credentials)
    def _store_error(exc: StoreError):
        log.error("store error: %s", exc)
        return error_response(503, "store_error", f"the search store refused the request: {exc}")

    @app.errorhandler(WeightsError)
    def _no_model(exc: WeightsError):
        return error_response(503, "model_unavailable", f"searching by image is unavailable: {exc}")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = "the request body is too large"
        # Keep headers such as Allow (405) and drop Werkzeug's HTML content type.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(status, HTTP_CODES.get(status, exc.name.lower().replace(" ", "_")), message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")  # the trace goes to the log, never to the client
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")
