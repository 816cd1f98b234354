"""Indexing speed, five ways in ONE run on the same images.

    python -m benchmarks.indexing [DATASET_DIR] [--limit N] [--chunk N] [--batch-size N]
        [--pooling P] [--image-size N] [--square] [--weights W] [--precision P] [--json]

(a) the product's indexer: Indexer.run into an embedded store (read, hash, decode and resize in threads
    ahead of batched model calls, one bulk upsert per batch), at the configured precision
    (LOOKALIKE_PRECISION or --precision; default auto);
(f) the same indexer at float32 (TensorFlow), when (a) is not float32 already;
(b) the bare batched model forward (FeatureExtractor.embed) on pictures decoded and resized beforehand;
(c) the naive loop of the tutorials, written as the tutorials write it, one image at a time: read,
    decode in full (turned upright by its EXIF orientation), resize, Keras `preprocess_input` and
    `model.predict` on one picture, pool, upsert one document;
(d) a stricter per-image loop: the same, but with the product's JPEG draft decoding and its compiled
    model call (a batch of one); it isolates what batching alone buys.
(b) and (d) use (a)'s precision; (c) is float32 Keras, as the tutorials run it. (f), (c) and (d) at
float32 give the same vectors as a float32 (a) (checked); at another precision, (a)'s cosine to (f) is
printed. The models are built and warmed up before any timing. The machine's load from other processes
changes by the minute, so the images go in chunks and every chunk runs every mode (in rotating order):
each sees the same load, and the ratios a/f, a/b (target >= 0.9) and a/c (target >= 3) use the totals.
The CPU and its relevant flags are printed. The model's arithmetic rate (GFLOP/s of VGG16's convolutions) is
printed beside a float32 matrix product on the same cores, the practical ceiling of this CPU.
DATASET_DIR defaults to $LOOKALIKE_SAMPLE_DATA/ukbench-600.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from backend.config import ConfigError, Settings
from backend.features import FeatureExtractor, WeightsError, pool_maps
from backend.imaging import Limits, decode, read_file
from backend.ingest import FileToIndex, Indexer
from backend.stores.base import Document
from backend.stores.embedded import EmbeddedStore
from indexer.scan import scan

# VGG16's convolutions up to block5_conv3: (stride of the map relative to the input, in, out channels).
VGG16_CONVS = ((1, 3, 64), (1, 64, 64), (2, 64, 128), (2, 128, 128), (4, 128, 256), (4, 256, 256),
               (4, 256, 256), (8, 256, 512), (8, 512, 512), (8, 512, 512), (16, 512, 512), (16, 512, 512),
               (16, 512, 512))


def conv_flops(height: int, width: int) -> float:
    """Floating-point operations (2 per multiply-add) of VGG16's 3x3 convolutions on one picture."""
    return sum(2 * 9 * cin * cout * (height // s) * (width // s) for s, cin, cout in VGG16_CONVS)


def matmul_gflops(n: int = 2048, rounds: int = 3) -> float:
    """The best float32 matrix-product rate on this machine's cores (OpenBLAS, all threads)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * n ** 3 / best / 1e9


def _prepare(extractor: FeatureExtractor, path: Path, limits: Limits) -> np.ndarray:
    data = read_file(path, limits)
    return extractor.prepare(decode(data, limits, str(path), draft_size=extractor.spec.image_size).image)


def _document(f: FileToIndex, data: bytes, size: tuple[int, int], vector, descriptor: str) -> Document:
    return Document(id=f.id, vector=vector, filename=f.path.name, path=str(f.path), tags=[], width=size[0],
                    height=size[1], bytes=f.bytes, content_hash=hashlib.sha256(data).hexdigest(),
                    descriptor=descriptor, indexed_at=time.time(), modified_at=f.modified_at)


def full_indexer(extractor, files, limits, batch_size, store) -> float:
    summary = Indexer(store, extractor, limits, batch_size).run(files)
    assert summary.indexed == len(files) and not summary.failures, summary.failures[:3]
    return summary.seconds


def bare_forward(extractor, files, limits, batch_size, store) -> float:
    arrays = [_prepare(extractor, f.path, limits) for f in files]
    started = time.perf_counter()
    extractor.embed(arrays, batch_size)
    return time.perf_counter() - started


def naive_loop(extractor, files, limits, batch_size, store) -> float:
    from keras.applications.vgg16 import preprocess_input

    started = time.perf_counter()
    for f in files:
        data = f.path.read_bytes()
        picture = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")   # upright, as (a)
        x = preprocess_input(extractor.prepare(picture)[np.newaxis].astype(np.float32))
        vector = pool_maps(extractor.model.predict(x, verbose=0), extractor.spec.pooling)[0]
        store.upsert([_document(f, data, picture.size, vector, extractor.descriptor_id)])
    return time.perf_counter() - started


def per_image_loop(extractor, files, limits, batch_size, store) -> float:
    started = time.perf_counter()
    for f in files:
        data = read_file(f.path, limits)
        decoded = decode(data, limits, str(f.path), draft_size=extractor.spec.image_size)
        vector = extractor.embed([extractor.prepare(decoded.image)])[0]
        store.upsert([_document(f, data, (decoded.width, decoded.height), vector, extractor.descriptor_id)])
    return time.perf_counter() - started


MODES = {"a": ("indexer", full_indexer), "f": ("indexer at float32", full_indexer),
         "b": ("bare batched forward", bare_forward),
         "c": ("naive loop (model.predict)", naive_loop), "d": ("per-image loop (compiled call)", per_image_loop)}


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
    parser.add_argument("--precision", help="(a)'s precision: auto, float32, bfloat16, int8 (default: the setting)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    overrides = {f"LOOKALIKE_{k}": str(v) for k, v in (("BATCH_SIZE", args.batch_size), ("POOLING", args.pooling),
                 ("IMAGE_SIZE", args.image_size), ("VGG16_WEIGHTS", args.weights), ("PRECISION", args.precision))
                 if v is not None}
    if args.square:
        overrides["LOOKALIKE_SQUARE"] = "true"
    if not args.dataset.is_dir():
        parser.error(f"{args.dataset}: no such folder (give a folder of images, such as "
                     "$LOOKALIKE_SAMPLE_DATA/ukbench-600)")
    files = list(scan([args.dataset]))[:args.limit]
    if not files:
        parser.error(f"no images under {args.dataset}")
    try:
        settings = Settings.from_env({**os.environ, **overrides})
        extractor = FeatureExtractor.from_settings(settings)
        float32 = extractor if extractor.precision == "float32" else \
            FeatureExtractor.from_settings(settings.with_(precision="float32"))
    except (ConfigError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
    # warm-up: trace every shape of the set for a full batch, a batch of one and Keras' predict
    shapes, flops = {}, 0.0
    for f in files:
        arr = _prepare(extractor, f.path, limits)
        shapes.setdefault(arr.shape, arr)
        flops += conv_flops(*arr.shape[:2])
    for arr in shapes.values():
        for model in {id(extractor): extractor, id(float32): float32}.values():
            model.embed([arr] * settings.batch_size, settings.batch_size)
            model.embed([arr])
        float32.model.predict(arr[np.newaxis].astype(np.float32), verbose=0)
    modes = [m for m in MODES if m != "f" or float32 is not extractor]
    runs_with = {m: float32 if m in "fc" else extractor for m in modes}
    ceilings = [matmul_gflops()]
    seconds = {mode: 0.0 for mode in modes}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        stores = {mode: EmbeddedStore(Path(tmp) / f"{mode}.sqlite3") for mode in modes}
        for number, start in enumerate(range(0, len(files), args.chunk)):
            chunk = files[start:start + args.chunk]
            order = modes[number % len(modes):] + modes[:number % len(modes)]
            for mode in order:
                seconds[mode] += MODES[mode][1](runs_with[mode], chunk, limits, settings.batch_size, stores[mode])
            loads.append(os.getloadavg()[0])
            if not args.json:
                done = start + len(chunk)
                print(f"{done}/{len(files)}: " + ", ".join(f"{m} {done / seconds[m]:.2f}" for m in modes)
                      + f" img/s (load avg {loads[-1]:.1f})", flush=True)
        ceilings.append(matmul_gflops())
        # the float32 ways wrote the same vectors: the comparison is between ways of computing one descriptor
        reference = "f" if "f" in modes else "a"

        def cosine(m1, m2):
            return min(float(stores[m1].get(f.id, with_vector=True).vector
                             @ stores[m2].get(f.id, with_vector=True).vector) for f in files)
        agreement = cosine(reference, "c")
        precision_cosine = cosine("a", reference)
        assert all(stores[m].count() == len(files) for m in modes if m != "b")   # (b) writes nothing
        for store in stores.values():
            store.close()
    n = len(files)
    seconds.setdefault("f", seconds["a"])
    result = {"dataset": str(args.dataset), "images": n, "descriptor": extractor.descriptor_id,
              "precision": extractor.precision, "runtime": extractor.runtime, "cpu": extractor.cpu.describe(),
              "batch_size": settings.batch_size, "chunk": args.chunk,
              **{f"{m}_img_s": round(n / seconds[m], 3) for m in MODES},
              **{f"{m}_gflop_s": round(flops / seconds[m] / 1e9, 1) for m in MODES},
              "matmul_gflop_s": round(max(ceilings), 1), "a_over_f": round(seconds["f"] / seconds["a"], 3),
              "a_over_b": round(seconds["b"] / seconds["a"], 3), "a_over_c": round(seconds["c"] / seconds["a"], 3),
              "a_over_d": round(seconds["d"] / seconds["a"], 3), "min_cosine_float32_to_c": round(agreement, 6),
              "min_cosine_a_to_float32": round(precision_cosine, 6),
              "loadavg_min": min(loads), "loadavg_max": max(loads)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{n} images, {extractor.descriptor_id}, batch {settings.batch_size}, "
          f"load avg {min(loads):.1f} to {max(loads):.1f}; CPU {extractor.cpu.describe()}")
    print(f"  (a) runs {extractor.precision} on {extractor.runtime}: min cosine to float32 {precision_cosine:.6f}; "
          f"float32 (f or a) and (c) the same vectors: min cosine {agreement:.6f}")
    for m, (name, _) in MODES.items():
        if m not in modes:
            continue
        print(f"  ({m}) {name:<32} {n / seconds[m]:6.2f} img/s  {flops / seconds[m] / 1e9:6.1f} GFLOP/s")
    print(f"  float32 matrix product on the same cores: {max(ceilings):.1f} GFLOP/s (the practical ceiling)")
    print(f"  a/f = {result['a_over_f']:.2f}, a/b = {result['a_over_b']:.3f} (target >= 0.9), "
          f"a/c = {result['a_over_c']:.2f} (target >= 3), a/d = {result['a_over_d']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
