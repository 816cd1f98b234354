"""Ways of indexing the same pictures timed against each other on a shared, noisy machine: the pictures go
in chunks, and every chunk through each way in turn, the order flipped from one chunk to the next, so every
way sees the same load (the ratio of their times is what a benchmark reports)."""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from backend.config import Settings
from backend.ingest import Summary
from backend.stores import Store, open_store
from indexer.scan import FileToIndex

# A way of indexing: the product's indexer, set up one way, run on some files into a store.
Way = Callable[[Store, list[FileToIndex]], Summary]


def index_alternating(ways: dict[str, Way], files: list[FileToIndex], chunk: int, warm: int,
                      url: str | None = None) -> dict:
    """Each way indexes `files` into an empty store of its own, `chunk` files at a time, after indexing the
    first `warm` of them into a scratch store (models built, traced and warm before timing). The stores are
    embedded ones in a temporary folder, or indices of the Elasticsearch at `url` (deleted at the end).
    Returns {"seconds": {way: total}, "load_average": [lowest, highest]}; every file must be indexed."""
    seconds = dict.fromkeys(ways, 0.0)
    loads = [os.getloadavg()[0]]
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        def fresh_store(name: str) -> Store:
            if url:
                return open_store(Settings(store=url, es_index=f"lookalike-alternating-{run}-{name}"))
            return open_store(Settings(data_dir=Path(tmp) / name))

        for number, (name, way) in enumerate(ways.items()):
            with fresh_store(f"warm{number}") as scratch:
                way(scratch, files[:warm])
        stores = {name: fresh_store(f"way{number}") for number, name in enumerate(ways)}
        try:
            for number, start in enumerate(range(0, len(files), chunk)):
                part = files[start:start + chunk]
                for name in list(ways) if number % 2 == 0 else list(reversed(ways)):
                    started = time.perf_counter()
                    summary = ways[name](stores[name], part)
                    seconds[name] += time.perf_counter() - started
                    if summary.indexed != len(part) or summary.failures:
                        raise RuntimeError(f"{name}: indexed {summary.indexed} of {len(part)} ({summary.failures})")
                loads.append(os.getloadavg()[0])
        finally:
            for store in stores.values():
                store.close()
            if url:
                delete_indices(url, f"lookalike-alternating-{run}-")
    return {"seconds": seconds, "load_average": [min(loads), max(loads)]}


def delete_indices(url: str, prefix: str) -> None:
    """A benchmark's indices on the Elasticsearch at `url`, by name (a wildcard delete is refused by default)."""
    from elasticsearch import Elasticsearch
    with Elasticsearch(url) as client:
        for name in client.indices.get(index=f"{prefix}*", expand_wildcards="all"):
            client.indices.delete(index=name)
