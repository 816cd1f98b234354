"""Elasticsearch approximate kNN against the embedded store's exact kNN, on the same vectors in one run.

    python -m benchmarks.elastic [--data DIR] [--datasets corel1k ukbench-600] [--store NAME=PATH]...
        [--synthetic 100000] [--queries 500] [--types hnsw int8_hnsw bbq_hnsw] [--candidates 100 200 500]
        [--oversample 3]
        [--batch 500] [--states written merged] [--url URL | --version 8 --heap 1g] [--weights W]
        [--cache DIR] [--json] [--table FILE]

Data sets: Corel-1k and UKBench-600 (`--data` holds corel1k/ and ukbench-600/; their descriptors with the
product's default descriptor come from benchmarks.descriptors and its cache, so the model runs once per
set; or `--store`: the vectors of an embedded store the indexer filled), and N synthetic 512-d unit
vectors (`synthetic`: a Gaussian mixture, see there). On the real sets every image is a query with
itself left out, through the `exclude` filter of the product's "more like this" search, in both stores;
synthetic queries are held-out points of the same mixture.

Each set is written into an embedded store (the exact baseline: its brute-force kNN, limit 100, gives
the true neighbours) and, per index type, into Elasticsearch through the product's ElasticStore.upsert
(batches of --batch, refresh=wait_for). Then, for every num_candidates (`store.num_candidates`), each
query goes through ElasticStore.knn with limit 100 (recall@100) and limit 10 (recall@10, timed, each
one beside the embedded store's exact kNN for the same query, so both see the same load); on the quantized
types also for every --oversample (the store's `rescore_vector`, 0: none sent). That is done
on the index as written and again after a force-merge to one segment (`--states`).

recall@k: the share of Elasticsearch's top k whose true cosine reaches the k-th exact score (less 1e-5,
so that ties and float rounding do not count as misses), averaged over the queries. The score error is
|reported score - true cosine| over every returned hit. Also: upsert throughput of both stores, index
size (`_stats` store, and the segment files by extension) as written and merged, JVM heap used
(`_nodes/stats/jvm`) after each type. Results and how to read them: docs/benchmarks.md.

Without --url it starts its own node (tests/es_node.py; set JAVA_HOME to a Java 21+ for Lucene's SIMD
vector scoring, which the node is given the JVM options for) and stops it at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from elasticsearch import ApiError, Elasticsearch

from backend.config import Settings
from backend.stores.elastic import ElasticStore, index_body
from backend.stores.embedded import EmbeddedStore

from .datasets import check_inputs
from .descriptors import extract, load, machine
from .store_size import DESCRIPTOR, DIMS, doc_id, synthetic_document

TIE = 1e-5
DEEP, SHALLOW = 100, 10
# What the Elasticsearch distribution gives its JVM for vector search: Lucene's Panama (SIMD) scorers.
VECTOR_JVM_OPTIONS = ("--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                      "-Dorg.apache.lucene.vectorization.upperJavaFeatureVersion=25")


@dataclass
class DataSet:
    name: str
    descriptor: str
    vectors: np.ndarray          # (n, dims) unit rows, the indexed documents
    queries: np.ndarray          # (q, dims) unit rows
    query_docs: list[int | None] | None  # the document each query is (left out of its own results); None: held out
    groups: dict[str, slice] | None = None   # queries by the set they come from, when sets were mixed


def mixed(sets: list[DataSet], real_queries: int | None = None) -> DataSet:
    """One collection holding every set's vectors (the photo sets among the synthetic ones), so the photos'
    queries meet a million neighbours; recall is also reported per set (`groups`). `real_queries`: that
    many of each photo set's images (a seeded sample) are queries, not all of them."""
    vectors, queries, query_docs, groups = [], [], [], {}
    offset = done = 0
    rng = np.random.default_rng(3)
    for data in sets:
        vectors.append(data.vectors)
        picked = np.arange(len(data.queries))
        if data.query_docs is not None and real_queries is not None and real_queries < len(picked):
            picked = np.sort(rng.choice(len(picked), real_queries, replace=False))
        queries.append(data.queries[picked])
        own: list[int | None] = list(data.query_docs or [None] * len(data.queries))
        query_docs += [None if own[i] is None else offset + int(own[i] or 0) for i in picked]
        groups[data.name] = slice(done, done + len(picked))
        offset += len(data.vectors)
        done += len(picked)
    name = "+".join(d.name for d in sets)
    return DataSet(name, DESCRIPTOR, np.concatenate(vectors), np.concatenate(queries), query_docs, groups)


