"""Browsing the collection without a query: the documents that meet the filters, in an order, page by page;
and how many documents each tag, camera, folder and year would leave (facets)."""
from __future__ import annotations

import time

from flask import Blueprint, request

from backend.stores.base import FACETS, SORTS

from . import lookalike, params, results

bp = Blueprint("browse", __name__)
MAX_FACET_VALUES = 200


@bp.get("/api/images")
def images():
    source = params.Source(request.args)
    opts = params.options(source, with_min_score=False)
    sort = source.one("sort")
    sort = "taken" if sort is params.MISSING else sort
    if sort not in SORTS:
        raise params.bad(f"sort must be one of {', '.join(SORTS)} (got {str(sort)[:40]!r})")
    started = time.perf_counter()
    found = lookalike().store.browse(opts.filters, sort=sort, offset=opts.offset, limit=opts.limit)
    echo = {"type": "browse", "sort": sort, **opts.echo()}
    del echo["min_score"]
    return results.page(echo, found, started)


@bp.get("/api/facets")
def facets():
    source = params.Source(request.args)
    limit = params.integer(source, "limit", 50, 1, MAX_FACET_VALUES)
    filters = params.filters(source)
    counts = lookalike().store.facets(filters, limit)
    return {"filters": filters.echo(), **{name: [{"value": value, "count": count} for value, count in counts[name]]
                                          for name in FACETS}}
