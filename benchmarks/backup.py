"""Time `lookalike backup` and `restore` (backend/backup.py) on each store, for an index the indexer built
and for N synthetic documents.

    python -m benchmarks.backup [--synthetic 100000] [--index NAME=DATA_DIR] [--stores embedded elasticsearch]
        [--url URL --repo-path PATH] [--work DIR] [--json]

--index: a name and the data folder of an embedded index (for example Corel-1k, built by `lookalike index
$DATA/corel1k --tags-from-folders`); run with the LOOKALIKE_* settings it was built with, since restore
checks the descriptor. Synthetic documents are seeded unit vectors with the fast test descriptor
(random weights, 64 px). The same documents are written into Elasticsearch (untimed, through the store's
upsert) for its figures. Each backup goes into a new folder (Elasticsearch: a snapshot repository under
--repo-path, registered here), and is restored into an empty data folder (Elasticsearch: a second alias);
both are timed end to end, checks included: the backup's count and checksum, and restore's verification.
The baseline, measured in the same run: a cold copy of the database file (embedded); writing the same
documents through the store's bulk upsert (Elasticsearch), what rebuilding from vectors would cost.

Without --url it starts its own node (tests/es_node.py) with path.repo set, and stops it at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from backend.backup import backup, configured_descriptor, restore
from backend.config import Settings
from backend.stores import Document
from backend.stores.elastic import ElasticStore
from backend.stores.embedded import EmbeddedStore

from .descriptors import machine
from .store_size import DIMS, synthetic_document

SYNTHETIC_ENV = {"LOOKALIKE_VGG16_WEIGHTS": "random", "LOOKALIKE_IMAGE_SIZE": "64", "LOOKALIKE_POOLING": "gem",
                 "LOOKALIKE_SQUARE": "false", "LOOKALIKE_PRECISION": "float32"}
CHUNK = 5000


def synthetic_store(settings: Settings, n: int) -> None:
    descriptor = configured_descriptor(settings)
    rng = np.random.default_rng(n)
    with EmbeddedStore(settings.embedded_path) as store:
        for start in range(0, n, CHUNK):
            vectors = rng.standard_normal((min(CHUNK, n - start), DIMS), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            store.upsert([synthetic_document(i, v, descriptor) for i, v in zip(range(start, start + len(vectors)),
                                                                                  vectors)])


def documents(path: Path):
    """Every document of an embedded store, with its vector, CHUNK at a time (read with SQL: the store's
    `get` one by one would take longer than the writes measured)."""
    columns = "id, filename, path, tags, width, height, bytes, content_hash, descriptor, indexed_at, modified_at"
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(f"SELECT {columns}, vector FROM docs ORDER BY id")
        while chunk := rows.fetchmany(CHUNK):
            yield [Document(r[0], np.frombuffer(r[11], dtype="<f4"), r[1], r[2], json.loads(r[3]), *r[4:11])
                   for r in chunk]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(name: str, store: str, count: int, settings: Settings, target: Settings, work: Path, baseline: float,
          repository: str | None = None, snapshots: Path | None = None) -> dict:
    """Back up `settings`' store and restore it as `target`'s; the backup's size includes the snapshot
    repository's folder (`snapshots`) for Elasticsearch. `baseline`: seconds of the plain way measured in
    the same run (a cold copy of the database file; writing the documents into Elasticsearch)."""
    dest = work / f"backup-{store}-{name}"
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    made = backup(settings, dest, repository=repository)
    backed_up = time.perf_counter() - started
    started = time.perf_counter()
    restored = restore(target, dest)
    seconds = time.perf_counter() - started
    assert made.count == restored.count == count and made.checksum == restored.checksum
    size = folder_bytes(dest) + (folder_bytes(snapshots) if snapshots else 0)
    row = {"set": name, "store": store, "documents": count, "backup_s": round(backed_up, 2),
           "restore_s": round(seconds, 2), "baseline_s": round(baseline, 2),
           "backup_x": round(backed_up / baseline, 2), "restore_x": round(seconds / baseline, 2),
           "backup_mb": round(size / 2**20, 1),
           "load": round(os.getloadavg()[0], 1)}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", type=int, nargs="*", default=[100_000], metavar="N")
    parser.add_argument("--index", action="append", default=[], metavar="NAME=DATA_DIR",
                        help="an embedded index the indexer built, and the name its rows get")
    parser.add_argument("--stores", nargs="+", default=["embedded", "elasticsearch"],
                        choices=["embedded", "elasticsearch"])
    parser.add_argument("--url", help="an Elasticsearch of your own (with --repo-path under its path.repo)")
    parser.add_argument("--repo-path", type=Path, help="with --url: a folder under that server's path.repo")
    parser.add_argument("--work", type=Path, help="where the stores and backups go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="also print each row as a JSON line")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="lookalike-backup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k.startswith("LOOKALIKE_")}
    sets = []   # (name, settings whose data_dir holds the embedded store)
    for n in args.synthetic:
        settings = Settings.from_env({**base, **SYNTHETIC_ENV, "LOOKALIKE_DATA_DIR": str(work / f"synthetic-{n}")})
        if not settings.embedded_path.exists():
            synthetic_store(settings, n)
        sets.append((f"synthetic-{n}", settings))
    for given in args.index:
        name, _, data_dir = given.rpartition("=")
        sets.append((name or Path(data_dir).name, Settings.from_env({**base, "LOOKALIKE_DATA_DIR": data_dir})))

    node, url, repo_path = None, args.url, args.repo_path
    if "elasticsearch" in args.stores and url is None:
        from tests import es_node   # the one exception to the import direction, as in benchmarks.elastic
        repo_path = work / "es-repo"
        repo_path.mkdir(exist_ok=True)
        node = es_node.start("8", settings={"path.repo": str(repo_path)}, heap="1g")
        url = node.url
    rows = []
    try:
        for name, settings in sets:
            with EmbeddedStore(settings.embedded_path) as store:
                count = store.count()
            if "embedded" in args.stores:
                target = settings.with_(data_dir=work / f"restored-{name}")
                shutil.rmtree(target.data_dir, ignore_errors=True)
                started = time.perf_counter()
                shutil.copyfile(settings.embedded_path, work / "plain-copy.sqlite3")
                copied = time.perf_counter() - started
                (work / "plain-copy.sqlite3").unlink()
                rows.append(timed(name, "embedded", count, settings, target, work, copied))
            if "elasticsearch" in args.stores:
                alias = f"bench-backup-{name}".lower()
                es = settings.with_(store=url, es_index=alias, es_timeout=300.0)
                with ElasticStore.from_settings(es) as store:
                    for index in store._client.indices.get(index=f"{alias}*", expand_wildcards="all"):
                        store._client.indices.delete(index=index)   # from an earlier run
                    store._client.snapshot.create_repository(name=alias, repository={
                        "type": "fs", "settings": {"location": str(repo_path / alias)}})
                    written = 0.0
                    for chunk in documents(settings.embedded_path):
                        started = time.perf_counter()
                        store.upsert(chunk)
                        written += time.perf_counter() - started
                rows.append(timed(name, "elasticsearch", count, es, es.with_(es_index=f"{alias}-restored"), work,
                                  written, repository=alias, snapshots=repo_path / alias))
    finally:
        if node is not None:
            node.stop()
    print(f"machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f}")
    print("| set | store | documents | backup (s) | restore (s) | baseline (s) | backup / baseline | "
          "restore / baseline | backup size (MB) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['store']} | {r['documents']:,} | {r['backup_s']} | {r['restore_s']} | "
              f"{r['baseline_s']} | {r['backup_x']} | {r['restore_x']} | {r['backup_mb']} | {r['load']} |")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
