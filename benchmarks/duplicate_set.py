"""A labelled near-duplicate set: originals, two edited copies of each, and hard negatives.

    python -m benchmarks.duplicate_set OUT [--seed N] [--limit N] [--half even|odd] [--data DIR]

Originals are Corel-1k and UKBench-600 photos (from --data, default $LOOKALIKE_SAMPLE_DATA), copied
byte for byte into OUT. Each gets two copies, each made by one edit drawn (without repeating) from
EDITS with parameters drawn from the ranges below, from a generator seeded by (--seed, the original's
name): the same seed gives the same files, and --limit or --half do not change a picture's draws.

OUT/labels.csv has one row per picture: `path,group,edit,scene`. Pictures sharing `group` are the same
picture (the original and its copies); `edit` is `original` or the edit's name; `scene` names what was
photographed: `ukbench:<object>` (UKBench's four views of one object) or `corel:<class>`. Pictures with the
same scene and different groups are the hard negatives: other views of one object, other photos of one
class. They must not be reported as duplicates.

--limit N keeps about N originals, half from each set (UKBench by whole objects, so its hard negatives
stay); --half keeps the Corel photos with even (odd) numbers and the UKBench objects with even (odd)
numbers, so two sets built with --half even and --half odd share no picture. Nothing is written outside
OUT; OUT must be empty, absent, or a set this script built before (its files are replaced).
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
from math import cos, radians, sin
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from .datasets import read_labels

SETS = ("corel1k", "ukbench-600")


@dataclass(frozen=True)
class Copy:
    image: Image.Image
    fmt: str                      # Pillow format name
    save: dict                    # Pillow save options
    detail: str                   # the drawn parameters, for the labels' reader


def _jpeg(rng: random.Random, low: int = 85, high: int = 95) -> dict:
    return {"quality": rng.randint(low, high)}


def resize(im, rng):
    scale = rng.uniform(0.4, 0.9)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return Copy(im.resize(size, Image.Resampling.LANCZOS), "JPEG", _jpeg(rng), f"scale {scale:.2f}")


def recompress(im, rng):
    quality = rng.randint(25, 70)
    return Copy(im, "JPEG", {"quality": quality}, f"quality {quality}")


def convert(im, rng):
    fmt = rng.choice(["PNG", "WEBP", "GIF"])
    if fmt == "WEBP":
        quality = rng.randint(60, 90)
        return Copy(im, fmt, {"quality": quality}, f"webp quality {quality}")
    return Copy(im, fmt, {}, fmt.lower())    # GIF: Pillow reduces to a 256-colour palette


def crop(im, rng):
    # 2-8 % of each dimension, split at random between the two sides
    box = []
    for side in (im.width, im.height):
        cut = side * rng.uniform(0.02, 0.08)
        first = cut * rng.random()
        box.append((round(first), side - round(cut - first)))
    (left, right), (top, bottom) = box
    return Copy(im.crop((left, top, right, bottom)), "JPEG", _jpeg(rng),
                f"{1 - (right - left) * (bottom - top) / (im.width * im.height):.1%} of the area")


def brightness(im, rng):
    factor = rng.uniform(1.15, 1.5)
    return Copy(ImageEnhance.Brightness(im).enhance(factor), "JPEG", _jpeg(rng), f"x{factor:.2f}")


def contrast(im, rng):
    factor = rng.uniform(1.2, 1.7)
    return Copy(ImageEnhance.Contrast(im).enhance(factor), "JPEG", _jpeg(rng), f"x{factor:.2f}")


def desaturate(im, rng):
    factor = rng.choice([0.0, rng.uniform(0.0, 0.4)])
    edited = ImageOps.grayscale(im).convert("RGB") if factor == 0.0 else ImageEnhance.Color(im).enhance(factor)
    return Copy(edited, "JPEG", _jpeg(rng), f"saturation x{factor:.2f}")


def watermark(im, rng):
    text = rng.choice(["© Photo Studio", "SAMPLE", "© 2024 J. Smith", "www.example.com", "PREVIEW"])
    size = max(8, round(im.height * rng.uniform(0.05, 0.12)))
    font = ImageFont.load_default(size)
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left, bottom - top
    where = rng.choice(["corner", "centre"])
    if where == "centre":
        xy = ((im.width - width) // 2, (im.height - height) // 2)
    else:
        margin = round(im.height * 0.03)
        xy = (rng.choice([margin, im.width - width - margin]), rng.choice([margin, im.height - height - margin]))
    opacity = rng.randint(100, 220)
    shade = rng.choice([255, 0])
    draw.text((xy[0] - left, xy[1] - top), text, font=font, fill=(shade, shade, shade, opacity))
    edited = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
    return Copy(edited, "JPEG", _jpeg(rng), f"{text!r} {where}, {size} px, alpha {opacity}")


def rotate(im, rng):
    angle = rng.choice([-1, 1]) * rng.uniform(1.0, 5.0)
    if rng.random() < 0.5:
        # as photo editors straighten: rotate, then crop to the largest upright box inside
        turned = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
        a = radians(abs(angle))
        w, h = im.width, im.height
        inner_w = (w * cos(a) - h * sin(a)) / cos(2 * a)
        inner_h = (h * cos(a) - w * sin(a)) / cos(2 * a)
        box = (round((w - inner_w) / 2), round((h - inner_h) / 2), round((w + inner_w) / 2), round((h + inner_h) / 2))
        return Copy(turned.crop(box), "JPEG", _jpeg(rng), f"{angle:+.1f} deg, cropped")
    fill = rng.choice([(0, 0, 0), (255, 255, 255)])
    turned = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    return Copy(turned, "JPEG", _jpeg(rng), f"{angle:+.1f} deg, corners filled")


def pad(im, rng):
    share = rng.uniform(0.03, 0.15)
    border = max(1, round(min(im.size) * share))
    fill = rng.choice([(255, 255, 255), (0, 0, 0), tuple(rng.randint(0, 255) for _ in range(3))])
    return Copy(ImageOps.expand(im, border=border, fill=fill), "JPEG", _jpeg(rng), f"{border} px border")


def thumbnail(im, rng):
    longest = rng.randint(96, 200)
    small = im.copy()
    small.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    return Copy(small, "JPEG", _jpeg(rng, 70, 90), f"longest side {longest}")


EDITS: dict[str, Callable[[Image.Image, random.Random], Copy]] = {
    f.__name__: f for f in (resize, recompress, convert, crop, brightness, contrast, desaturate, watermark,
                            rotate, pad, thumbnail)}
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}


def originals(data: Path, limit: int | None, half: str | None) -> list[tuple[Path, str, str]]:
    """(file, set-relative name, scene) of the originals kept by --limit and --half."""
    chosen: list[tuple[Path, str, str]] = []
    for name in SETS:
        labels = read_labels(data / name)
        rows = []
        for path, label in labels.items():
            relative = Path(path).relative_to((data / name).resolve())
            number = int(Path(path).stem.lstrip("ukbench")) if name == "ukbench-600" else int(Path(path).stem)
            parity = int(label) if name == "ukbench-600" else number
            if half is None or parity % 2 == (0 if half == "even" else 1):
                scene = f"ukbench:{label}" if name == "ukbench-600" else f"corel:{label}"
                rows.append((Path(path), f"{name}/{relative.as_posix()}", scene))
        if limit:
            rows = _share(rows, limit // 2, by_scene=name == "ukbench-600")
        chosen.extend(rows)
    return chosen


def _share(rows, count, by_scene):
    """About `count` rows: UKBench whole objects in order; Corel an equal share of every class."""
    scenes: dict[str, list] = {}
    for row in rows:
        scenes.setdefault(row[2], []).append(row)
    if by_scene:
        kept: list = []
        for members in scenes.values():
            if len(kept) >= count:
                break
            kept.extend(members)
        return kept
    each = max(1, count // len(scenes))
    return [row for members in scenes.values() for row in members[:each]]


def build(data: Path, out: Path, seed: int, limit: int | None = None, half: str | None = None) -> list[dict]:
    rows: list[dict] = []
    for source, name, scene in originals(data, limit, half):
        group = name.rsplit(".", 1)[0]
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)         # byte for byte: the original as the user has it
        rows.append({"path": name, "group": group, "edit": "original", "scene": scene, "detail": ""})
        rng = random.Random(f"{seed}:{group}")
        with Image.open(source) as opened:
            im = ImageOps.exif_transpose(opened).convert("RGB")
        for number, edit in enumerate(rng.sample(sorted(EDITS), 2), 1):
            copy = EDITS[edit](im, rng)
            path = f"{group}.copy{number}-{edit}{SUFFIX[copy.fmt]}"
            copy.image.save(out / path, copy.fmt, **copy.save)
            rows.append({"path": path, "group": group, "edit": edit, "scene": scene, "detail": copy.detail})
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "group", "edit", "scene", "detail"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duplicate_set", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="about N originals (a small set for tests)")
    parser.add_argument("--half", choices=["even", "odd"], default=None)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", "../shared/data")))
    args = parser.parse_args(argv)
    missing = [name for name in SETS if not (args.data / name / "labels.csv").is_file()]
    if missing:
        parser.error(f"--data {args.data}: no {', '.join(f'{m}/labels.csv' for m in missing)} (set "
                     "LOOKALIKE_SAMPLE_DATA or --data to the folder holding corel1k/ and ukbench-600/)")
    if args.limit is not None and args.limit < 2:
        parser.error("--limit must be at least 2")
    out, data = args.out.resolve(), args.data.resolve()
    if out == data or data in out.parents or out in data.parents:
        parser.error(f"{args.out}: the set must be written outside the photo folder {args.data}")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / "labels.csv").is_file()):
        parser.error(f"{args.out}: not an empty folder nor a set built by this script")
    if (out / "labels.csv").is_file():         # a set built before: remove its own pictures only
        with open(out / "labels.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                (out / row["path"]).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = build(data, out, args.seed, args.limit, args.half)
    groups = len({r["group"] for r in rows})
    print(f"{len(rows)} pictures, {groups} groups (seed {args.seed}) in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