def synthetic(n: int, queries: int, dims: int = DIMS, seed: int = 0, mean_cluster: int = 50,
              like: np.ndarray | None = None) -> DataSet:
    """n documents and `queries` held-out queries drawn from one Gaussian mixture shaped like CNN descriptors
    of a photo collection, then L2-normalised:
    - a shared direction (pooled ReLU maps are all positive, so any two photos have a positive cosine);
    - clusters (scenes, objects, albums) of heavy-tailed sizes (lognormal, about `mean_cluster` on average);
    - anisotropic spread, centres and points alike: variance 1/i along the i-th axis of a random basis (a
      steep spectrum with a few dozen effective dimensions, as descriptors have; isotropic noise in 512-d
      would make every pair nearly orthogonal and the nearest neighbours hardly nearer than the rest).
    The weights (shared 0.45, centre 0.25, point 0.30 of the squared length) put random pairs near cosine
    0.45 and same-cluster pairs near 0.7, as on Corel-1k (the script prints both sets' figures).
    `like`: real descriptors to mix in (--mix). The mixture then lies in their space: the shared direction
    is their mean, the axes of the spread their principal axes, steepest first. With a random shared
    direction every photo is at cosine 0.0 (at most 0.23) to every synthetic vector, a region of its own
    that a graph search has to find from outside, unlike any collection of photos, whose pooled ReLU
    descriptors all lie in one cone."""
    rng = np.random.default_rng(seed)
    total = n + queries
    clusters = max(1, total // mean_cluster)
    sizes = rng.lognormal(0.0, 1.0, clusters)
    member = rng.choice(clusters, total, p=sizes / sizes.sum())
    basis = np.linalg.qr(rng.standard_normal((dims, dims)))[0].astype(np.float32)
    spread = (np.arange(1, dims + 1) ** -0.5).astype(np.float32)
    spread /= np.linalg.norm(spread)                     # a spread vector of expected squared length 1

    def spread_points(count: int) -> np.ndarray:
        return (rng.standard_normal((count, dims), dtype=np.float32) * spread) @ basis.T

    shared = rng.standard_normal(dims).astype(np.float32)
    if like is not None:
        shared = like.mean(axis=0)
        axes = np.linalg.svd(like - shared, full_matrices=False)[2]      # rows, steepest first
        # completed to a basis by QR (its first columns span the axes in order: spread 1/i goes to them)
        basis = np.linalg.qr(np.concatenate([axes.T, basis], axis=1))[0][:, :dims].astype(np.float32)
    shared /= np.linalg.norm(shared)
    centres = np.sqrt(0.45) * shared + np.sqrt(0.25) * spread_points(clusters)
    points = np.empty((total, dims), np.float32)
    for start in range(0, total, 20_000):
        stop = min(total, start + 20_000)
        points[start:stop] = centres[member[start:stop]] + np.sqrt(0.30) * spread_points(stop - start)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    order = rng.permutation(total)
    return DataSet(f"synthetic-{n}", DESCRIPTOR, points[order[:n]], points[order[n:]], None)


def real(name: str, data: Path, weights: str, cache: Path) -> DataSet:
    """A labelled set's descriptors with the product's default descriptor (cached by benchmarks.descriptors)."""
    defaults = Settings()
    tag = f"{'sq' if defaults.square else 'ar'}{defaults.image_size}"
    cached = load(extract(weights, data / name, tag, cache))
    vectors = np.ascontiguousarray(cached[defaults.pooling], dtype=np.float32)
    return DataSet(name, cached["info"]["descriptor"], vectors, vectors, list(range(len(vectors))))


def from_store(name: str, path: Path) -> DataSet:
    """The vectors of an embedded store (an index.sqlite3 the indexer filled), read-only, as a real set."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT descriptor, vector FROM docs ORDER BY rowid").fetchall()
    descriptors = {d for d, _ in rows}
    if len(descriptors) != 1:
        raise ValueError(f"{path}: expected vectors of one descriptor, found {sorted(descriptors)}")
    vectors = np.stack([np.frombuffer(v, dtype="<f4") for _, v in rows])
    return DataSet(name, descriptors.pop(), vectors, vectors, list(range(len(vectors))))


def documents(data: DataSet, start: int = 0, stop: int | None = None) -> list:
    stop = len(data.vectors) if stop is None else min(stop, len(data.vectors))
    return [synthetic_document(i, data.vectors[i], data.descriptor) for i in range(start, stop)]


def upsert_all(store, data: DataSet, batch: int) -> float:
    """Documents per second through store.upsert, `batch` at a time (made as they are sent: a million
    Document objects at once would take gigabytes)."""
    started = time.perf_counter()
    for start in range(0, len(data.vectors), batch):
        store.upsert(documents(data, start, start + batch))
    return len(data.vectors) / (time.perf_counter() - started)


def exclusions(data: DataSet, i: int) -> list[str]:
    own = None if data.query_docs is None else data.query_docs[i]
    return [] if own is None else [doc_id(own)]


def exact_numpy(data: DataSet, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The same top DEEP per query as the embedded store's exact kNN, by brute force in numpy (at a million
    vectors, filling an embedded store first would double the run's memory)."""
    rows = np.empty((len(data.queries), DEEP), np.int64)
    scores = np.empty((len(data.queries), DEEP), np.float32)
    for start in range(0, len(data.queries), chunk):
        sims = data.queries[start:start + chunk] @ data.vectors.T
        for j in range(len(sims)):
            own = data.query_docs[start + j] if data.query_docs is not None else None
            if own is not None:
                sims[j, own] = -np.inf
        top = np.argpartition(-sims, DEEP, axis=1)[:, :DEEP]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        rows[start:start + chunk] = np.take_along_axis(top, order, axis=1)
        scores[start:start + chunk] = np.take_along_axis(top_scores, order, axis=1)
    return rows, scores


def exact(store: EmbeddedStore, data: DataSet) -> tuple[np.ndarray, np.ndarray]:
    """The embedded store's top DEEP per query: (document numbers, cosines), each (queries, DEEP)."""
    rows, scores = [], []
    for i, q in enumerate(data.queries):
        hits = store.knn(q, descriptor=data.descriptor, limit=DEEP, exclude=exclusions(data, i)).hits
        rows.append([int(h.document.id, 16) for h in hits])
        scores.append([h.score for h in hits])
    return np.array(rows), np.array(scores, dtype=np.float32)


def structure(data: DataSet, truth_scores: np.ndarray) -> dict:
    """How clustered a set is: mean cosine of random pairs, and of each query's 1st and 10th neighbour."""
    rng = np.random.default_rng(1)
    a, b = rng.integers(len(data.vectors), size=(2, 20_000))
    keep = a != b
    pairs = np.einsum("ij,ij->i", data.vectors[a[keep]], data.vectors[b[keep]])
    return {"random_pair_cosine": round(float(pairs.mean()), 3),
            "neighbour_1_cosine": round(float(truth_scores[:, 0].mean()), 3),
            "neighbour_10_cosine": round(float(truth_scores[:, 9].mean()), 3)}


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(seconds, q)), 2)


