"""Search speed against store size: the embedded store filled with synthetic unit vectors.

    python -m benchmarks.store_size [--sizes 10000 100000 1000000] [--queries 200] [--dir DIR] [--json]

For each size: fill a store (kept under DIR and reused by later runs), then in FRESH processes, one after
the other, as gunicorn workers would be:
  private: the baseline with vector snapshots off: the worker reads every vector into memory of its own;
  first:   the first worker with snapshots on: it writes the shared snapshot file, then maps it;
  next:    a later worker: it maps the snapshot the first one wrote.
Each opens the store and runs the first search (the load time), then times `queries` kNN searches (a
random unit vector, top 24) and as many "refine" searches (SearchService.similar on a random document,
top 24), beside a bare numpy product on an in-memory matrix of the same shape, and reads its memory:
private (RssAnon, each worker's own) and file-backed (RssFile: the page cache, shared by all workers).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from backend.search import SearchService
from backend.stores.base import Document
from backend.stores.embedded import EmbeddedStore, snapshot_folder

DESCRIPTOR = "synthetic-unit-512d"
DIMS = 512


def doc_id(i: int) -> str:
    return f"{i:020x}"


def synthetic_document(i: int, vector: np.ndarray, descriptor: str = DESCRIPTOR) -> Document:
    """Document number i: the given vector and made-up file metadata."""
    return Document(id=doc_id(i), vector=vector, filename=f"img{i}.jpg", path=f"/synthetic/img{i}.jpg", tags=[],
                    width=640, height=480, bytes=100_000, content_hash=f"{i:064x}", descriptor=descriptor,
                    indexed_at=0.0, modified_at=0.0)


def fill(path: Path, n: int, chunk: int = 20_000) -> float:
    """A store of n synthetic documents (seeded unit vectors); returns the seconds taken (0 if reused)."""
    if path.exists():
        with EmbeddedStore(path) as store:
            if store.count() == n:
                return 0.0
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    rng = np.random.default_rng(n)
    started = time.perf_counter()
    with EmbeddedStore(path) as store:
        for start in range(0, n, chunk):
            vectors = rng.standard_normal((min(chunk, n - start), DIMS), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.upsert([synthetic_document(i, v) for i, v in zip(range(start, start + len(vectors)), vectors)])
    return time.perf_counter() - started


def _memory() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}   # MiB


def _no_model():
    raise RuntimeError("the store-size benchmark never embeds an image")


WORKERS = ("private", "first", "next")


def measure(path: Path, queries: int, worker: str) -> dict:
    """Runs in a fresh process: load time, kNN and refine latencies, memory."""
    started = time.perf_counter()
    store = EmbeddedStore(path, snapshot_min_rows=None if worker == "private" else 1000)
    n = store.count()
    rng = np.random.default_rng(1)
    query = rng.standard_normal(DIMS).astype(np.float32)
    store.knn(query / np.linalg.norm(query), descriptor=DESCRIPTOR, limit=24)
    load = time.perf_counter() - started
    after_load = _memory()
    search = SearchService(store, _no_model)
    # the floor, timed in turn with the searches so that both see the same load from other processes:
    # a bare numpy scoring and top-24 of a matrix of the same shape (allocated after reading the RSS)
    matrix = rng.standard_normal((n, DIMS), dtype=np.float32)
    knn, refine, bare = [], [], []
    for _ in range(queries):
        query = rng.standard_normal(DIMS).astype(np.float32)
        query /= np.linalg.norm(query)
        t0 = time.perf_counter()
        np.argpartition(-(matrix @ query), 24)[:24]
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page = store.knn(query, descriptor=DESCRIPTOR, limit=24)
        knn.append(time.perf_counter() - t0)
        assert len(page.hits) == 24
        target = doc_id(int(rng.integers(n)))
        t0 = time.perf_counter()
        page = search.similar(target, limit=24)
        refine.append(time.perf_counter() - t0)
        assert len(page.hits) == 24 and all(h.document.id != target for h in page.hits)
    ms = lambda xs, q: round(1000 * float(np.percentile(xs, q)), 2)  # noqa: E731
    return {"documents": n, "worker": worker, "snapshot": store.vector_snapshot, "load_seconds": round(load, 2),
            "rss_mib_after_load": round(after_load["VmRSS"]), "private_mib": round(after_load["RssAnon"]),
            "file_backed_mib": round(after_load["RssFile"]),
            "peak_rss_mib_during_load": round(after_load["VmHWM"]), "bare_numpy_p50_ms": ms(bare, 50),
            "knn_p50_ms": ms(knn, 50), "knn_p95_ms": ms(knn, 95), "refine_p50_ms": ms(refine, 50),
            "refine_p95_ms": ms(refine, 95), "queries": queries, "file_mib": round(path.stat().st_size / 2 ** 20)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_size", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lookalike-store-size"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)   # the fresh process's entry point
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.queries, args.worker)))
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        path = args.dir / f"store-{n}.sqlite3"
        fill_seconds = fill(path, n)
        shutil.rmtree(snapshot_folder(path), ignore_errors=True)   # so that "first" writes it
        for worker in WORKERS:
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "benchmarks.store_size", "--measure", str(path),
                                  "--worker", worker, "--queries", str(args.queries)], check=True,
                                 capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            row = {**json.loads(out.stdout), "fill_seconds": round(fill_seconds, 1),
                   "process_seconds": round(time.perf_counter() - t0, 2), "loadavg": round(os.getloadavg()[0], 1)}
            rows.append(row)
            print(json.dumps(row) if args.json else
                  f"{n:>9,} docs, {worker:>7} worker: load {row['load_seconds']} s, private "
                  f"{row['private_mib']} MiB + file-backed {row['file_backed_mib']} MiB "
                  f"(peak RSS {row['peak_rss_mib_during_load']}), kNN p50/p95 {row['knn_p50_ms']}/"
                  f"{row['knn_p95_ms']} ms, refine p50/p95 {row['refine_p50_ms']}/{row['refine_p95_ms']} ms, "
                  f"bare numpy p50 {row['bare_numpy_p50_ms']} ms (load avg {row['loadavg']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
