"""Descriptor study: every pooling of conv5 at several input sizes, on labelled sets, from ONE model call
per image and size (the raw conv5 maps are pooled four ways with the product's own pooling code).

    python -m benchmarks.descriptors --weights W.h5 --data DIR [--datasets corel1k ukbench-600]
        [--sizes sq224 ar336 ar448] [--cache /tmp/lookalike-descriptors] [--table /tmp/descriptor_table.md]

Pictures go through the product's decode (JPEG draft) and FeatureExtractor.prepare. Pooled descriptors
and the raw maps (float16, for later studies) are cached per (set, size); the table is rewritten after
each (set, size), so rows arrive as they are computed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

import backend.features as features
from backend.features import POOLINGS, DescriptorSpec, FeatureExtractor, pool_maps, weights_tag
from backend.imaging import Limits, decode, read_file

from .datasets import check_inputs, read_labels
from .metrics import evaluate_vectors


def spec_of(tag: str, pooling: str = "gem") -> DescriptorSpec:
    """'sq224' = 224 square; 'ar448' = aspect kept, longer side 448."""
    return DescriptorSpec(pooling, int(tag[2:]), tag.startswith("sq"))


def extract(weights: str, folder: Path, tag: str, cache: Path, batch_size: int = 16) -> Path:
    """Pool every image of a set at one size four ways; cache the result; return the cache file."""
    out = cache / f"{folder.name}-{tag}.npz"
    if out.exists() and json.loads(str(np.load(out)["info"]))["descriptor"] == \
            spec_of(tag).descriptor_id(weights_tag(weights)):
        return out                      # computed before with the same weights (and GeM p)
    labels = read_labels(folder)
    paths = list(labels)
    extractor = FeatureExtractor(weights, spec_of(tag))
    limits = Limits()
    started = time.perf_counter()
    arrays = []
    for path in paths:
        picture = decode(read_file(Path(path), limits), limits, path, draft_size=extractor.spec.image_size).image
        arrays.append(extractor.prepare(picture))
    decode_seconds = time.perf_counter() - started
    by_shape: dict[tuple, list[int]] = {}
    for i, arr in enumerate(arrays):
        by_shape.setdefault(arr.shape, []).append(i)
    pooled = {p: np.empty((len(paths), 512), np.float32) for p in POOLINGS}
    maps: dict[str, np.ndarray] = {}
    model_seconds = 0.0
    load_before = os.getloadavg()[0]
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            t0 = time.perf_counter()
            fmap = extractor.feature_maps(np.stack([arrays[i] for i in chunk]))
            model_seconds += time.perf_counter() - t0
            for p in POOLINGS:
                pooled[p][chunk] = pool_maps(fmap, p)
            for i, m in zip(chunk, fmap):
                maps[str(i)] = m.astype(np.float16)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cache / f"{folder.name}-{tag}-maps.npz", **maps)
    info = {"images": len(paths), "model_seconds": model_seconds, "decode_seconds": decode_seconds,
            "shapes": {str(k): len(v) for k, v in by_shape.items()}, "loadavg": [load_before, os.getloadavg()[0]],
            "batch_size": batch_size, "descriptor": extractor.descriptor_id, "gem_p": features.GEM_P}
    np.savez(out, paths=np.array(paths), labels=np.array([labels[p] for p in paths]),
             info=json.dumps(info), **{p: v for p, v in pooled.items()})
    return out


def load(cache_file: Path, gem_ps: tuple[float, ...] = ()) -> dict:
    """Cached descriptors; each p of gem_ps adds a 'gem p=P' entry, pooled from the cached raw maps."""
    cache_file = Path(cache_file)
    data = np.load(cache_file)
    out = {"paths": data["paths"], "labels": data["labels"], "info": json.loads(str(data["info"])),
           **{p: data[p] for p in POOLINGS}}
    for p in gem_ps:
        out[f"gem p={p:g}"] = gem_from_maps(cache_file, p)
    return out


def gem_from_maps(cache_file: Path, p: float) -> np.ndarray:
    """GeM with another p than the product's, from the cached maps (float16), with the product's code."""
    out = cache_file.with_name(cache_file.stem + f"-gem{p:g}.npy")
    if out.exists():
        return np.load(out)
    maps = np.load(cache_file.with_name(cache_file.stem + "-maps.npz"))
    saved = features.GEM_P
    features.GEM_P = p   # _pool reads it at call time
    try:
        vectors = np.stack([pool_maps(maps[str(i)][None].astype(np.float32), "gem")[0] for i in range(len(maps))])
    finally:
        features.GEM_P = saved
    np.save(out, vectors)
    return vectors


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GB RAM, {date.today().isoformat()}"


def table(results: list[tuple[str, str, dict]], extra: tuple[str, ...] = ()) -> str:
    """results: (set, size tag, cached data) -> markdown: one row per (size, pooling), sets side by side."""
    sets = sorted({s for s, _, _ in results})
    sizes = list(dict.fromkeys(t for _, t, _ in results))
    by = {(s, t): d for s, t, d in results}
    head = ["input", "pooling"]
    for s in sets:
        head += [f"{s} mAP"] + (["N-S"] if s.startswith("ukbench") else [])
    head += [f"{s} model s/img" for s in sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in sizes:
        for p in POOLINGS + extra:
            d0 = next(d for (s, tt), d in by.items() if tt == t)
            if p in extra and p == f"gem p={d0['info']['gem_p']:g}":
                continue  # the same as the "gem" row
            row = [t, p if p != "gem" else f"gem p={d0['info']['gem_p']:g}"]
            for s in sets:
                d = by.get((s, t))
                m = evaluate_vectors(d[p], d["labels"]) if d else None
                row.append(f"{m['mAP']:.3f}" if m else "")
                if s.startswith("ukbench"):
                    row.append(f"{m['N-S']:.2f}" if m and "N-S" in m else "")
            for s in sets:
                d = by.get((s, t))
                row.append(f"{d['info']['model_seconds'] / d['info']['images']:.3f}" if d else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.descriptors", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=os.environ.get("LOOKALIKE_VGG16_WEIGHTS", "imagenet"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LOOKALIKE_SAMPLE_DATA", ".")))
    parser.add_argument("--datasets", nargs="+", default=["corel1k", "ukbench-600"])
    parser.add_argument("--sizes", nargs="+", default=["sq224", "ar336", "ar448"])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-descriptors"))
    parser.add_argument("--table", type=Path, default=Path("/tmp/descriptor_table.md"))
    parser.add_argument("--gem-p", type=float, nargs="*", default=[], metavar="P",
                        help=f"also GeM with these p (the product uses {features.GEM_P:g}), from the cached maps")
    args = parser.parse_args(argv)
    check_inputs(parser, args.weights, args.data, args.datasets)
    extra = tuple(f"gem p={p:g}" for p in args.gem_p)
    command = (f"python -m benchmarks.descriptors --datasets {' '.join(args.datasets)} --sizes {' '.join(args.sizes)}"
               + (f" --gem-p {' '.join(f'{p:g}' for p in args.gem_p)}" if args.gem_p else ""))
    results = []
    for tag in args.sizes:
        for name in args.datasets:
            cache_file = extract(args.weights, args.data / name, tag, args.cache)
            data = load(cache_file, tuple(args.gem_p))
            results.append((name, tag, data))
            print(f"{name} {tag}: {json.dumps(data['info'])}", flush=True)
            loads = "; ".join(f"{s} {t}: {d['info']['loadavg'][0]:.1f}/{d['info']['loadavg'][1]:.1f}"
                              for s, t, d in results)
            args.table.write_text(
                f"# Descriptor study (rows arrive as computed)\n\nMachine: {machine()}\nCommand: `{command}`\n"
                "mAP: query left out; N-S: top 4 with the query. model s/img: conv5 forward, batch 16, under the "
                f"shared load noted below.\n\n{table(results, extra)}\n\n"
                f"Load average (1 min) before/after each run: {loads}\n")
            print(table(results, extra), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