def measure(store: ElasticStore, embedded: EmbeddedStore | None, data: DataSet,
            truth: tuple[np.ndarray, np.ndarray], candidates: int, oversample: float = 0.0) -> dict:
    """recall@100 and recall@10 of store.knn at this num_candidates (and rescoring oversample); limit-10
    latency of both stores."""
    store.num_candidates, store.oversample = candidates, oversample
    rows, scores = truth
    recall = {DEEP: [], SHALLOW: []}
    errors: list[float] = []
    es_seconds, exact_seconds, reread_seconds = [], [], []
    for k in (DEEP, SHALLOW):            # the deep pass first: it also warms the page cache
        for i, q in enumerate(data.queries):
            exclude = exclusions(data, i)
            t0 = time.perf_counter()
            hits = store.knn(q, descriptor=data.descriptor, limit=k, exclude=exclude).hits
            t1 = time.perf_counter()
            if k == SHALLOW and embedded is None:     # numpy's baseline: recall only, no latency
                es_seconds.append(t1 - t0)
            elif k == SHALLOW and embedded is not None:
                embedded.knn(q, descriptor=data.descriptor, limit=k, exclude=exclude)
                exact_seconds.append(time.perf_counter() - t1)
                es_seconds.append(t1 - t0)
                # the same search as the store ran it before it remembered its target index: the
                # mapping read again first (one request more)
                store._known = None
                t2 = time.perf_counter()
                store.knn(q, descriptor=data.descriptor, limit=k, exclude=exclude)
                reread_seconds.append(time.perf_counter() - t2)
            true = data.vectors[[int(h.document.id, 16) for h in hits]] @ q if hits else np.empty(0)
            errors.extend(abs(h.score - float(c)) for h, c in zip(hits, true))
            recall[k].append(min(k, int(np.sum(true >= scores[i, k - 1] - TIE))) / k)
    es50 = percentile_ms(es_seconds, 50)
    exact50 = percentile_ms(exact_seconds, 50) if exact_seconds else None
    by_set = {f"recall@10 {name}": round(float(np.mean(recall[SHALLOW][part])), 4)
              for name, part in (data.groups or {}).items()}
    return {"num_candidates": candidates, "oversample": oversample, "queries": len(data.queries), **by_set,
            "recall@10": round(float(np.mean(recall[SHALLOW])), 4),
            "recall@100": round(float(np.mean(recall[DEEP])), 4),
            "min_recall@10": round(float(np.min(recall[SHALLOW])), 2),
            "es_p50_ms": es50, "es_p95_ms": percentile_ms(es_seconds, 95),
            "exact_p50_ms": exact50, "exact_p95_ms": percentile_ms(exact_seconds, 95) if exact_seconds else None,
            "p50_ratio": round(es50 / exact50, 2) if exact50 else None,
            "reread_p50_ms": percentile_ms(reread_seconds, 50) if reread_seconds else None,
            "max_score_error": float(f"{max(errors, default=0.0):.3g}"),
            "mean_score_error": float(f"{np.mean(errors) if errors else 0.0:.3g}")}


