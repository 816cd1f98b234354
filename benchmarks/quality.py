"""Retrieval quality of the product on a labelled photo set.

    python -m benchmarks.quality DATASET_DIR [--limit N] [--pooling P] [--image-size N] [--square]
        [--weights W] [--batch-size N] [--json]

DATASET_DIR holds images and a labels.csv of `path,label` (relevant = same class) or `path,group`
(relevant = same object); it may also be the CSV file itself (format: benchmarks/datasets.py). The
images are indexed into a temporary embedded store by the product's own indexer (indexer.scan +
backend.ingest.Indexer), then every image is a query through the product's "similar" search
(SearchService.similar: the stored vector, kNN in the store, the query left out). Prints mAP, P@1,
P@10, recall@100, nDCG@10 and, when every group has 4 images, the UKBench N-S score (top 4 of a kNN
that includes the query). Settings not given as options come from LOOKALIKE_* variables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from backend.config import ConfigError, Settings
from backend.factory import open_engine
from backend.features import FeatureExtractor, WeightsError
from backend.search import SearchService
from backend.stores.base import Store
from backend.stores.embedded import EmbeddedStore
from indexer.scan import scan

from .datasets import read_labels
from .metrics import groups_of_four, summarise


def subset(labels: dict[str, str], limit: int | None) -> dict[str, str]:
    """About `limit` images: an equal share of every label when each gets at least 4, else whole labels
    in order of first appearance (so UKBench keeps its groups of 4)."""
    if not limit or limit >= len(labels):
        return labels
    by_label: dict[str, list[str]] = {}
    for path, label in labels.items():
        by_label.setdefault(label, []).append(path)
    share = limit // len(by_label)
    if share >= 4:
        keep = {p for paths in by_label.values() for p in paths[:share]}
    else:
        keep, n = set(), 0
        for paths in by_label.values():
            if n >= limit:
                break
            keep.update(paths)
            n += len(paths)
    return {p: label for p, label in labels.items() if p in keep}


def evaluate_store(store: Store, labels: dict[str, str], search: SearchService,
                   progress: Callable[[int], object] = lambda n: None) -> dict:
    """Query every labelled document of the store against all the others; documents of the store that
    are not in `labels` are left out of the rankings."""
    docs = {entry.id: labels[entry.path] for entry in store.entries() if entry.path in labels}
    if len(docs) < 2:
        raise ValueError("fewer than 2 labelled images are indexed: nothing to evaluate")
    counts = Counter(docs.values())
    ns = groups_of_four(list(docs.values()))
    total = store.count()
    unlabelled = total - len(docs)      # fetched too, then dropped, so that 4 labelled ones remain
    rankings, with_query = [], []
    for doc_id, label in docs.items():
        # Rank deep enough to hold every relevant image (exact mAP) and 100 labelled ones (recall@100),
        # deepening 4x at a time: fetching all N documents for each of N queries grows as N squared.
        depth = 256
        while True:
            hits = search.similar(doc_id, limit=min(depth, total)).hits
            ranking = [docs[h.document.id] == label for h in hits if h.document.id in docs]
            if depth >= total or (sum(ranking) == counts[label] - 1 and len(ranking) >= 100):
                break
            depth *= 4
        rankings.append((ranking, counts[label] - 1))
        if ns:
            doc = store.get(doc_id, with_vector=True)
            top = store.knn(doc.vector, descriptor=doc.descriptor, limit=4 + unlabelled).hits
            with_query.append([docs[h.document.id] == label for h in top if h.document.id in docs][:4])
        progress(1)
    return summarise(rankings, with_query if ns else None)


def run(folder: Path, settings: Settings, limit: int | None = None) -> dict:
    labels = subset(read_labels(folder), limit)
    problems: list[tuple[str, str]] = []
    files = list(scan([Path(p) for p in labels], problems=problems))
    extractor = FeatureExtractor.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="lookalike-quality-") as tmp, \
            open_engine(settings, store=EmbeddedStore(Path(tmp) / "index.sqlite3"), extractor=extractor) as engine:
        # progress bars (rate, ETA) on a terminal only: big sets take a while
        with tqdm(total=len(files), unit="img", desc="indexing", disable=None, file=sys.stderr) as bar:
            summary = engine.indexer.run(files, failures=problems, progress=bar.update)
        started = time.perf_counter()
        with tqdm(total=summary.indexed, unit="query", desc="querying", disable=None, file=sys.stderr) as bar:
            metrics = evaluate_store(engine.store, labels, engine.service, bar.update)
        query_seconds = time.perf_counter() - started
    return {"dataset": str(folder), "descriptor": extractor.descriptor_id, "images": len(labels),
            "indexed": summary.indexed, "failed": summary.failed, "index_seconds": round(summary.seconds, 1),
            "images_per_second": round(summary.indexed / summary.seconds, 2) if summary.seconds else None,
            "query_ms": round(1000 * query_seconds / metrics["queries"], 2), **metrics,
            "failures": [{"path": p, "reason": r} for p, r in summary.failures]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR", help="a folder with images and labels.csv")
    parser.add_argument("--limit", type=int, metavar="N", help="about N images (see `subset`)")
    parser.add_argument("--pooling", help="avg, max, gem or rmac (default: LOOKALIKE_POOLING or the product's)")
    parser.add_argument("--image-size", type=int, metavar="N", help="square side or longer side")
    parser.add_argument("--square", action="store_true", help="224 square style input instead of keeping the aspect")
    parser.add_argument("--weights", help="VGG16 weights file (default: LOOKALIKE_VGG16_WEIGHTS)")
    parser.add_argument("--batch-size", type=int, metavar="N")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        env = {}
        for name, value in (("POOLING", args.pooling), ("IMAGE_SIZE", args.image_size),
                            ("VGG16_WEIGHTS", args.weights), ("BATCH_SIZE", args.batch_size)):
            if value is not None:
                env[f"LOOKALIKE_{name}"] = str(value)
        if args.square:
            env["LOOKALIKE_SQUARE"] = "true"
        settings = Settings.from_env({**os.environ, **env})
        result = run(args.dataset, settings, args.limit)
    except (ConfigError, WeightsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    for path_reason in result["failures"][:10]:
        print(f"failed: {path_reason['path']}: {path_reason['reason']}", file=sys.stderr)
    print(f"{result['dataset']}: {result['indexed']} of {result['images']} images indexed "
          f"({result['failed']} failed) in {result['index_seconds']} s ({result['images_per_second']} img/s); "
          f"descriptor {result['descriptor']}")
    names = ["mAP", "P@1", "P@10", "recall@100", "nDCG@10"] + (["N-S"] if "N-S" in result else [])
    print("  ".join(f"{n} {result[n]:.4f}" if n != "N-S" else f"N-S {result[n]:.3f}/4" for n in names)
          + f"  ({result['queries']} queries, {result['query_ms']} ms each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
