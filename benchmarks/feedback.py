"""Relevance feedback measured with a simulated user, for each method of backend/feedback.py.

    python -m benchmarks.feedback DATASET_DIR [--data-dir DIR] [--methods rocchio fusion classifier]
        [--rounds 2] [--marks 5] [--expand K] [--limit N] [--json]
    python -m benchmarks.feedback --cost N [--methods ...]

DATASET_DIR holds images and a labels.csv (benchmarks/datasets.py). The images are indexed by the product's
indexer into DIR (kept, so a second run skips the model; default: a temporary folder). Then, for every
labelled image as the query:

- round 0 is the product's "similar" search (SearchService.similar, the query left out);
- in each later round the user looks at the top 24 results of the round before, marks up to `marks` of
  the relevant ones (same label) as positive and up to `marks` of the others as negative, in rank order,
  and the marks of all rounds so far plus the query itself (a positive) go to SearchService.refine, which
  leaves every marked image out of its results.

Per round and method it prints P@24 (relevant images among the 24 results shown, which never include a
marked one) and two mAPs (benchmarks/metrics.py, query left out): `mAP` ranks the marked positives first
(the user has found them), then the results, then the marked negatives, so that it ranks every other image
of the set as round 0 does; `residual mAP` ranks the results alone against the relevant images not yet
marked (queries with none left are left out). --cost N times one refine (6 positives, 5 negatives,
top 24) per method on a synthetic embedded store of N documents (benchmarks.store_size.fill, kept under
/tmp/lookalike-store-size) beside a plain "similar" search, and counts the kNN calls of each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from backend import feedback
from backend.config import ConfigError, Settings
from backend.factory import open_engine
from backend.features import WeightsError
from backend.search import SearchService
from backend.stores.embedded import EmbeddedStore
from indexer.scan import scan

from .datasets import read_labels
from .descriptors import machine
from .metrics import average_precision, precision_at
from .quality import subset

PAGE = 24


def index(folder: Path, data_dir: Path, settings: Settings, limit: int | None) -> tuple[dict[str, str], Path]:
    """Index the labelled images into data_dir/index.sqlite3 (incremental); {document id: label}."""
    labels = subset(read_labels(folder), limit)
    path = data_dir / "index.sqlite3"
    with open_engine(settings, store=EmbeddedStore(path)) as engine:
        files = list(scan([Path(p) for p in labels]))
        known = {e.path for e in engine.store.entries()}
        todo = [f for f in files if str(f.path) not in known]
        if todo:
            with tqdm(total=len(todo), unit="img", desc="indexing", disable=None, file=sys.stderr) as bar:
                engine.indexer.run(todo, progress=bar.update)
        docs = {e.id: labels[e.path] for e in engine.store.entries() if e.path in labels}
    return docs, path


def simulate(service: SearchService, docs: dict[str, str], method: str, rounds: int, marks: int,
             expand: int = 0) -> list[dict]:
    """Per round: {"P@24", "mAP", "residual mAP"}, means over the queries."""
    counts = Counter(docs.values())
    everything = service.store.count()      # documents in the store, labelled or not
    per_round: list[dict[str, list[float]]] = [{"P@24": [], "mAP": [], "residual mAP": []} for _ in range(rounds + 1)]
    for query, label in tqdm(docs.items(), desc=method, unit="query", disable=None, file=sys.stderr):
        relevant = counts[label] - 1
        positives: list[str] = []
        negatives: list[str] = []
        for r in range(rounds + 1):
            # Deep enough to hold every relevant image not yet marked (exact AP) and a page, deepening 4x at
            # a time, as benchmarks.quality does: fetching all N documents for each query grows as N squared.
            depth = 64
            while True:
                if r == 0:
                    hits = service.similar(query, limit=min(depth, everything), expand=expand).hits
                else:
                    hits = service.refine([query, *positives], negatives, limit=min(depth, everything),
                                          expand=expand, method=method).hits
                results = [h.document.id for h in hits if h.document.id in docs]
                found = sum(docs[i] == label for i in results)
                if depth >= everything or (found == relevant - len(positives) and len(results) >= PAGE):
                    break
                depth *= 4
            ranked = [docs[i] == label for i in results]
            per_round[r]["P@24"].append(precision_at(ranked, PAGE))
            full = [True] * len(positives) + ranked + [False] * len(negatives)
            per_round[r]["mAP"].append(average_precision(full, relevant))
            left = relevant - len(positives)
            if left > 0:
                per_round[r]["residual mAP"].append(average_precision(ranked, left))
            shown = results[:PAGE]
            positives += [i for i in shown if docs[i] == label][:marks]
            negatives += [i for i in shown if docs[i] != label][:marks]
    return [{name: float(np.mean(values)) if values else None for name, values in row.items()}
            for row in per_round]


def cost(n: int, methods, folder: Path = Path("/tmp/lookalike-store-size"), repeats: int = 30) -> dict:
    """Median seconds of one refine (6 positives, 5 negatives, top 24) and its kNN calls, at n documents."""
    from .store_size import DESCRIPTOR, doc_id, fill

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"store-{n}.sqlite3"
    fill(path, n)
    rng = np.random.default_rng(7)
    out = {}
    with EmbeddedStore(path) as store:
        service = SearchService(store, lambda: None)
        calls = {"knn": 0}
        knn = store.knn

        def counted(*args, **kwargs):
            calls["knn"] += 1
            return knn(*args, **kwargs)
        store.knn = counted
        store.knn(np.ones(512, np.float32) / np.sqrt(512), descriptor=DESCRIPTOR, limit=1)   # loads the vectors
        plain = []
        for _ in range(repeats):
            started = time.perf_counter()
            service.similar(doc_id(int(rng.integers(n))), limit=PAGE)
            plain.append(time.perf_counter() - started)
        out["similar (for comparison)"] = {"ms": 1000 * float(np.median(plain)), "knn_calls": 1}
        for method in methods:
            times = []
            calls["knn"] = 0
            for _ in range(repeats):
                ids = [doc_id(int(i)) for i in rng.choice(n, 11, replace=False)]
                started = time.perf_counter()
                service.refine(ids[:6], ids[6:], limit=PAGE, method=method)
                times.append(time.perf_counter() - started)
            out[method] = {"ms": 1000 * float(np.median(times)), "knn_calls": calls["knn"] / repeats}
    return out


def table(results: dict[str, list[dict]], name: str) -> str:
    lines = [f"| {name} | round | P@24 | mAP | residual mAP |", "| --- | --- | --- | --- | --- |"]
    for method, rows in results.items():
        for r, row in enumerate(rows):
            residual = row["residual mAP"]
            residual = "(none left)" if residual is None else f"{residual:.4f}"    # no query had any left
            lines.append(f"| {method} | {r} | {row['P@24']:.3f} | {row['mAP']:.4f} | {residual} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feedback", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, nargs="?", metavar="DATASET_DIR",
                        help="a folder with images and labels.csv")
    parser.add_argument("--data-dir", type=Path, help="where to keep the index (reused by later runs)")
    parser.add_argument("--methods", nargs="+", choices=feedback.METHODS, default=list(feedback.METHODS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--marks", type=int, default=5, help="positives and negatives marked per round, each")
    parser.add_argument("--expand", type=int, default=0, help="query expansion (expand=k) in every search")
    parser.add_argument("--limit", type=int, metavar="N", help="about N images (see benchmarks.quality.subset)")
    parser.add_argument("--cost", type=int, metavar="N", help="time a refine at N synthetic documents")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lookalike-store-size"),
                        help="where the synthetic stores of --cost are kept (shared with benchmarks.store_size)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.dataset is None and not args.cost:
        parser.error("give DATASET_DIR, --cost N, or both")
    out: dict = {"machine": machine()}
    if args.dataset is not None:
        try:
            settings = Settings.from_env(os.environ)
            with tempfile.TemporaryDirectory(prefix="lookalike-feedback-") as tmp:
                docs, path = index(args.dataset, args.data_dir or Path(tmp), settings, args.limit)
                with open_engine(settings, store=EmbeddedStore(path)) as engine:
                    results = {m: simulate(engine.service, docs, m, args.rounds, args.marks, args.expand)
                               for m in args.methods}
        except (ConfigError, WeightsError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out.update({"dataset": str(args.dataset), "images": len(docs), "rounds": args.rounds, "marks": args.marks,
                    "expand": args.expand, "results": results})
    if args.cost:
        out["cost"] = {"documents": args.cost, **cost(args.cost, args.methods, args.dir)}
    if args.json:
        print(json.dumps(out))
        return 0
    if args.dataset is not None:
        print(f"{args.dataset.name}: {len(docs)} images, {args.marks} positives and {args.marks} negatives marked "
              f"per round from the top {PAGE}, expand={args.expand}; {out['machine']}")
        print(table(results, args.dataset.name))
    if args.cost:
        print(f"one refine at {args.cost:,} documents (embedded store, 6 positives, 5 negatives, top {PAGE}, "
              f"median of 30); {out['machine']}")
        for method, c in out["cost"].items():
            if method != "documents":
                print(f"  {method}: {c['ms']:.1f} ms, {c['knn_calls']:g} kNN calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
