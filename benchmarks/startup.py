"""Start-up of a worker's model per precision, with the model cache ready: fresh processes, interleaved.

    python -m benchmarks.startup [--precisions float32 int8] [--rounds 3] [--weights W] [--json]

Each round starts one fresh Python process per precision (in rotating order); each process imports
the product, builds its FeatureExtractor with the default descriptor (float32 builds the Keras model
and loads the weights; bfloat16 and int8 load the cached OpenVINO model, built beforehand by a first
process that is not timed) and embeds one picture, as a worker's first image search would. Printed:
the median seconds from the process start to that first vector, per precision.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CHILD = """
import time, numpy as np
from backend.config import Settings
from backend.features import FeatureExtractor
e = FeatureExtractor.from_settings(Settings.from_env())
e.embed([np.full((256, 336, 3), 128, np.uint8)])
print(e.precision)
"""


def timed(precision: str, weights: str) -> tuple[float, str]:
    env = {**os.environ, "LOOKALIKE_PRECISION": precision, "LOOKALIKE_VGG16_WEIGHTS": weights,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, out.stdout.strip().splitlines()[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from backend.precision import Cpu

    for precision in args.precisions:       # fills the cache: not timed
        timed(precision, args.weights)
    seconds = {p: [] for p in args.precisions}
    loads = [os.getloadavg()[0]]
    for number in range(args.rounds):
        order = args.precisions[number % len(args.precisions):] + args.precisions[:number % len(args.precisions)]
        for precision in order:
            took, ran = timed(precision, args.weights)
            assert ran == precision, (precision, ran)
            seconds[precision].append(round(took, 2))
        loads.append(os.getloadavg()[0])
    result = {"cpu": Cpu.this().describe(), "loadavg": [min(loads), max(loads)],
              **{p: {"median_s": float(np.median(s)), "seconds": s} for p, s in seconds.items()}}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cpu']}; load average {min(loads):.1f} to {max(loads):.1f}")
        for p, s in seconds.items():
            print(f"  {p:>8}: {np.median(s):.2f} s to the first vector (median of {s})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
