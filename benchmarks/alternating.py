"""Ways of indexing the same pictures timed against each other on a shared, noisy machine: the pictures go
in chunks, and every chunk through each way in turn, the order flipped from one chunk to the next, so every
way sees the same load (the ratio of their times is what a benchmark reports)."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from backend.ingest import Summary
from backend.stores.embedded import EmbeddedStore
from indexer.scan import FileToIndex

# A way of indexing: the product's indexer, set up one way, run on some files into a store.
Way = Callable[[EmbeddedStore, list[FileToIndex]], Summary]


def index_alternating(ways: dict[str, Way], files: list[FileToIndex], chunk: int, warm: int) -> dict:
    """Each way indexes `files` into an empty store of its own, `chunk` files at a time, after indexing the
    first `warm` of them into a scratch store (models built, traced and warm before timing). Returns
    {"seconds": {way: total}, "load_average": [lowest, highest]}; every file must be indexed."""
    seconds = dict.fromkeys(ways, 0.0)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for name, way in ways.items():
            with EmbeddedStore(Path(tmp) / f"warm-{name}" / "index.sqlite3") as scratch:
                way(scratch, files[:warm])
        stores = {name: EmbeddedStore(Path(tmp) / name / "index.sqlite3") for name in ways}
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
    return {"seconds": seconds, "load_average": [min(loads), max(loads)]}
