"""Duplicate reports at scale: how long a report takes over N documents, what linking new pictures costs
against running the model on them, and what an all-pairs comparison would cost instead, in one run.

    python -m benchmarks.duplicates_scale [--documents 100000] [--new 1000] [--store embedded | --url URL]
        [--version 8] [--repeat 5] [--weights W] [--data DIR] [--model-pictures 48] [--real DATA_DIR]...
        [--indexing FOLDER]... [--pictures 480] [--json]    (--indexing with --url: into Elasticsearch)

The collection: N synthetic 512-d unit vectors (seeded). Unrelated random vectors in 512 dimensions have
cosines of about 0 +- 0.05, so the only pairs above the link floor are the ones made on purpose: 3% of the
documents are originals with two edited copies each (cosine 0.92 to 0.99 with the original), and 1% are
pairs of byte-identical files. Those documents are written with their links computed from their vectors
(exactly what duplicates.link would find, without N kNN queries), in batches through the store's upsert.
Every document carries a signature of a made picture (256 of them, a group's members sharing one), so each
document is as large as a real one (its vector and its 16 KiB signature).

Then, timed:
- the report a page asks for (`find_groups(limit=24)`), and the whole report (every group), near and exact,
  p50 of --repeat runs;
- `duplicates.link` for --new more pictures (each with one near copy already in the store) through the store's
  own kNN, per picture, against the model's time per picture on this machine (the product's default
  descriptor and precision, --model-pictures Corel-1k photos, measured in the same run): the ratio is what
  linking adds to indexing;
- all pairs by brute force (a block of rows of the N x N similarity matrix, scaled to the whole), what a
  finder without links (perceptual-hash tools, imagededup) must do.

The synthetic vectors have no real neighbours, so linking them checks one candidate a picture. What the
check costs among real candidates is timed on real stores (--real DATA_DIR, repeatable: a data folder that
`lookalike index` filled): `duplicates.link` for up to --new of its documents, in batches of 16 as the
indexer links them, read only (their best 20 candidates of cosine >= 0.5 are real photos with real
signatures), against the model's time in the same run.

What duplicates add to indexing, end to end (--indexing FOLDER, repeatable): the first --pictures pictures of
FOLDER indexed by the product's indexer as a user runs it (the configured model and precision, labels on),
into one store with everything duplicates need (each picture's signature, made in the decode threads, and
its links, made as each batch is written) and into another without them (the baseline: the indexer as it
was before duplicates), in chunks of 32 that run both ways in alternating order (benchmarks/alternating.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator
from unittest import mock

import numpy as np

from backend import duplicates
from backend.config import Settings
from backend.stores import open_store
from backend.stores.base import Document, NearLink

from .descriptors import machine
from .store_size import DESCRIPTOR, DIMS

SEED = 7


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def collection(n: int) -> tuple[np.ndarray, list[str], list[list[int]]]:
    """(vectors, content hashes, groups of positions): originals with two edited copies, identical pairs."""
    rng = np.random.default_rng(SEED)
    vectors = _unit(rng.standard_normal((n, DIMS), dtype=np.float32))
    hashes = [f"{i:064x}" for i in range(n)]
    groups: list[list[int]] = []
    triples, pairs = int(n * 0.01), int(n * 0.005)
    at = 0
    for _ in range(triples):
        original = vectors[at]
        for k in (1, 2):
            cosine = rng.uniform(0.92, 0.99)
            noise = rng.standard_normal(DIMS).astype(np.float32)
            noise -= (noise @ original) * original
            noise /= np.linalg.norm(noise)
            vectors[at + k] = cosine * original + np.sqrt(1 - cosine ** 2) * noise
        groups.append([at, at + 1, at + 2])
        at += 3
    for _ in range(pairs):
        vectors[at + 1], hashes[at + 1] = vectors[at], hashes[at]
        groups.append([at, at + 1])
        at += 2
    return _unit(vectors), hashes, groups


def document(i: int, vector: np.ndarray, content: str, near: list[NearLink],
             signature: bytes | None = None) -> Document:
    return Document(id=f"{i:020x}", vector=vector, filename=f"img{i}.jpg", path=f"/synthetic/img{i}.jpg",
                    tags=[], width=640, height=480, bytes=100_000 + i, content_hash=content, descriptor=DESCRIPTOR,
                    indexed_at=0.0, modified_at=float(i), near=near, signature=signature)


def picture(seed: int):
    """A seeded picture with a layout to check (smooth shapes and some texture), 320 x 240."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((320, 240),
                                                                                      Image.Resampling.BICUBIC)
    grain = rng.integers(-25, 26, (240, 320, 3))
    return Image.fromarray(np.clip(np.asarray(shapes, dtype=np.int64) + grain, 0, 255).astype(np.uint8))


