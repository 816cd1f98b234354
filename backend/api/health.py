"""Liveness, readiness, store statistics and the OpenAPI document."""
from __future__ import annotations

from flask import Blueprint

from . import lookalike
from .errors import error_response
from .openapi import document

bp = Blueprint("health", __name__)


@bp.get("/api/health")
def health():
    """The process answers; says nothing about the model or the store."""
    return {"status": "ok"}


@bp.get("/api/ready")
def ready():
    """200 when the model is loaded and the store answers (warm or not yet); 503 saying which is not."""
    ctx = lookalike()
    checks = {"model": ctx.service.model_loaded, "store": ctx.store.ping()}
    if all(checks.values()):
        # Informational, not a check: a worker serves every request while its model warms up
        # (architecture.md, "Memory"); "warm" says whether this worker has run every input shape yet.
        body = {"status": "ready", "checks": checks, "warm": ctx.service.extractor.warmed_up}
        degraded = ctx.store.degraded()
        if degraded:
            body["degraded"] = degraded     # ready all the same: every search still answers
        return body
    problems = []
    if not checks["model"]:
        error = ctx.service.model_error
        problems.append(f"the model is not loaded ({error})" if error else "the model is not loaded yet")
    if not checks["store"]:
        problems.append("the store does not answer")
    return error_response(503, "not_ready", "; ".join(problems), checks=checks)


@bp.get("/api/stats")
def stats():
    ctx = lookalike()
    model = ctx.service.extractor.info() if ctx.service.model_loaded else None
    return {"count": ctx.store.count(), "descriptor": ctx.store.descriptor(), "backend": ctx.store.backend,
            "model_loaded": ctx.service.model_loaded, "model": model}


@bp.get("/api/openapi.json")
def openapi():
    return document()
