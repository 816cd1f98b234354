"""Indexing throughput into Elasticsearch: the store's write path against the one it replaced, in one run.

    python -m benchmarks.elastic_writes --url URL[,URL...] [--documents 100000] [--round 10000]
        [--batch 5000] [--type hnsw] [--shards 1] [--replicas 1] [--json]

The same synthetic 512-d unit vectors (benchmarks.elastic's mixture) go into two fresh indices of the same
cluster, with the same mapping, shards, replicas and vector index options:
- "before": the write path as it was, kept here only to measure against: vectors as Python floats (17
  significant digits) through the client's standard JSON serializer, one bulk request of 500 documents at
  a time, each waiting for the refresh (refresh=wait_for);
- "now": ElasticStore.upsert, `--batch` documents a call: orjson writes each float32 in its shortest
  digits, and the bulk requests of 500 go 4 at a time without waiting, followed by one refresh (an upsert
  that returns is searchable, as before).
The two take turns, `--round` documents each, so both see the same machine load; each side's rate is its
documents over the sum of its own turns. Server CPU is every node's process CPU over each side's turns
(merges started by one side and still running in the other's turn count for the other). At the end both
indices must hold every document once, each searchable by its own vector, and the store must give every
sampled vector back bit for bit. Results: docs/benchmarks.md ("Indexing into Elasticsearch").
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from elasticsearch import Elasticsearch, helpers

from backend.config import Settings
from backend.stores.elastic import VECTOR, ElasticStore, document_source, index_body

from .descriptors import machine
from .elastic import cluster_cpu_seconds, documents, synthetic


def before_source(doc) -> dict:
    source = document_source(doc)
    source[VECTOR] = np.asarray(doc.vector, dtype=np.float32).tolist()   # Python floats: 17 digits
    return source


def write_before(client: Elasticsearch, index: str, docs: list) -> None:
    """The previous ElasticStore.upsert: one bulk request of 500 at a time, each waiting for the refresh."""
    actions = ({"_op_type": "index", "_index": index, "_id": doc.id, "_source": before_source(doc)} for doc in docs)
    for ok, item in helpers.streaming_bulk(client.options(request_timeout=600), actions, chunk_size=500,
                                           max_retries=8, initial_backoff=0.5, max_backoff=10,
                                           retry_on_status=(429, 502, 503, 504), refresh="wait_for"):
        if not ok:
            raise RuntimeError(f"a document was refused: {item}")


def check(client: Elasticsearch, store: ElasticStore, index: str, data, sample: np.ndarray) -> dict:
    """Every document once, each sampled one found first by its own vector; the store's vectors exact."""
    count = int(client.count(index=index)["count"])
    found = 0
    for i in sample:
        hits = client.search(index=index, knn={"field": VECTOR, "query_vector": data.vectors[i].tolist(), "k": 1,
                                               "num_candidates": 100}, size=1, source=False)["hits"]["hits"]
        found += bool(hits) and hits[0]["_id"] == documents(data, int(i), int(i) + 1)[0].id
    return {"count": count, "found_by_own_vector": f"{found}/{len(sample)}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.elastic_writes", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the cluster (one node's URL is enough)")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--round", type=int, default=10_000, help="documents per turn of each side")
    parser.add_argument("--batch", type=int, default=5000, help="documents per ElasticStore.upsert call")
    parser.add_argument("--type", default="hnsw", help="the vector index type of both indices")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    url = args.url.split(",")[0]

    def emit(row: dict) -> None:
        print(json.dumps(row) if args.json else " ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    data = synthetic(args.documents, 1)
    client = Elasticsearch(url, request_timeout=600)                  # the standard serializer, as before
    store = ElasticStore.from_settings(Settings(store=url, es_index="eswrites-now", es_index_type=args.type,
                                                es_timeout=600.0, es_wait=120.0))
    before = "eswrites-before"
    now = store.index_for(data.descriptor)
    settings = {"number_of_shards": args.shards, "number_of_replicas": args.replicas}
    info = client.nodes.info()["nodes"]
    nodes = len(info)
    emit({"row": "machine", "machine": machine(), "elasticsearch": next(iter(info.values()))["version"], "nodes": nodes,
          "documents": args.documents, "type": args.type, **settings, "loadavg": round(os.getloadavg()[0], 1)})
    try:
        client.indices.create(index=before, settings=settings, **index_body(data.descriptor, 512, args.type))
        client.indices.create(index=now, settings=settings, **index_body(data.descriptor, 512, **store.index_options))
        client.cluster.health(index=[before, now], wait_for_status="green" if args.replicas < nodes else "yellow",
                              timeout="120s")
        seconds = {"before": 0.0, "now": 0.0}
        cpu = {"before": 0.0, "now": 0.0}
        for start in range(0, args.documents, args.round):
            stop = min(args.documents, start + args.round)
            for side in ("before", "now"):
                c0, t0 = cluster_cpu_seconds(client), time.perf_counter()
                if side == "before":
                    write_before(client, before, documents(data, start, stop))
                else:
                    for part in range(start, stop, args.batch):
                        store.upsert(documents(data, part, min(stop, part + args.batch)))
                seconds[side] += time.perf_counter() - t0
                cpu[side] += cluster_cpu_seconds(client) - c0
            emit({"row": "progress", "documents": stop, "before_s": round(seconds["before"], 1),
                  "now_s": round(seconds["now"], 1), "loadavg": round(os.getloadavg()[0], 1)})
        sample = np.random.default_rng(2).choice(args.documents, size=min(200, args.documents), replace=False)
        for side, index in (("before", before), ("now", now)):
            stored = client.indices.stats(index=index, metric="store")["indices"][index]["primaries"]["store"]
            emit({"row": "side", "side": side, "docs_per_s": round(args.documents / seconds[side]),
                  "seconds": round(seconds[side], 1),
                  "server_cpu_ms_per_doc": round(1000 * cpu[side] / args.documents, 2),
                  "primary_store_mib": round(stored["size_in_bytes"] / 2 ** 20, 1),
                  **check(client, store, index, data, sample)})
        read = [store.get(documents(data, int(i), int(i) + 1)[0].id, with_vector=True) for i in sample]
        exact = sum(doc is not None and np.array_equal(doc.vector, data.vectors[i]) for doc, i in zip(read, sample))
        emit({"row": "result", "speedup": round(seconds["before"] / seconds["now"], 2),
              "vectors_read_back_exactly": f"{exact}/{len(sample)}", "loadavg": round(os.getloadavg()[0], 1)})
    finally:
        store.close()
        for index in (before, now):
            client.indices.delete(index=index, ignore_unavailable=True)
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