def copy_of(seed: int):
    """An edited copy of picture(seed): 4 % cropped off two sides, brighter, smaller."""
    from PIL import ImageEnhance

    edited = picture(seed).crop((13, 10, 320, 240))
    return ImageEnhance.Brightness(edited).enhance(1.2).resize((230, 172))


def fill(store, vectors: np.ndarray, hashes: list[str], groups: list[list[int]], signatures: dict[int, bytes],
         batch: int = 1000) -> float:
    """Write the collection with its links (each member linked to the earlier members of its group), and
    the signatures of the pictures given one."""
    links: dict[int, list[NearLink]] = {}
    for group in groups:
        for k, later in enumerate(group):
            links[later] = [NearLink(f"{earlier:020x}", hashes[earlier],
                                     float(min(1.0, vectors[later] @ vectors[earlier]))) for earlier in group[:k]]
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        store.upsert([document(i, vectors[i], hashes[i], links.get(i, []), signatures.get(i))
                      for i in range(start, min(start + batch, len(vectors)))])
    return time.perf_counter() - started


def timed(run, repeat: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def model_seconds_per_picture(weights: str, data: Path, pictures: int) -> tuple[float, float]:
    """The product's default path (decode, resize, model) on Corel-1k photos, after one warm-up batch; and
    the signature's time per picture on the same decoded pictures."""
    from backend.near_duplicates import signature
    from backend.features import FeatureExtractor
    from backend.imaging import Limits, decode, read_file

    extractor = FeatureExtractor.from_settings(Settings.from_env({"LOOKALIKE_VGG16_WEIGHTS": weights}))
    files = sorted((data / "corel1k").rglob("*.jpg"))[: pictures + 16]

    def decoded(paths):
        return [decode(read_file(p, Limits()), Limits(), draft_size=extractor.spec.image_size).image for p in paths]

    def run(paths):
        return extractor.embed([extractor.prepare(picture) for picture in decoded(paths)], 16)
    run(files[:16])
    started = time.perf_counter()
    run(files[16:])
    model = (time.perf_counter() - started) / (len(files) - 16)
    pictures = decoded(files[16:])
    started = time.perf_counter()
    for picture in pictures:
        signature(picture)
    return model, (time.perf_counter() - started) / len(pictures)


def all_pairs_seconds(vectors: np.ndarray, rows: int = 4096) -> float:
    """Brute force: a block of rows of the similarity matrix, the pairs above the floor kept, scaled to all."""
    rows = min(rows, len(vectors))
    started = time.perf_counter()
    block = vectors[:rows] @ vectors.T
    np.nonzero(block >= duplicates.LINK_FLOOR)
    return (time.perf_counter() - started) * len(vectors) / rows / 2      # the matrix is symmetric


def real_link_seconds(data_dir: Path, most: int) -> float:
    """`duplicates.link` per picture for up to `most` documents of a real embedded store, as the indexer links
    a batch (16) of new pictures: their candidates are the store's other pictures. Nothing is written."""
    from backend.stores.embedded import EmbeddedStore

    with EmbeddedStore(data_dir / "index.sqlite3") as store:
        ids = sorted(entry.id for entry in store.entries())[:most]
        docs = [doc for doc in (store.get(i, with_vector=True) for i in ids) if doc is not None]
        started = time.perf_counter()
        for start in range(0, len(docs), 16):
            duplicates.link(store, docs[start:start + 16])
        return (time.perf_counter() - started) / max(1, len(docs))


@contextlib.contextmanager
def _without_duplicates() -> Iterator[None]:
    """The indexer as it was before duplicates: no signature made, no candidates looked for or checked. (Each
    document is written as linked, with no links: one left unlinked would be linked by every later run.)"""
    from backend import ingest

    def no_links(store, docs) -> None:
        for doc in docs:
            doc.near = []

    with mock.patch.object(ingest.duplicates, "link", no_links), \
            mock.patch.object(ingest.near_duplicates, "signature", lambda picture: None):
        yield


def indexing_share(folder: Path, pictures: int, chunk: int = 32, url: str | None = None) -> dict:
    """Indexing the first `pictures` of `folder` with duplicates against without, alternating chunks, into
    embedded stores or into indices of the Elasticsearch at `url`."""
    from backend.classifier import LABELS_NETWORK, LABELS_SIDE, Classifier
    from backend.features import FeatureExtractor
    from backend.imaging import Limits
    from backend.ingest import Indexer
    from indexer.scan import scan

    from .alternating import index_alternating

    settings = Settings.from_env()
    limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
    extractor = FeatureExtractor.from_settings(settings)
    classifier = (Classifier(LABELS_NETWORK, extractor.precision, settings.model_cache, LABELS_SIDE)
                  if settings.labels else None)      # as the product's indexer has it (backend/factory.py)
    files = list(scan([folder]))[:pictures]

    def index(store, part):
        return Indexer(store, extractor, limits, settings.batch_size, classifier=classifier).run(part)

    def index_without(store, part):
        with _without_duplicates():
            return index(store, part)

    timed = index_alternating({"duplicates": index, "without": index_without}, files, chunk, settings.batch_size,
                              url=url)
    seconds = timed["seconds"]
    return {"folder": str(folder), "store": "elasticsearch" if url else "embedded", "pictures": len(files),
            "precision": extractor.precision,
            "labels": classifier is not None, "load_average": [round(x, 1) for x in timed["load_average"]],
            "ms_per_picture": {k: round(1000 * v / len(files), 1) for k, v in seconds.items()},
            "duplicates_add": round(seconds["duplicates"] / seconds["without"] - 1, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.duplicates_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--url", help="an Elasticsearch URL (default: the embedded store in a temporary folder)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--weights", default=Settings.from_env().vgg16_weights)
    parser.add_argument("--data", type=Path, default=Path(__import__("os").environ.get("LOOKALIKE_SAMPLE_DATA", "")))
    parser.add_argument("--model-pictures", type=int, default=48)
    parser.add_argument("--real", type=Path, action="append", default=[], metavar="DATA_DIR",
                        help="also time linking the pictures of this embedded store (repeatable)")
    parser.add_argument("--indexing", type=Path, action="append", default=[], metavar="FOLDER",
                        help="index this folder's pictures with and without duplicates, end to end (repeatable)")
    parser.add_argument("--pictures", type=int, default=480, help="--indexing: how many of the folder's pictures")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.indexing:    # end to end only
        out = {"machine": machine(), "indexing": [indexing_share(folder, args.pictures, url=args.url)
                                                for folder in args.indexing]}
        print(json.dumps(out) if args.json else "\n".join(json.dumps(row) for row in out["indexing"]))
        return 0

    vectors, hashes, groups = collection(args.documents + args.new)
    stored = vectors[: args.documents]
    stored_groups = [g for g in groups if g[-1] < args.documents]
    out: dict = {"machine": machine(), "documents": args.documents,
                 "grouped": sum(len(g) for g in stored_groups), "groups": len(stored_groups)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            settings = Settings(store=args.url, es_index=f"lookalike-dupbench-{uuid.uuid4().hex[:8]}")
        else:
            settings = Settings(data_dir=Path(tmp))
        out["store"] = "elasticsearch" if args.url else "embedded"
        store = open_store(settings)
        # the originals of the new pictures below carry a real signature (of a made picture), as their copies do
        from backend.near_duplicates import signature
        rng = np.random.default_rng(SEED + 1)
        originals = rng.choice(args.documents, args.new, replace=False)
        try:
            # every document carries a signature, as a real one does (its _source as large): from a pool of
            # made pictures, the members of a group sharing one (so a page's check runs as it does on copies)
            pool = [signature(picture(10 ** 9 + k)) for k in range(256)]
            signed = {i: pool[i % len(pool)] for i in range(args.documents)}
            signed.update({i: pool[number % len(pool)] for number, group in enumerate(stored_groups) for i in group})
            signed.update({int(i): signature(picture(int(i))) for i in originals})
            out["fill_s"] = round(fill(store, stored, hashes, stored_groups, signed), 1)
            store.warm_up()
            for level in (duplicates.NEAR, duplicates.EXACT):
                p50, report = timed(lambda: duplicates.find_groups(store, level=level, limit=24), args.repeat)
                out[f"{level}_page_p50_s"] = round(p50, 3)
                out[f"{level}_groups"] = report.total
                p50, _ = timed(lambda: duplicates.find_groups(store, level=level), args.repeat)
                out[f"{level}_all_p50_s"] = round(p50, 3)
            # new pictures, each a near copy of a stored original, linked through the store's own kNN
            fresh = []
            for k, i in enumerate(originals):
                noise = rng.standard_normal(DIMS).astype(np.float32)
                noise -= (noise @ stored[i]) * stored[i]
                mixed = 0.96 * stored[i] + np.sqrt(1 - 0.96 ** 2) * noise / np.linalg.norm(noise)
                fresh.append(document(args.documents + k, (mixed / np.linalg.norm(mixed)).astype(np.float32),
                                      f"new{k:061x}", [], signature(copy_of(int(i)))))
            started = time.perf_counter()
            for start in range(0, len(fresh), 16):      # the indexer's batch size
                duplicates.link(store, fresh[start:start + 16])
            link_s = time.perf_counter() - started
            found = sum(any(link.id == f"{i:020x}" for link in doc.near or ()) for doc, i in zip(fresh, originals))
            out["link_ms_per_picture"] = round(1000 * link_s / len(fresh), 2)
            out["links_found"] = f"{found}/{len(fresh)}"
            started = time.perf_counter()
            for start in range(0, len(fresh), 16):
                store.upsert(fresh[start:start + 16])
            out["upsert_ms_per_picture"] = round(1000 * (time.perf_counter() - started) / len(fresh), 2)
            p50, report = timed(lambda: duplicates.find_groups(store, limit=24), args.repeat)
            out["near_page_p50_s_after_new"], out["near_groups_after_new"] = round(p50, 3), report.total
        finally:
            if args.url:
                from .alternating import delete_indices
                delete_indices(args.url, settings.es_index)
            store.close()
    out["all_pairs_s"] = round(all_pairs_seconds(vectors[: args.documents]), 1)
    for data_dir in args.real:
        out[f"real_link_ms_per_picture {data_dir}"] = round(1000 * real_link_seconds(data_dir, args.new), 2)
    if args.data and (args.data / "corel1k").is_dir() and Path(args.weights).is_file():
        model, sign = model_seconds_per_picture(args.weights, args.data, args.model_pictures)
        out["model_ms_per_picture"] = round(1000 * model, 1)
        out["signature_ms_per_picture"] = round(1000 * sign, 2)
        # what duplicates add to indexing a picture: its signature and its links, against the rest
        out["duplicates_share_of_indexing"] = round((out["link_ms_per_picture"] + 1000 * sign) / (1000 * model), 4)
        for data_dir in args.real:
            linked = out[f"real_link_ms_per_picture {data_dir}"]
            out[f"duplicates_share_of_indexing {data_dir}"] = round((linked + 1000 * sign) / (1000 * model), 4)
    print(json.dumps(out) if args.json else "\n".join(f"{k:>28}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
