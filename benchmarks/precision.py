"""The accuracy gate of the reduced precisions: each one's descriptors against float32's on labelled sets.

    python -m benchmarks.precision [--weights W] [--data DIR] [--datasets corel1k ukbench-600]
        [--precisions int8 bfloat16] [--image-size 336] [--pooling gem] [--limit N] [--json]

Every picture goes through the product's decoding and resizing once; then each precision (float32 first,
the reference) embeds all of them with the product's extractor (batches by shape, batch 16). Printed per
set and precision: the minimum and mean cosine of each picture's descriptor to its float32 descriptor,
mAP, P@1 and (UKBench) N-S, every picture querying all the others, and the bare model seconds per image.
The gate (backend/precision.py): min cosine >= 0.999 and mAP within 0.003 of float32's keeps the
float32 descriptor id.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


from backend.features import FeatureExtractor
from backend.imaging import Limits, decode, read_file
from backend.precision import Cpu

from .datasets import check_inputs, read_labels
from .descriptors import spec_of
from .metrics import evaluate_vectors

MIN_COSINE, MAX_MAP_LOSS = 0.999, 0.003


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", ".")))
    parser.add_argument("--datasets", nargs="+", default=["corel1k", "ukbench-600"])
    parser.add_argument("--precisions", nargs="+", default=["int8", "bfloat16"],
                        choices=["int8", "bfloat16"], help="compared with float32")
    parser.add_argument("--size", default="ar336", help="sq224, ar336, ar448, ... (default ar336)")
    parser.add_argument("--pooling", default="gem")
    parser.add_argument("--limit", type=int, help="only the first N pictures of each set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    check_inputs(parser, args.weights, args.data, args.datasets)
    cpu = Cpu.this()
    spec = spec_of(args.size, args.pooling)
    extractors = {p: FeatureExtractor(args.weights, spec, p) for p in ["float32", *args.precisions]}
    limits = Limits()
    results = {"cpu": cpu.describe(), "descriptor": extractors["float32"].descriptor_id, "sets": {}}
    if not args.json:
        print(f"{cpu.describe()}; {results['descriptor']}", flush=True)
    for name in args.datasets:
        labels = read_labels(args.data / name)
        paths = list(labels)[:args.limit]
        arrays = [extractors["float32"].prepare(decode(read_file(Path(p), limits), limits, p,
                                                       draft_size=spec.image_size).image) for p in paths]
        truth = [labels[p] for p in paths]
        vectors, seconds, loads = {}, {}, [os.getloadavg()[0]]
        for precision, extractor in extractors.items():
            started = time.perf_counter()
            vectors[precision] = extractor.embed(arrays, 16)
            seconds[precision] = (time.perf_counter() - started) / len(arrays)
            loads.append(os.getloadavg()[0])
        rows = {}
        for precision, v in vectors.items():
            cosine = (v * vectors["float32"]).sum(axis=1)
            quality = evaluate_vectors(v, truth)
            rows[precision] = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
                               "mAP": quality["mAP"], "P@1": quality["P@1"], "N-S": quality.get("N-S"),
                               "s_per_image": seconds[precision], "runtime": extractors[precision].runtime}
        for precision, row in rows.items():
            row["passes"] = bool(row["min_cosine"] >= MIN_COSINE
                                 and rows["float32"]["mAP"] - row["mAP"] <= MAX_MAP_LOSS)
        results["sets"][name] = {"images": len(paths), "loadavg": [min(loads), max(loads)], "precisions": rows}
        if not args.json:
            print(f"{name}: {len(paths)} images, load average {min(loads):.1f} to {max(loads):.1f}")
            for precision, row in rows.items():
                ns = f"  N-S {row['N-S']:.3f}" if row["N-S"] is not None else ""
                print(f"  {precision:>8}: cosine to float32 min {row['min_cosine']:.5f} mean {row['mean_cosine']:.5f}"
                      f"  mAP {row['mAP']:.4f}  P@1 {row['P@1']:.3f}{ns}  {row['s_per_image']:.3f} s/img"
                      f"  [{row['runtime']}] gate {'passed' if row['passes'] else 'FAILED'}", flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
