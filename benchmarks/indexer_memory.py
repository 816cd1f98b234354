"""The indexer's peak resident memory on a long run of varied pictures.

    python -m benchmarks.indexer_memory [--photos 400] [--folder DIR]... [--batch-size N] [--seed 1] [--json]

Makes --photos distinct pictures of many sizes, aspect ratios and formats (JPEG, PNG with and without
alpha, WebP, TIFF; a few of 12 to 24 megapixels), adds the files under every --folder (for example
Pillow's Tests/images: odd, truncated and unsupported files), and runs the real command line,
`python -m indexer index`, on all of them into a temporary data folder with the settings of the
environment (LOOKALIKE_VGG16_WEIGHTS, ...). Reports the child's peak resident memory (its
`ru_maxrss`), the indexer's summary and the time. Exit status 1 when the indexer fails.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .server import ROOT
from .soak import cpu_name, photo

FORMATS = [("JPEG", "jpg", "RGB"), ("JPEG", "jpg", "RGB"), ("PNG", "png", "RGB"), ("PNG", "png", "RGBA"),
           ("WEBP", "webp", "RGB"), ("TIFF", "tif", "RGB")]


def make_photos(folder: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        if i % 50 == 7:      # a few large ones: the decoder's share of the peak
            size = rng.choice([(4000, 3000), (3000, 4000), (6000, 4000)])
        else:
            side = rng.randrange(64, 2400)
            size = (side, max(16, int(side * rng.uniform(0.2, 2.5))))
        fmt, ext, mode = rng.choice(FORMATS)
        img = photo(rng, size)
        (img.convert(mode) if mode != "RGB" else img).save(folder / f"p{i:04d}.{ext}", fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.indexer_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--folder", type=Path, action="append", default=[], help="more files to index (repeat)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folder if not f.is_dir()]
    if missing or args.photos < 0:
        print(f"error: no such folder: {', '.join(missing)}" if missing else "error: --photos must be 0 or more",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lookalike-indexer-memory-") as tmp:
        tmp = Path(tmp)
        make_photos(tmp / "photos" / "made", args.photos, args.seed)
        for i, folder in enumerate(args.folder):
            shutil.copytree(folder, tmp / "photos" / f"folder{i}")
        env = {**os.environ, "LOOKALIKE_DATA_DIR": str(tmp / "data"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "indexer", "index", str(tmp / "photos"), "--json"]
        if args.batch_size:
            command += ["--batch-size", str(args.batch_size)]
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # KiB on Linux
    if result.returncode != 0:
        print(f"error: the indexer failed ({result.returncode}): {result.stderr[-2000:]}", file=sys.stderr)
        return 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    report = {"cpu": cpu_name(), "photos": args.photos, "folders": [str(f) for f in args.folder],
              "weights": os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"),
              "image_size": os.environ.get("LOOKALIKE_IMAGE_SIZE", "336"),
              "batch_size": args.batch_size or int(os.environ.get("LOOKALIKE_BATCH_SIZE", "16")),
              "peak_rss_mib": round(peak), "seconds": round(seconds, 1),
              **{k: summary[k] for k in ("indexed", "failed", "skipped")}}
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>14}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