def concurrent_latency(store: ElasticStore, data: DataSet, clients: int) -> dict:
    """p50/p95 of store.knn (limit 10) with `clients` threads searching at once, each query once."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> float:
        t0 = time.perf_counter()
        store.knn(data.queries[i], descriptor=data.descriptor, limit=SHALLOW, exclude=exclusions(data, i))
        return time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = list(pool.map(one, range(len(data.queries))))
    return {"clients": clients, "p50_ms": percentile_ms(seconds, 50), "p95_ms": percentile_ms(seconds, 95),
            "searches_per_s": round(len(seconds) / (time.perf_counter() - started), 1)}


def per_node(client: Elasticsearch) -> list[dict]:
    """Each node's disk (all its shards, replicas included) and heap."""
    nodes = client.nodes.stats(metric="indices,jvm", index_metric="store")["nodes"].values()
    return [{"node": n["name"], "store_mib": round(n["indices"]["store"]["size_in_bytes"] / 2 ** 20, 1),
             "heap_used_mib": round(n["jvm"]["mem"]["heap_used_in_bytes"] / 2 ** 20),
             "heap_max_mib": round(n["jvm"]["mem"]["heap_max_in_bytes"] / 2 ** 20)} for n in nodes]


def page_cache_mib(files_mib: dict, index_type: str) -> float:
    """What a graph search reads from the page cache: the graph (.vex) and the vectors it compares (.vec
    floats for hnsw, .veq int8 codes, .veb bbq codes; rescoring reads a few floats more per query)."""
    codes = {"hnsw": "vec", "int8_hnsw": "veq", "bbq_hnsw": "veb"}.get(index_type, "vec")
    return round(files_mib.get("vex", 0.0) + files_mib.get(codes, 0.0), 1)


def index_stats(client: Elasticsearch, index: str) -> dict:
    stats = client.indices.stats(index=index, metric="store,segments,docs",
                                 include_segment_file_sizes=True)["indices"][index]["primaries"]
    files = {ext: v["size_in_bytes"] for ext, v in sorted(stats["segments"].get("file_sizes", {}).items())}
    out = {"docs": stats["docs"]["count"], "segments": stats["segments"]["count"],
           "store_mib": round(stats["store"]["size_in_bytes"] / 2 ** 20, 1),
           "files_mib": {ext: round(size / 2 ** 20, 2) for ext, size in files.items()}}
    try:   # 9.x adds what vector search wants in the page cache, by file ("off_heap"); 8.19 has the count
        out["dense_vector"] = client.indices.stats(index=index, metric="dense_vector")["indices"][index]["primaries"][
            "dense_vector"]
    except (ApiError, KeyError):
        pass
    return out


