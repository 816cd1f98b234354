"""Indexing speed, three ways in ONE run on the same images (ratios hold under a shared, varying load).

    python -m benchmarks.indexing [DATASET_DIR] [--limit N] [--rounds R] [--batch-size N]
        [--pooling P] [--image-size N] [--square] [--weights W] [--json]

(a) the product's indexer: Indexer.run into a fresh embedded store (read, hash, decode and resize in
    threads ahead of batched model calls, one bulk upsert per batch);
(b) the bare batched model forward (FeatureExtractor.embed) on pictures decoded and resized beforehand;
(c) a naive loop, one image at a time: read, decode (with the same JPEG draft as the product), resize,
    model call on a batch of one, upsert one document.
The model is built and warmed up once, before any timing, and shared by the three. Each round runs
b, a, c on the same files; the ratios a/b (target >= 0.9) and a/c (target >= 3) use the totals.
DATASET_DIR defaults to $LOOKALIKE_SAMPLE_DATA/ukbench-600.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.config import Settings
from backend.features import FeatureExtractor
from backend.imaging import Limits, decode, read_file
from backend.stores.base import Document
from backend.stores.embedded import EmbeddedStore
from indexer.pipeline import Indexer
from indexer.scan import scan


def _prepare(extractor: FeatureExtractor, path: Path, limits: Limits) -> np.ndarray:
    data = read_file(path, limits)
    return extractor.prepare(decode(data, limits, str(path), draft_size=extractor.spec.image_size).image)


def bare_forward(extractor, files, limits, batch_size) -> float:
    arrays = [_prepare(extractor, f.path, limits) for f in files]
    started = time.perf_counter()
    extractor.embed(arrays, batch_size)
    return time.perf_counter() - started


def full_indexer(extractor, files, limits, batch_size) -> float:
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp, \
            EmbeddedStore(Path(tmp) / "index.sqlite3") as store:
        summary = Indexer(store, extractor, limits, batch_size).run(files)
        assert summary.indexed == len(files) and not summary.failures, summary.failures[:3]
        return summary.seconds


def naive_loop(extractor, files, limits) -> float:
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp, \
            EmbeddedStore(Path(tmp) / "index.sqlite3") as store:
        started = time.perf_counter()
        for f in files:
            data = read_file(f.path, limits)
            decoded = decode(data, limits, str(f.path), draft_size=extractor.spec.image_size)
            vector = extractor.embed([extractor.prepare(decoded.image)])[0]
            store.upsert([Document(id=f.id, vector=vector, filename=f.path.name, path=str(f.path), tags=[],
                                   width=decoded.width, height=decoded.height, bytes=f.bytes,
                                   content_hash=hashlib.sha256(data).hexdigest(),
                                   descriptor=extractor.descriptor_id, indexed_at=time.time(),
                                   modified_at=f.modified_at)])
        seconds = time.perf_counter() - started
        assert store.count() == len(files)
        return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.indexing", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, nargs="?",
                        default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", ".")) / "ukbench-600")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--pooling")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--square", action="store_true")
    parser.add_argument("--weights")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    overrides = {f"LOOKALIKE_{k}": str(v) for k, v in (("BATCH_SIZE", args.batch_size), ("POOLING", args.pooling),
                 ("IMAGE_SIZE", args.image_size), ("VGG16_WEIGHTS", args.weights)) if v is not None}
    if args.square:
        overrides["LOOKALIKE_SQUARE"] = "true"
    settings = Settings.from_env({**os.environ, **overrides})
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
    files = list(scan([args.dataset]))[:args.limit]
    extractor = FeatureExtractor.from_settings(settings)
    # warm-up: trace the model for a full batch, a batch of one and the shapes of the set
    shapes = {}
    for f in files:
        arr = _prepare(extractor, f.path, limits)
        shapes.setdefault(arr.shape, arr)
    for arr in shapes.values():
        extractor.embed([arr] * settings.batch_size, settings.batch_size)
        extractor.embed([arr])
    totals = {"a": 0.0, "b": 0.0, "c": 0.0}
    rounds = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        b = bare_forward(extractor, files, limits, settings.batch_size)
        a = full_indexer(extractor, files, limits, settings.batch_size)
        c = naive_loop(extractor, files, limits)
        for key, value in zip("abc", (a, b, c)):
            totals[key] += value
        rounds.append({"round": r + 1, "indexer_img_s": len(files) / a, "bare_forward_img_s": len(files) / b,
                       "naive_img_s": len(files) / c, "a_over_b": b / a, "a_over_c": c / a,
                       "loadavg_before": load, "loadavg_after": os.getloadavg()[0]})
        if not args.json:
            x = rounds[-1]
            print(f"round {r + 1}: indexer {x['indexer_img_s']:.2f} img/s, bare forward "
                  f"{x['bare_forward_img_s']:.2f} img/s, naive {x['naive_img_s']:.2f} img/s; a/b {x['a_over_b']:.3f}, "
                  f"a/c {x['a_over_c']:.2f} (load avg {load:.1f} -> {x['loadavg_after']:.1f})", flush=True)
    result = {"dataset": str(args.dataset), "images": len(files), "descriptor": extractor.descriptor_id,
              "batch_size": settings.batch_size, "rounds": rounds,
              "a_over_b": totals["b"] / totals["a"], "a_over_c": totals["c"] / totals["a"],
              "indexer_img_s": len(files) * args.rounds / totals["a"],
              "bare_forward_img_s": len(files) * args.rounds / totals["b"],
              "naive_img_s": len(files) * args.rounds / totals["c"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(files)} images x {args.rounds} rounds, {extractor.descriptor_id}, batch {settings.batch_size}: "
              f"a/b = {result['a_over_b']:.3f} (target >= 0.9), a/c = {result['a_over_c']:.2f} (target >= 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
