"""Content labels: how well words find the pictures of a labelled set, and what labels cost to index.

    python -m benchmarks.labels DATASET [--words horse bus ...] [--networks lite0 lite2] [--limit N]
        [--speed N] [--chunk N] [--json]

1. Each network classifies every picture of DATASET (decoded as the indexer decodes them); its forward
   pass is timed. From the probabilities, for each (labels kept, threshold) pair, every word ranks the
   pictures whose labels it names (backend/labels.py: the label or a WordNet hypernym), most confident
   first: precision at 24 and recall at 100 per word, a picture being relevant when its class (the
   labels.csv label) is the word's class (horse -> horses, ...). The pair with the best mean
   precision at 24 (recall at 100 breaking ties) is shown.
2. The product end to end, with the product's defaults (labels.KEEP, labels.THRESHOLD, lite0): the set
   is indexed WITHOUT folder tags by the product's indexer, first with labels off, then again with them
   on (so the second run is the one that labels documents indexed before: every vector is reused); the
   product's keyword search (store.keyword) gives the same table before (file names and tags only) and
   after. The descriptor is the seeded 64 px VGG16 of the fast tests: keyword search does not read it.
3. --speed N: the first N pictures indexed with the configured model (LOOKALIKE_VGG16_WEIGHTS,
   LOOKALIKE_PRECISION) with labels and without (`--no-labels`), each into its own store, in chunks,
   every chunk running both in alternating order so both see the same load; images/s and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.classifier import LABELS_NETWORK, LABELS_SIDE, NETWORKS, Classifier
from backend.config import Settings
from backend.features import DescriptorSpec, FeatureExtractor
from backend.imaging import Limits, decode, read_file
from backend.ingest import Indexer
from backend.labels import KEEP, THRESHOLD, matching_label, query_term, top_labels
from backend.stores.embedded import EmbeddedStore
from indexer.scan import scan

from .alternating import index_alternating
from .datasets import read_labels

# The words and Corel-1k's folder for each.
WORDS = {"horse": "horses", "bus": "buses", "elephant": "elephants", "beach": "beach", "mountain": "mountains",
         "flower": "flowers", "dinosaur": "dinosaurs", "food": "food"}
KEEPS = (1, 3, 5, 8)
THRESHOLDS = (0.01, 0.02, 0.05, 0.1, 0.2)


def metrics(ranked: list[str], classes: dict[str, str], wanted: str) -> tuple[float, float]:
    """(precision at 24, recall at 100) of a ranked list of paths for the class `wanted`."""
    relevant = sum(1 for label in classes.values() if label == wanted)
    p24 = sum(classes.get(p) == wanted for p in ranked[:24]) / 24
    r100 = sum(classes.get(p) == wanted for p in ranked[:100]) / max(1, relevant)
    return p24, r100


def rank_by_labels(probabilities: dict[str, np.ndarray], word: str, keep: int, threshold: float) -> list[str]:
    """The paths whose labels the word names, most confident first (what the stores do)."""
    term = query_term(word)
    found = []
    for path, p in probabilities.items():
        label = matching_label(top_labels(p, keep, threshold), term)
        if label is not None:
            found.append((-label.confidence, path))
    return [path for _, path in sorted(found)]


def classify(network: str, paths: list[str], limits: Limits, draft: int,
             side: int | None = None) -> tuple[dict[str, np.ndarray], float]:
    classifier = Classifier(network, side=side)
    arrays = [classifier.prepare(decode(read_file(Path(p), limits), limits, p, draft_size=draft).image) for p in paths]
    classifier.probabilities(arrays[:16])   # traced and warm before timing
    started = time.perf_counter()
    probabilities = classifier.probabilities(arrays)
    return dict(zip(paths, probabilities)), (time.perf_counter() - started) / len(paths)


def sweep(probabilities, classes, words) -> list[dict]:
    rows = []
    for keep in KEEPS:
        for threshold in THRESHOLDS:
            per_word = {w: metrics(rank_by_labels(probabilities, w, keep, threshold), classes, words[w]) for w in words}
            rows.append({"keep": keep, "threshold": threshold, "words": per_word,
                         "p24": float(np.mean([v[0] for v in per_word.values()])),
                         "r100": float(np.mean([v[1] for v in per_word.values()]))})
    return rows


def product(dataset: Path, classes: dict[str, str], words: dict[str, str], limits: Limits) -> dict:
    """The product's indexer and keyword search, labels off and then on (the second run labels them)."""
    extractor = FeatureExtractor("random", DescriptorSpec("gem", 64), "float32")
    out = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStore(Path(tmp) / "index.sqlite3") as store:
        files = [f for f in scan([dataset]) if str(f.path) in classes]
        for name, classifier in (("before", None), ("after", Classifier(LABELS_NETWORK, side=LABELS_SIDE))):
            summary = Indexer(store, extractor, limits, classifier=classifier).run(files, keep_tags=True)
            out[f"{name}_run"] = {"indexed": summary.indexed, "reused": summary.reused, "seconds": summary.seconds}
            out[name] = {w: metrics([h.document.path for h in store.keyword(w, limit=100).hits], classes, c)
                         for w, c in words.items()}
    return out


