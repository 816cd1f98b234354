"""Start-up of a worker's model per precision, with the model cache ready: fresh processes, interleaved.

    python -m benchmarks.startup [--precisions float32 int8] [--rounds 3] [--weights W] [--baseline] [--json]

Each round starts one fresh Python process per precision (in rotating order); each process imports
the product, builds its FeatureExtractor with the default descriptor (float32 builds the Keras model
and loads the weights; bfloat16 and int8 load the cached OpenVINO model, built beforehand by a first
process that is not timed) and embeds one picture, as a worker's first image search would. Printed:
the median seconds from the process start to that first vector, and the process's CPU seconds, per
precision. --baseline adds, in the same rounds, each precision with the packages Keras and TensorFlow
import but the product never uses (scikit-learn, SciPy, matplotlib) imported as they would be by default.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

BASELINE = "import backend.features as f; f._UNUSED_BY_KERAS = frozenset()  # nothing left out\n"
CHILD = """
import time, numpy as np
from backend.config import Settings
from backend.features import FeatureExtractor
e = FeatureExtractor.from_settings(Settings.from_env())
e.embed([np.full((256, 336, 3), 128, np.uint8)])
print(e.precision)
"""


def timed(variant: str, weights: str) -> tuple[float, float, str]:
    """(seconds to the first vector, the child's CPU seconds, the precision it ran) for `variant`: a
    precision, with " baseline" appended for the baseline's imports."""
    precision, _, baseline = variant.partition(" ")
    env = {**os.environ, "LOOKALIKE_PRECISION": precision, "LOOKALIKE_VGG16_WEIGHTS": weights,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", (BASELINE if baseline else "") + CHILD], env=env,
                         capture_output=True, text=True, check=True)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return took, cpu, out.stdout.strip().splitlines()[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "int8"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--baseline", action="store_true",
                        help="also each precision with scikit-learn, SciPy and matplotlib imported by Keras")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from backend.precision import Cpu

    variants = [v for p in args.precisions for v in ([p, f"{p} baseline"] if args.baseline else [p])]
    for variant in variants:                # fills the cache: not timed
        timed(variant, args.weights)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    loads = [os.getloadavg()[0]]
    for number in range(args.rounds):
        order = variants[number % len(variants):] + variants[:number % len(variants)]
        for variant in order:
            took, used, ran = timed(variant, args.weights)
            assert ran == variant.split()[0], (variant, ran)
            seconds[variant].append(round(took, 2))
            cpu[variant].append(round(used, 2))
        loads.append(os.getloadavg()[0])
    result = {"cpu": Cpu.this().describe(), "loadavg": [min(loads), max(loads)],
              **{v: {"median_s": float(np.median(seconds[v])), "seconds": seconds[v],
                     "median_cpu_s": float(np.median(cpu[v])), "cpu_seconds": cpu[v]} for v in variants}}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cpu']}; load average {min(loads):.1f} to {max(loads):.1f}")
        for v in variants:
            print(f"  {v:>17}: {np.median(seconds[v]):.2f} s to the first vector, {np.median(cpu[v]):.2f} s of CPU "
                  f"(medians of {seconds[v]} and {cpu[v]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
