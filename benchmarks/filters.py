"""The cost of a filter on a kNN search, on both stores: filtered (keeping 1 % of the documents) against
unfiltered, the same queries, in one run.

    python -m benchmarks.filters [--documents 100000] [--queries 200] [--limit 24] [--batch 500]
        [--url URL | --version 8 --heap 1g] [--json]

The documents are benchmarks.elastic's synthetic 512-d vectors (a Gaussian mixture shaped like the
product's descriptors); one in a hundred (every 100th, so spread over the whole collection and its vector
space) is in folder rare/, from a "Leica M10" and taken in 2013, the rest elsewhere, from other cameras and
in other years. Each store (the embedded store, and an Elasticsearch index through the product's
ElasticStore; without --url a node is started for the run, tests/es_node.py) is filled through its upsert,
then every query runs five ways, one after the other so that all see the same load: unfiltered, and with
each of three filters that keep the 1 % (folder=rare, camera=leica m10, taken 2013-01-01 to 2013-12-31)
and with all three at once. Reported per store and filter: median and 95th percentile milliseconds, the
ratio of medians to the unfiltered search, and whether every filtered page was full (`limit` results, all
matching). Results: docs/benchmarks.md, "Filters".
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np

from backend.config import Settings
from backend.stores.base import Document, Store
from backend.stores.embedded import EmbeddedStore
from backend.stores.filters import Filters

from .descriptors import machine
from .elastic import VECTOR_JVM_OPTIONS, synthetic
from .store_size import synthetic_document

RARE = 100          # one document in RARE meets the filters
FILTERS = {
    "folder": Filters.of(folders=["rare"]),
    "camera": Filters.of(cameras=["Leica M10"]),
    "taken": Filters.of(taken_from=date(2013, 1, 1), taken_to=date(2013, 12, 31)),
    "all three": Filters.of(folders=["rare"], cameras=["Leica M10"], taken_from=date(2013, 1, 1),
                            taken_to=date(2013, 12, 31)),
}


def document(i: int, vector: np.ndarray, descriptor: str) -> Document:
    doc = synthetic_document(i, vector, descriptor)
    rare = i % RARE == 0
    doc.folder = "rare/2013" if rare else f"trips/{i % 37}"
    doc.camera_make, doc.camera_model = ("Leica", "Leica M10") if rare else ("Canon", f"Canon EOS {i % 9}D")
    doc.taken = f"{2013 if rare else 2014 + i % 10}-0{1 + i % 9}-1{i % 10}T12:00:00"
    doc.file_type, doc.meta_version = "jpeg", 1
    return doc


def fill(store: Store, docs: list[Document], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(docs), batch):
        store.upsert(docs[start:start + batch])
    return time.perf_counter() - started


def measure(name: str, store: Store, descriptor: str, queries: np.ndarray, limit: int) -> list[dict]:
    """Each query unfiltered and with each filter, interleaved; one row per filter."""
    for query in queries[:5]:   # warm up: the embedded store maps its vectors, the index loads its graph
        store.knn(query, descriptor=descriptor, limit=limit)
    times: dict[str, list[float]] = {"none": [], **{f: [] for f in FILTERS}}
    full = {f: True for f in FILTERS}
    for query in queries:
        for label, filters in [("none", None), *FILTERS.items()]:
            started = time.perf_counter()
            page = store.knn(query, descriptor=descriptor, limit=limit, filters=filters)
            times[label].append(time.perf_counter() - started)
            if filters is not None:
                full[label] &= len(page.hits) == limit and all(
                    h.document.folder == "rare/2013" for h in page.hits)
    base = float(np.median(times["none"]))
    return [{"store": name, "filter": label, "median_ms": round(float(np.median(t)) * 1000, 2),
             "p95_ms": round(float(np.percentile(t, 95)) * 1000, 2),
             "ratio": round(float(np.median(t)) / base, 2), "full_pages": full.get(label)}
            for label, t in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.filters", description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--url", help="an Elasticsearch node of your own (else one is started)")
    parser.add_argument("--version", default="8")
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    data = synthetic(args.documents, args.queries)
    docs = [document(i, v, data.descriptor) for i, v in enumerate(data.vectors)]
    def emit(*new: dict) -> None:   # as they come: a long run shows what it has so far
        for row in new:
            print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    rows: list[dict] = [{"row": "machine", "machine": machine(), "load": round(os.getloadavg()[0], 1),
                         "documents": len(docs), "kept": len(docs[::RARE]), "queries": args.queries,
                         "limit": args.limit}]
    emit(*rows)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that `finally` stops the node
    node = None
    if args.url is None:
        from tests import es_node
        node = es_node.start(args.version, heap=args.heap, jvm_options=VECTOR_JVM_OPTIONS)
    try:
        with tempfile.TemporaryDirectory(prefix="lookalike-filters-") as tmp:
            with EmbeddedStore(Path(tmp) / "index.sqlite3") as embedded:
                emit({"row": "fill", "store": "embedded", "seconds": round(fill(embedded, docs, args.batch), 1)})
                emit(*measure("embedded", embedded, data.descriptor, data.queries, args.limit))
        alias = f"lookalike-filters-{uuid.uuid4().hex[:8]}"
        from backend.stores.elastic import ElasticStore
        elastic = ElasticStore.from_settings(Settings(store=args.url or node.url, es_index=alias))
        try:
            emit({"row": "fill", "store": "elasticsearch", "seconds": round(fill(elastic, docs, args.batch), 1)})
            emit(*measure("elasticsearch", elastic, data.descriptor, data.queries, args.limit))
        finally:
            client = elastic._client
            for index in client.indices.get_alias(name=alias, ignore_unavailable=True):
                client.indices.delete(index=index)
            elastic.close()
    finally:
        if node is not None:
            node.stop()
    emit({"row": "load", "load_after": round(os.getloadavg()[0], 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