def speed(dataset: Path, classes: dict[str, str], count: int, chunk: int) -> dict:
    settings = Settings.from_env()
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
    extractor = FeatureExtractor.from_settings(settings)
    classifier = Classifier(LABELS_NETWORK, extractor.precision, settings.model_cache, LABELS_SIDE)
    files = [f for f in scan([dataset]) if str(f.path) in classes][:count]

    def way(labelled: Classifier | None):
        return lambda store, part: Indexer(store, extractor, limits, settings.batch_size, classifier=labelled).run(part)
    timed = index_alternating({"labels": way(classifier), "no labels": way(None)}, files, chunk, settings.batch_size)
    seconds, loads = timed["seconds"], timed["load_average"]
    return {"images": len(files), "chunk": chunk, "precision": extractor.precision, "runtime": extractor.runtime,
            "classifier_runtime": classifier.runtime, "cpu": extractor.cpu.describe(),
            "seconds": seconds, "images_per_s": {k: len(files) / v for k, v in seconds.items()},
            "labels_over_no_labels": seconds["labels"] / seconds["no labels"],
            "load_average": loads}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.labels", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="a labelled set (labels.csv), e.g. $LOOKALIKE_SAMPLE_DATA/corel1k")
    parser.add_argument("--words", nargs="+", default=list(WORDS), metavar="WORD",
                        help="words to search; each must be a key of WORDS or a class of the set")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--sides", type=int, nargs="+", default=[], metavar="PX",
                        help="also run lite0 at these input sides (it was trained at 224)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N pictures (a quick run)")
    parser.add_argument("--speed", type=int, default=0, metavar="N",
                        help="only time indexing N pictures with the configured model, with labels and without")
    parser.add_argument("--chunk", type=int, default=16, metavar="N", help="--speed: pictures per chunk")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        classes = read_labels(args.dataset)
    except ValueError as exc:
        parser.error(str(exc))
    if args.limit:
        classes = dict(list(classes.items())[:args.limit])
    words = {w: WORDS.get(w, w) for w in args.words}
    limits = Limits()
    draft = Settings().image_size   # decoded as the indexer decodes them
    report: dict = {"dataset": str(args.dataset), "pictures": len(classes), "words": words,
                    "defaults": {"keep": KEEP, "threshold": THRESHOLD}, "networks": {}}
    if args.speed:
        report = {"dataset": str(args.dataset), "speed": speed(args.dataset, classes, args.speed, args.chunk)}
        print(json.dumps(report)) if args.json else _print_speed(report["speed"])
        return 0
    runs = [(network, None) for network in args.networks] + [("lite0", side) for side in args.sides]
    for network, side in runs:
        probabilities, per_picture = classify(network, list(classes), limits, draft, side)
        network = network if side is None else f"{network} at {side} px"
        rows = sweep(probabilities, classes, words)
        best = max(rows, key=lambda r: (round(r["p24"], 4), r["r100"]))
        report["networks"][network] = {"seconds_per_picture": per_picture, "sweep": rows, "best": best}
        print(f"{network}: {per_picture * 1000:.1f} ms a picture (batches of 16); best keep {best['keep']}, "
              f"threshold {best['threshold']}: P@24 {best['p24']:.3f}, R@100 {best['r100']:.3f}", file=sys.stderr)
    report["product"] = product(args.dataset, classes, words, limits)
    if args.json:
        print(json.dumps(report))
        return 0
    _print(report)
    return 0


def _print(report: dict) -> None:
    words = list(report["words"])
    print(f"{report['dataset']}: {report['pictures']} pictures, indexed without folder tags")
    for network, found in report["networks"].items():
        print(f"\n{network}: {found['seconds_per_picture'] * 1000:.1f} ms a picture; mean P@24 / R@100 by labels "
              "kept (rows) and threshold (columns)")
        print("keep | " + " | ".join(f"{t:g}" for t in THRESHOLDS))
        for keep in KEEPS:
            cells = [r for r in found["sweep"] if r["keep"] == keep]
            print(f"{keep} | " + " | ".join(f"{r['p24']:.3f} / {r['r100']:.3f}" for r in cells))
    product = report["product"]
    print(f"\nthe product (keep {report['defaults']['keep']}, threshold {report['defaults']['threshold']}, "
          f"{LABELS_NETWORK} at {LABELS_SIDE} px), "
          "P@24 / R@100:")
    print("word | before | after")
    for w in words:
        print(f"{w} | {product['before'][w][0]:.3f} / {product['before'][w][1]:.2f} | "
              f"{product['after'][w][0]:.3f} / {product['after'][w][1]:.2f}")
    mean = {k: np.mean([product[k][w][0] for w in words]) for k in ("before", "after")}
    print(f"mean P@24 | {mean['before']:.3f} | {mean['after']:.3f}")
    print(f"second run: {product['after_run']}")


def _print_speed(s: dict) -> None:
    print(f"indexing {s['images']} pictures ({s['precision']} on {s['runtime']}, classifier on "
          f"{s['classifier_runtime']}; {s['cpu']}; load average {s['load_average'][0]:.1f} to "
          f"{s['load_average'][1]:.1f}): with labels {s['images_per_s']['labels']:.2f} images/s, without "
          f"{s['images_per_s']['no labels']:.2f}: labels take {100 * (s['labels_over_no_labels'] - 1):.1f}% "
          "more time")


if __name__ == "__main__":
    sys.exit(main())