def heap_mib(client: Elasticsearch) -> dict:
    """JVM heap used and the maximum, summed over the nodes."""
    mems = [n["jvm"]["mem"] for n in client.nodes.stats(metric="jvm")["nodes"].values()]
    return {"heap_used_mib": round(sum(m["heap_used_in_bytes"] for m in mems) / 2 ** 20),
            "heap_max_mib": round(sum(m["heap_max_in_bytes"] for m in mems) / 2 ** 20)}


def index_options(client: Elasticsearch, index: str) -> dict:
    """The vector field's index_options as the server applies them, defaults included (rescoring, ...)."""
    field = client.indices.get_field_mapping(index=index, fields="vector", include_defaults=True)
    mapping = field[index]["mappings"]["vector"]["mapping"]["vector"]
    return mapping.get("index_options", {})


def create_index(client: Elasticsearch, store: ElasticStore, data: DataSet, shards: int | None,
                 replicas: int | None) -> None:
    """The physical index the store would create, made first with the given shards and replicas (the store
    then finds it and points its alias at it)."""
    body = index_body(data.descriptor, data.vectors.shape[1], **store.index_options)
    body["settings"] = {k: v for k, v in (("number_of_shards", shards), ("number_of_replicas", replicas))
                        if v is not None}
    client.indices.create(index=store.index_for(data.descriptor), **body)


def run_type(url: str, client: Elasticsearch, index_type: str, data: DataSet, embedded: EmbeddedStore | None,
             truth, args, emit) -> None:
    alias = f"esbench-{index_type}-{data.name}".lower().replace("+", "-")
    settings = Settings(store=url, es_index=alias, es_index_type=index_type, es_timeout=600.0, es_wait=120.0,
                        es_hnsw_m=args.m, es_hnsw_ef_construction=args.ef_construction)
    store = ElasticStore.from_settings(settings)
    try:
        if args.shards is not None or args.replicas is not None:
            create_index(client, store, data, args.shards, args.replicas)
        cpu = cluster_cpu_seconds(client)
        rate = upsert_all(store, data, args.batch)
        index = store.stats()["index"]
        client.indices.refresh(index=index)
        head = {"set": data.name, "type": index_type, "documents": len(data.vectors)}
        written = index_stats(client, index)
        emit({**head, "row": "index", "upsert_docs_per_s": round(rate), "batch": args.batch,
              "server_cpu_s": round(cluster_cpu_seconds(client) - cpu, 1), "loadavg": round(os.getloadavg()[0], 1),
              "written": written, "page_cache_mib": page_cache_mib(written["files_mib"], index_type),
              "index_options": index_options(client, index), **heap_mib(client), "nodes": per_node(client)})
        segments = written["segments"]
        for state in ("written", "merged"):
            if state == "merged":
                if "merged" not in args.states:
                    break
                t0 = time.perf_counter()
                client.options(request_timeout=3 * 3600).indices.forcemerge(index=index, max_num_segments=1)
                client.indices.refresh(index=index)
                merged = index_stats(client, index)
                emit({**head, "row": "merged", "merge_seconds": round(time.perf_counter() - t0, 1),
                      "merged": merged, "page_cache_mib": page_cache_mib(merged["files_mib"], index_type),
                      **heap_mib(client), "nodes": per_node(client)})
                segments = merged["segments"]
            # hnsw keeps float vectors: nothing to rescore
            factors = args.oversample if index_type != "hnsw" else [0.0]
            for candidates in (args.candidates if state in args.states else ()):
                for oversample in factors:
                    if state == "written":     # background merges go on after the writes: count them now
                        segments = index_stats(client, index)["segments"]
                    emit({**head, "row": "knn", "state": state, "segments": segments,
                          **measure(store, embedded, data, truth, candidates, oversample),
                          "loadavg": round(os.getloadavg()[0], 1)})
                    for clients in args.clients:
                        emit({**head, "row": "clients", "state": state, "num_candidates": candidates,
                              "oversample": oversample, **concurrent_latency(store, data, clients),
                              "loadavg": round(os.getloadavg()[0], 1)})
        emit({**head, "row": "heap", **heap_mib(client), "nodes": per_node(client)})
    finally:
        store.close()
        if not args.keep:
            for name in client.indices.get(index=f"{alias}-*", expand_wildcards="all"):
                client.indices.delete(index=name)      # by name: wildcard deletes are refused by default


