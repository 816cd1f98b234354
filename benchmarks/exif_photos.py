"""A folder of photos that carry EXIF dates and camera models, made from a labelled photo set (Corel-1k).

    python -m benchmarks.exif_photos SOURCE_DIR TARGET_DIR [--seed N] [--limit N]

Seeded and repeatable: each picture of SOURCE_DIR (its labels.csv) is written again under
TARGET_DIR/<year>/<class>/ as a JPEG whose EXIF names one of a few cameras, a date taken between 2015 and
2024 (with its UTC offset for some cameras), and now and then an orientation (so width and height swap).
A few pictures get no EXIF at all. The source files are only read. Nothing is downloaded; no photo is
ever committed: this script builds the set where it is needed (the browser tests, the manual check).
"""
from __future__ import annotations

import argparse
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image

from .datasets import read_labels

# (make, model, writes OffsetTimeOriginal)
CAMERAS = [("Canon", "Canon EOS 5D Mark IV", True), ("NIKON CORPORATION", "NIKON D750", False),
           ("Apple", "iPhone 12", True), ("FUJIFILM", "X-T3", True)]
MAKE, MODEL, ORIENTATION, EXIF_IFD, DATE_TIME_ORIGINAL, OFFSET_TIME_ORIGINAL = (
    0x010F, 0x0110, 0x0112, 0x8769, 0x9003, 0x9011)


def exif_bytes(make: str | None = None, model: str | None = None, taken: str | None = None,
               offset: str | None = None, orientation: int | None = None) -> bytes:
    """An EXIF block with these values (EXIF's own text forms: taken "YYYY:MM:DD HH:MM:SS", offset "+HH:MM")."""
    exif = Image.Exif()
    for tag, value in ((MAKE, make), (MODEL, model), (ORIENTATION, orientation)):
        if value is not None:
            exif[tag] = value
    details = exif.get_ifd(EXIF_IFD)
    for tag, value in ((DATE_TIME_ORIGINAL, taken), (OFFSET_TIME_ORIGINAL, offset)):
        if value is not None:
            details[tag] = value
    return exif.tobytes()


def build(source: Path, target: Path, seed: int = 7, limit: int | None = None) -> int:
    """Write the set; returns how many pictures were written."""
    rng = random.Random(seed)
    labels = sorted(read_labels(source).items())
    if limit:
        labels = labels[:limit]
    start = datetime(2015, 1, 1)
    for n, (relative, label) in enumerate(labels):
        make, model, with_offset = CAMERAS[rng.randrange(len(CAMERAS))]
        taken = start + timedelta(seconds=rng.randrange(10 * 365 * 86400))
        bare = rng.random() < 0.05
        exif = b"" if bare else exif_bytes(make, model, taken.strftime("%Y:%m:%d %H:%M:%S"),
                                          f"+0{rng.randrange(10)}:00" if with_offset else None,
                                          6 if rng.random() < 0.1 else None)
        folder = target / (str(taken.year) if not bare else "undated") / label
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(source / relative) as img:
            img.convert("RGB").save(folder / f"{Path(relative).stem}-{n}.jpg", "JPEG", quality=90, exif=exif)
    return len(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exif_photos", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a photo set with labels.csv (e.g. corel1k/)")
    parser.add_argument("target", type=Path, help="where to write (created)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--limit", type=int, help="only the first N pictures (by path)")
    args = parser.parse_args(argv)
    if args.target.resolve() == args.source.resolve():
        print("error: the target must be another folder than the source", file=sys.stderr)
        return 2
    print(f"wrote {build(args.source, args.target, args.seed, args.limit)} pictures under {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
