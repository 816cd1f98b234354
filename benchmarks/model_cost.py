"""Model cost per image: input sizes, precisions, oneDNN on/off, in one run.

    python -m benchmarks.model_cost [--images 16] [--rounds 2] [--sizes sq224 ar336 ar448]
        [--precisions float32 int8 bfloat16] [--weights W] [--data DIR]

Times the bare batched forward (FeatureExtractor.embed, batch 16) on the first N images of each shared
set, prepared beforehand, for every size and precision (float32 is TensorFlow, bfloat16 and int8 are the
product's OpenVINO paths, built or loaded from the model cache beforehand). TensorFlow reads
TF_ENABLE_ONEDNN_OPTS at import, so oneDNN off runs in its own process (ar448 float32 only); within a
process the configurations alternate round by round. Each precision's descriptors are compared with
float32's at the same size (cosine, and agreement of the top 4 neighbours). The CPU and its relevant
flags are printed first.
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
ONEDNN = {"onednn-on": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "onednn-off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def configs(name: str, sizes, precisions) -> list[tuple[str, str]]:
    if name == "onednn-off":
        return [("ar448", "float32")] if "ar448" in sizes and "float32" in precisions else []
    return [(size, precision) for size in sizes for precision in precisions]


def worker(name: str, weights: str, data: Path, images: int, rounds: int, out: Path, sizes, precisions) -> dict:
    from backend.features import FeatureExtractor
    from benchmarks.datasets import read_labels
    from benchmarks.descriptors import spec_of
    from backend.imaging import Limits, decode, read_file

    limits = Limits()
    paths = [p for s in SETS for p in list(read_labels(data / s))[:images]]
    extractors = {(tag, precision): FeatureExtractor(weights, spec_of(tag), precision)
                  for tag, precision in configs(name, sizes, precisions)}
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
    return {f"{t}-{p}": {"s_per_img": [round(x, 3) for x in timings[(t, p)]], "runtime": e.runtime}
            for (t, p), (e, _) in extractors.items()} | {"loadavg": os.getloadavg()[0], "images": len(paths)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16, help="images from each set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", ".")))
    parser.add_argument("--sizes", nargs="+", default=["sq224", "ar336", "ar448"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8", "bfloat16"],
                        choices=["float32", "int8", "bfloat16"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lookalike-model-cost"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.weights, args.data, args.images, args.rounds,
                                args.out / f"{args.worker}.npz", args.sizes, args.precisions)))
        return 0
    check_inputs(parser, args.weights, args.data, SETS)
    args.out.mkdir(parents=True, exist_ok=True)
    from backend.precision import Cpu

    print(f"CPU: {Cpu.this().describe()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for name, env in ONEDNN.items():
        if not configs(name, args.sizes, args.precisions):
            continue
        proc = subprocess.run([sys.executable, "-m", "benchmarks.model_cost", "--worker", name, "--images",
                               str(args.images), "--rounds", str(args.rounds), "--weights", args.weights,
                               "--data", str(args.data), "--out", str(args.out), "--sizes", *args.sizes,
                               "--precisions", *args.precisions], check=True, text=True,
                              capture_output=True, env={**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path)})
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), flush=True)
    on = np.load(args.out / "onednn-on.npz")
    top = lambda v: np.argsort(-(v @ v.T), axis=1)[:, 1:5]  # noqa: E731
    if "float32" in args.precisions:
        for size in args.sizes:
            f32 = on[f"{size}-float32"]
            for precision in args.precisions:
                if precision != "float32":
                    other = on[f"{size}-{precision}"]
                    cos = (f32 * other).sum(axis=1)
                    agree = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(top(f32), top(other))])
                    print(f"{precision} vs float32 ({size}): cosine min {cos.min():.5f} mean {cos.mean():.5f}; "
                          f"top-4 neighbour agreement {agree:.3f}")
    if "onednn-off" in results:
        off = np.load(args.out / "onednn-off.npz")
        print(f"oneDNN on vs off (ar448 float32): cosine min "
              f"{(on['ar448-float32'] * off['ar448-float32']).sum(axis=1).min():.6f}")
    medians = {(name, key): float(np.median(value["s_per_img"])) for name, res in results.items()
               for key, value in res.items() if isinstance(value, dict)}
    for (name, key), med in medians.items():
        size = key.split("-")[0]
        base = medians.get(("onednn-on", f"{size}-float32"))
        ratio = f" ({base / med:.2f}x float32 at {size})" if base else ""
        print(f"{name:>10} {key:>16}: {med:.3f} s/img{ratio}  [{results[name][key]['runtime']}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
