"""Model cost per image: input sizes, oneDNN on/off, float32 vs bfloat16, in one run.

    python -m benchmarks.model_cost [--images 16] [--rounds 2] [--weights W] [--data DIR]

Times the bare batched forward (FeatureExtractor.embed, batch 16) on the first N images of each shared
set, prepared beforehand. TensorFlow reads TF_ENABLE_ONEDNN_OPTS at import, so each setting runs in its
own process; within a process the configurations alternate round by round. bfloat16 is Keras'
"mixed_bfloat16" policy (weights float32, compute bfloat16); its descriptors are compared with float32's
on the same images (cosine, and agreement of the top 4 neighbours).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .datasets import check_inputs

SETS = ("ukbench-600", "corel1k")
CONFIGS = {  # process -> (environment, [(size tag, precision)])
    "onednn-on": ({"TF_ENABLE_ONEDNN_OPTS": "1"},
                  [("sq224", "float32"), ("ar336", "float32"), ("ar448", "float32"), ("ar448", "bfloat16")]),
    "onednn-off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, [("ar448", "float32")]),
}


def worker(name: str, weights: str, data: Path, images: int, rounds: int, out: Path) -> dict:
    import keras

    from backend.features import FeatureExtractor
    from benchmarks.datasets import read_labels
    from benchmarks.descriptors import spec_of
    from backend.imaging import Limits, decode, read_file

    limits = Limits()
    paths = [p for s in SETS for p in list(read_labels(data / s))[:images]]
    extractors = {}
    for tag, precision in CONFIGS[name][1]:
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        extractors[(tag, precision)] = FeatureExtractor(weights, spec_of(tag))  # layers keep their policy
    keras.mixed_precision.set_global_policy("float32")
    timings = {key: [] for key in extractors}
    vectors = {}
    for key, extractor in extractors.items():
        arrays = [extractor.prepare(decode(read_file(Path(p), limits), limits, p,
                                           draft_size=extractor.spec.image_size).image) for p in paths]
        extractor.embed(arrays, 16)                      # warm-up: trace every shape
        extractors[key] = (extractor, arrays)
    for _ in range(rounds):
        for key, (extractor, arrays) in extractors.items():
            started = time.perf_counter()
            vectors[key] = extractor.embed(arrays, 16)
            timings[key].append((time.perf_counter() - started) / len(arrays))
    np.savez(out, **{f"{t}-{p}": v for (t, p), v in vectors.items()})
    return {f"{t}-{p}": {"s_per_img": [round(x, 3) for x in timings[(t, p)]]} for t, p in extractors} | {
        "loadavg": os.getloadavg()[0], "images": len(paths)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images from each set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", ".")))
    parser.add_argument("--out", type=Path, default=Path("/tmp/lookalike-model-cost"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.data, args.images, args.rounds,
                                args.out / f"{args.worker}.npz")))
        return 0
    check_inputs(parser, args.weights, args.data, SETS)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (env, _) in CONFIGS.items():
        proc = subprocess.run([sys.executable, "-m", "benchmarks.model_cost", "--worker", name, "--images",
                               str(args.images), "--rounds", str(args.rounds), "--weights", args.weights,
                               "--data", str(args.data), "--out", str(args.out)], check=True, text=True,
                              capture_output=True, env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)})
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), flush=True)
    on = np.load(args.out / "onednn-on.npz")
    off = np.load(args.out / "onednn-off.npz")
    f32, b16 = on["ar448-float32"], on["ar448-bfloat16"]
    cos = (f32 * b16).sum(axis=1)
    top = lambda v: np.argsort(-(v @ v.T), axis=1)[:, 1:5]  # noqa: E731
    agree = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(top(f32), top(b16))])
    print(f"bfloat16 vs float32 (ar448): cosine min {cos.min():.4f} mean {cos.mean():.4f}; "
          f"top-4 neighbour agreement {agree:.3f}")
    print(f"oneDNN on vs off (ar448 float32): cosine min {(f32 * off['ar448-float32']).sum(axis=1).min():.6f}")
    base = np.median(results["onednn-on"]["sq224-float32"]["s_per_img"])
    for name, res in results.items():
        for key, value in res.items():
            if isinstance(value, dict):
                med = float(np.median(value["s_per_img"]))
                print(f"{name:>10} {key:>16}: {med:.3f} s/img ({med / base:.2f} x sq224 float32 oneDNN on)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
