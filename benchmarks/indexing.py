"""Indexing speed, three ways in ONE run on the same images.

    python -m benchmarks.indexing [DATASET_DIR] [--limit N] [--chunk N] [--batch-size N]
        [--pooling P] [--image-size N] [--square] [--weights W] [--json]

(a) the product's indexer: Indexer.run into an embedded store (read, hash, decode and resize in threads
    ahead of batched model calls, one bulk upsert per batch);
(b) the bare batched model forward (FeatureExtractor.embed) on pictures decoded and resized beforehand;
(c) a naive loop, one image at a time: read, decode (with the same JPEG draft as the product), resize,
    model call on a batch of one, upsert one document.
The model is built and warmed up once, before any timing, and shared by the three. The machine's load
from other processes changes by the minute, so the images go in chunks and every chunk runs all three
(in rotating order): each sees the same load, and the ratios a/b (target >= 0.9) and a/c (target >= 3)
use the totals. DATASET_DIR defaults to $LOOKALIKE_SAMPLE_DATA/ukbench-600.
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


def bare_forward(extractor, files, limits, batch_size, store) -> float:
    arrays = [_prepare(extractor, f.path, limits) for f in files]
    started = time.perf_counter()
    extractor.embed(arrays, batch_size)
    return time.perf_counter() - started


def full_indexer(extractor, files, limits, batch_size, store) -> float:
    summary = Indexer(store, extractor, limits, batch_size).run(files)
    assert summary.indexed == len(files) and not summary.failures, summary.failures[:3]
    return summary.seconds


def naive_loop(extractor, files, limits, batch_size, store) -> float:
    started = time.perf_counter()
    for f in files:
        data = read_file(f.path, limits)
        decoded = decode(data, limits, str(f.path), draft_size=extractor.spec.image_size)
        vector = extractor.embed([extractor.prepare(decoded.image)])[0]
        store.upsert([Document(id=f.id, vector=vector, filename=f.path.name, path=str(f.path), tags=[],
                               width=decoded.width, height=decoded.height, bytes=f.bytes,
                               content_hash=hashlib.sha256(data).hexdigest(), descriptor=extractor.descriptor_id,
                               indexed_at=time.time(), modified_at=f.modified_at)])
    return time.perf_counter() - started


MODES = {"a": full_indexer, "b": bare_forward, "c": naive_loop}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.indexing", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, nargs="?",
                        default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", ".")) / "ukbench-600")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    parser.add_argument("--chunk", type=int, default=48, metavar="N", help="images per chunk (default 48)")
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
    # warm-up: trace the model for a full batch, a batch of one and every shape of the set
    shapes = {}
    for f in files:
        arr = _prepare(extractor, f.path, limits)
        shapes.setdefault(arr.shape, arr)
    for arr in shapes.values():
        extractor.embed([arr] * settings.batch_size, settings.batch_size)
        extractor.embed([arr])
    seconds = {mode: 0.0 for mode in MODES}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        stores = {mode: EmbeddedStore(Path(tmp) / f"{mode}.sqlite3") for mode in MODES}
        for number, start in enumerate(range(0, len(files), args.chunk)):
            chunk = files[start:start + args.chunk]
            order = "bac"[number % 3:] + "bac"[:number % 3]
            for mode in order:
                seconds[mode] += MODES[mode](extractor, chunk, limits, settings.batch_size, stores[mode])
            loads.append(os.getloadavg()[0])
            if not args.json:
                done = start + len(chunk)
                print(f"{done}/{len(files)}: " + ", ".join(f"{m} {done / seconds[m]:.2f} img/s" for m in "abc")
                      + f" (load avg {loads[-1]:.1f})", flush=True)
        assert stores["a"].count() == stores["c"].count() == len(files)
        for store in stores.values():
            store.close()
    n = len(files)
    result = {"dataset": str(args.dataset), "images": n, "descriptor": extractor.descriptor_id,
              "batch_size": settings.batch_size, "chunk": args.chunk,
              "indexer_img_s": n / seconds["a"], "bare_forward_img_s": n / seconds["b"],
              "naive_img_s": n / seconds["c"], "a_over_b": seconds["b"] / seconds["a"],
              "a_over_c": seconds["c"] / seconds["a"], "loadavg_min": min(loads), "loadavg_max": max(loads)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{n} images, {extractor.descriptor_id}, batch {settings.batch_size}: indexer (a) "
              f"{result['indexer_img_s']:.2f} img/s, bare forward (b) {result['bare_forward_img_s']:.2f}, naive (c) "
              f"{result['naive_img_s']:.2f}; a/b = {result['a_over_b']:.3f} (target >= 0.9), "
              f"a/c = {result['a_over_c']:.2f} (target >= 3); load avg {min(loads):.1f} to {max(loads):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