def cluster_cpu_seconds(client: Elasticsearch) -> float:
    """CPU time of every node's process so far."""
    nodes = client.nodes.stats(metric="process")["nodes"].values()
    return sum(n["process"]["cpu"]["total_in_millis"] for n in nodes) / 1000


def tables(rows: list[dict]) -> str:
    """Markdown tables of the run's rows."""
    knn = [r for r in rows if r["row"] == "knn"]
    out = ["| set | type | index | num_candidates | oversample | recall@10 | recall@100 | min recall@10 | "
           "ES p50 / p95 ms | exact p50 / p95 ms | p50 ratio | max score error |", "|" + " --- |" * 12]
    for r in knn:
        out.append(f"| {r['set']} | {r['type']} | {r['state']} ({r['segments']} seg.) | {r['num_candidates']} | "
                   f"{r['oversample'] or '-'} | "
                   f"{r['recall@10']:.4f} | {r['recall@100']:.4f} | {r['min_recall@10']:.1f} | "
                   f"{r['es_p50_ms']} / {r['es_p95_ms']} | {r['exact_p50_ms']} / {r['exact_p95_ms']} | "
                   f"{r['p50_ratio']} | {r['max_score_error']:.2g} |")
    index = {(r["set"], r["type"]): r for r in rows if r["row"] == "index"}
    merged = {(r["set"], r["type"]): r for r in rows if r["row"] == "merged"}
    heap = {(r["set"], r["type"]): r for r in rows if r["row"] == "heap"}
    base = {r["set"]: r for r in rows if r["row"] == "exact"}
    out += ["", "| set | type | upsert docs/s (embedded) | size as written MiB (segments) | merged MiB | "
            "merge s | heap used MiB (of) |", "|" + " --- |" * 7]
    for key, r in index.items():
        m, h = merged.get(key, {}), heap.get(key, {})
        embedded = base[key[0]]["upsert_docs_per_s"]
        embedded_rate = "-" if embedded is None else f"{embedded:,}"
        out.append(f"| {key[0]} | {key[1]} | {r['upsert_docs_per_s']:,} ({embedded_rate}) | "
                   f"{r['written']['store_mib']} ({r['written']['segments']}) | "
                   f"{m.get('merged', {}).get('store_mib')} | "
                   f"{m.get('merge_seconds')} | {h.get('heap_used_mib')} ({h.get('heap_max_mib')}) |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.elastic", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="folder holding the labelled sets (default: LOOKALIKE_SAMPLE_DATA)")
    parser.add_argument("--datasets", nargs="*", default=["corel1k", "ukbench-600"])
    parser.add_argument("--store", action="append", default=[], metavar="NAME=PATH",
                        help="also the vectors of an embedded store (PATH/index.sqlite3 or the file), e.g. one "
                             "`python -m indexer` filled; instead of --datasets when the descriptors are not cached")
    parser.add_argument("--synthetic", type=int, default=100_000, metavar="N", help="synthetic documents (0: none)")
    parser.add_argument("--queries", type=int, default=500, help="held-out synthetic queries")
    parser.add_argument("--types", nargs="+", default=["hnsw", "int8_hnsw", "bbq_hnsw"])
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--oversample", type=float, nargs="+", default=[Settings().es_rescore_oversample],
                        help="on int8_hnsw, int4_hnsw and bbq_hnsw: rescore oversample x k hits by the float "
                             "vectors (the store's rescore_vector; 0: none sent; default: the store's default)")
    parser.add_argument("--m", type=int, default=Settings().es_hnsw_m,
                        help="HNSW neighbours per node (LOOKALIKE_ES_HNSW_M; default: the store's)")
    parser.add_argument("--ef-construction", type=int, default=Settings().es_hnsw_ef_construction,
                        help="HNSW candidates while building (LOOKALIKE_ES_HNSW_EF_CONSTRUCTION; default: the store's)")
    parser.add_argument("--batch", type=int, default=5000,
                        help="documents per upsert (the store sends them in bulk requests of 500, 4 at a time)")
    parser.add_argument("--mix", action="store_true",
                        help="one collection of every set (the photos among the synthetic vectors), not one per set")
    parser.add_argument("--real-queries", type=int, metavar="N",
                        help="with --mix: N images of each photo set are queries (default: every image)")
    parser.add_argument("--exact", choices=["embedded", "numpy"], default="embedded",
                        help="the exact baseline: the embedded store's kNN, or numpy on the same vectors (for 1M)")
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 8],
                        help="kNN latency also with this many clients searching at once")
    parser.add_argument("--shards", type=int, help="the index's primary shards (default: the server's)")
    parser.add_argument("--replicas", type=int, help="the index's replicas (default: the server's)")
    parser.add_argument("--keep", action="store_true", help="keep the indices at the end")
    parser.add_argument("--states", nargs="+", choices=["written", "merged"], default=["written", "merged"],
                        help="search the index as written, after the force-merge to one segment, or both")
    parser.add_argument("--url", help="an Elasticsearch to use instead of starting one")
    parser.add_argument("--version", default="8", help="the node to start: 8 (8.19.21) or 9 (9.5.3)")
    parser.add_argument("--heap", default="1g", help="the started node's JVM heap (docker-compose.yml: 1g)")
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-descriptors"))
    parser.add_argument("--table", type=Path, help="also write the markdown tables here")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if args.datasets:
        args.data = args.data or Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", "."))
        check_inputs(parser, args.weights, args.data, args.datasets)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row) if args.json else " ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    sets = [real(name, args.data, args.weights, args.cache) for name in args.datasets]
    for given in args.store:
        name, _, path = given.partition("=")
        path = Path(path)
        sets.append(from_store(name, path / "index.sqlite3" if path.is_dir() else path))
    if args.synthetic:
        # mixed in: the photos count towards the N documents
        real_docs = sum(len(d.vectors) for d in sets) if args.mix else 0
        like = np.concatenate([d.vectors for d in sets]) if args.mix and sets else None
        sets.append(synthetic(args.synthetic - real_docs, args.queries, like=like))
    if args.mix:
        sets = [mixed(sets, args.real_queries)]
    node = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that `finally` stops the node
    if args.url is None:
        from tests import es_node
        node = es_node.start(args.version, heap=args.heap, jvm_options=VECTOR_JVM_OPTIONS)
    url = args.url or node.url
    try:
        client = Elasticsearch(url, request_timeout=600)
        version = next(iter(client.nodes.info()["nodes"].values()))["version"]
        java = "?"
        if node is not None:
            java = subprocess.run([node.command[0], "-version"], capture_output=True, text=True).stderr.splitlines()[0]
        emit({"row": "machine", "machine": machine(), "elasticsearch": version,
              "heap": args.heap if node else None, "java": java,
              "simd": None if node is None else "vector incubator API enabled" in node.log.read_text(errors="replace")})
        with tempfile.TemporaryDirectory(prefix="lookalike-esbench-") as tmp:
            for data in sets:
                if args.exact == "numpy":
                    truth = exact_numpy(data)
                    emit({"row": "exact", "set": data.name, "documents": len(data.vectors),
                          "queries": len(data.queries), "upsert_docs_per_s": None, **structure(data, truth[1])})
                    for index_type in args.types:
                        run_type(url, client, index_type, data, None, truth, args, emit)
                    continue
                with EmbeddedStore(Path(tmp) / f"{data.name}.sqlite3") as embedded:
                    rate = upsert_all(embedded, data, args.batch)
                    embedded.knn(data.queries[0], descriptor=data.descriptor, limit=10)   # load its vectors
                    truth = exact(embedded, data)
                    emit({"row": "exact", "set": data.name, "documents": len(data.vectors),
                          "queries": len(data.queries), "upsert_docs_per_s": round(rate), "batch": args.batch,
                          **structure(data, truth[1])})
                    for index_type in args.types:
                        run_type(url, client, index_type, data, embedded, truth, args, emit)
        if args.table:
            args.table.write_text(tables(rows) + "\n")
        if not args.json:
            print(tables(rows))
    finally:
        if node is not None:
            node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
