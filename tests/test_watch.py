"""`lookalike index --watch`: real file operations on a temporary tree, followed by a real watcher process
(the fast descriptor); the store must match the tree, exactly, within 10 s of the last operation."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backend.config import Settings
from backend.ingest import Indexer
from backend.stores import open_store
from backend.stores.embedded import EmbeddedStore
from indexer.scan import scan
from indexer.watch import SETTLE_SECONDS

from .conftest import ROOT, delete_indices, picture

WITHIN = 10.0     # seconds the issue allows between the last operation and a store that matches the tree


class Watcher:
    """`python -m indexer index --watch --json ROOT` in the background, its output read as it comes."""

    def __init__(self, env: dict, root: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "indexer", "index", "--watch", "--json", str(root)],
                                     env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, into=lines: into.extend(s), daemon=True).start()

    def following(self) -> bool:
        """Whether the first pass is over and the model loaded: from now on changes are followed."""
        return any(line.startswith("watching") for line in list(self.err))

    def steps(self) -> list[dict]:
        """The JSON objects printed so far: the first run's summary, then one per step."""
        return [json.loads(line) for line in list(self.out) if line.startswith("{")]

    def totals(self) -> dict:
        steps = self.steps()[1:]
        return {key: sum(step[key] for step in steps) for key in ("indexed", "reused", "removed", "failed")}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def wait_for(what: str, check, seconds: float, watcher: Watcher, found=lambda: "") -> float:
    """Seconds until check() holds; fails naming `what`, what was `found` instead and the watcher's last
    words if it never does."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        assert watcher.proc.poll() is None, f"the watcher ended: {''.join(watcher.err)[-2000:]}"
        time.sleep(0.25)
    pytest.fail(f"{what} not within {seconds} s; {found()}; watcher said: {''.join(watcher.err)[-1500:]}")


def tree(root: Path) -> dict[str, str]:
    """What the index must hold for this tree: path -> content hash, by the same scan as `index`."""
    return {str(f.path): hashlib.sha256(f.path.read_bytes()).hexdigest() for f in scan([root])}


def indexed(store) -> dict[str, str]:
    return {entry.path: entry.content_hash for entry in store.entries()}


def test_watch_follows_copies_moves_deletes_and_a_slow_write(fast_env, tmp_path):
    source = tmp_path / "camera"
    source.mkdir()
    for i in range(50):
        picture(i, (72, 48)).save(source / f"img_{i:02d}.jpg")
    root = tmp_path / "photos"
    (root / "start").mkdir(parents=True)
    for i in range(2):
        picture(100 + i, (72, 48)).save(root / "start" / f"first_{i}.jpg")
    watcher = Watcher(fast_env, root)
    try:
        wait_for("the first pass and the model", watcher.following, 180, watcher)
        assert watcher.steps()[0]["indexed"] == 2
        store = EmbeddedStore(Path(fast_env["LOOKALIKE_DATA_DIR"]) / "index.sqlite3")

        def matches():
            # The tree is read once, after the operations: polling must not take the watcher's CPU.
            expected = tree(root)
            return lambda: indexed(store) == expected

        # 50 pictures copied in, to a folder made for them
        (root / "in").mkdir()
        for path in sorted(source.iterdir()):
            shutil.copy(path, root / "in" / path.name)
        took = wait_for("the 50 copies", matches(), WITHIN, watcher)
        assert len(indexed(store)) == 52
        print(f"50 copies indexed {took:.1f} s after the last one")

        # 10 moved to another folder, 10 deleted, one written slowly (held open, 6 s), and files the
        # default exclusions leave out
        (root / "moved").mkdir()
        for i in range(10):
            os.rename(root / "in" / f"img_{i:02d}.jpg", root / "moved" / f"img_{i:02d}.jpg")
        for i in range(10, 20):
            (root / "in" / f"img_{i:02d}.jpg").unlink()
        (root / ".hidden").mkdir()
        shutil.copy(source / "img_30.jpg", root / ".hidden" / "copy.jpg")
        (root / "in" / "@eaDir").mkdir()
        shutil.copy(source / "img_31.jpg", root / "in" / "@eaDir" / "thumb.jpg")
        picture(999, (96, 64)).save(tmp_path / "slow.jpg")
        data = (tmp_path / "slow.jpg").read_bytes()
        with open(root / "in" / "slow.jpg", "wb") as f:
            for n, start in enumerate(range(0, len(data), len(data) // 10 + 1)):
                f.write(data[start:start + len(data) // 10 + 1])
                f.flush()
                time.sleep(0.3 if n != 5 else 3 * SETTLE_SECONDS)   # a pause longer than it takes to settle
        took = wait_for("the moves, deletes and the slow write", matches(), WITHIN, watcher)
        print(f"in step {took:.1f} s after the last operation")
        assert len(indexed(store)) == 52 - 10 + 1
        # every picture indexed once, moves by their stored vectors, the half-written one never
        expected = {"indexed": 50 + 10 + 1, "reused": 10, "removed": 20, "failed": 0}
        wait_for(f"step totals {expected}", lambda: watcher.totals() == expected, 5, watcher,
                 lambda: f"totals {watcher.totals()}, steps {watcher.steps()[1:]}")

        # a folder removed and made again, and then the watched folder itself
        shutil.rmtree(root / "in")
        (root / "in").mkdir()
        shutil.copy(source / "img_40.jpg", root / "in" / "again.jpg")
        wait_for("the folder made again", matches(), WITHIN, watcher)
        assert len(indexed(store)) == 13
        shutil.rmtree(root)
        wait_for("the watched folder removed", lambda: indexed(store) == {}, WITHIN, watcher)
        (root / "back").mkdir(parents=True)
        shutil.copy(source / "img_41.jpg", root / "back" / "back.jpg")
        wait_for("the watched folder made again", matches(), WITHIN, watcher)
        assert list(indexed(store)) == [str(root / "back" / "back.jpg")]
        store.close()
    finally:
        status = watcher.stop()
    stderr = "".join(watcher.err)
    assert status == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "stopped" in stderr


def test_watch_stops_on_sigterm_between_batches_and_keeps_what_it_wrote(fast_env, tmp_path):
    """SIGTERM in the middle of the first pass: exit 0 after the batch in flight, whole batches kept (a plain
    run resumes from them: test_indexer.py's interrupted run)."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(240):
        picture(i, (72, 48)).save(root / f"img_{i:03d}.jpg")
    env = {**fast_env, "LOOKALIKE_BATCH_SIZE": "4"}
    watcher = Watcher(env, root)
    db = Path(fast_env["LOOKALIKE_DATA_DIR"]) / "index.sqlite3"

    def some_written() -> bool:
        if not db.exists():
            return False
        with EmbeddedStore(db) as store:
            return store.count() >= 8

    wait_for("the first batches", some_written, 180, watcher)
    assert watcher.stop() == 0
    stderr = "".join(watcher.err)
    assert "Traceback" not in stderr and "stopped" in stderr
    with EmbeddedStore(db) as store:
        entries = list(store.entries())
    assert 8 <= len(entries) < 240, "the first pass should have been stopped part-way"
    # whole batches only: every document complete, its file and content the ones indexed
    assert len(entries) % 4 == 0
    for entry in entries:
        assert hashlib.sha256(Path(entry.path).read_bytes()).hexdigest() == entry.content_hash


def test_watch_on_elasticsearch_rides_out_a_stalled_cluster(elastic_nodes, fast_env, fast_extractor, tmp_path):
    """Elasticsearch stops answering while pictures come and go: the watcher says so, keeps following, and
    the index matches the tree within 10 s of the cluster answering again."""
    node = elastic_nodes.node("8")
    env = {**fast_env, "LOOKALIKE_STORE": node.url, "LOOKALIKE_ES_INDEX": "lookalike-watch",
           "LOOKALIKE_ES_TIMEOUT": "5"}
    source = tmp_path / "camera"
    source.mkdir()
    for i in range(8):
        picture(i, (72, 48)).save(source / f"img_{i}.jpg")
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        shutil.copy(source / f"img_{i}.jpg", root / f"img_{i}.jpg")
    # the index made beforehand with the default timeout: creating one may take longer than the short one
    with open_store(Settings.from_env({**env, "LOOKALIKE_ES_TIMEOUT": "30"})) as setup:
        assert Indexer(setup, fast_extractor).run(scan([root])).indexed == 3
    watcher = Watcher(env, root)
    store = open_store(Settings.from_env(env))
    try:
        wait_for("the first pass and the model", watcher.following, 180, watcher)
        assert watcher.steps()[0]["skipped"] == 3 and indexed(store) == tree(root)
        shutil.copy(source / "img_3.jpg", root / "img_3.jpg")
        expected = tree(root)
        wait_for("a copy before the stall", lambda: indexed(store) == expected, WITHIN, watcher)
        node.pause()
        try:
            for i in range(4, 8):
                shutil.copy(source / f"img_{i}.jpg", root / f"img_{i}.jpg")
            (root / "img_0.jpg").unlink()
            os.rename(root / "img_1.jpg", root / "renamed.jpg")
            wait_for("the watcher meeting the stalled cluster", lambda: "trying again" in "".join(watcher.err),
                     30, watcher)
        finally:
            node.resume()
        expected = tree(root)
        took = wait_for("the index in step after the cluster answers", lambda: indexed(store) == expected,
                        WITHIN, watcher)
        print(f"in step {took:.1f} s after the cluster answered again")
        assert len(indexed(store)) == 7
        expected = {"indexed": 1 + 5, "reused": 1, "removed": 2, "failed": 0}   # the rename took its vector
        wait_for(f"step totals {expected}", lambda: watcher.totals() == expected, 5, watcher,
                 lambda: f"totals {watcher.totals()}")
    finally:
        status = watcher.stop()
        store.close()
        delete_indices(node.url, "lookalike-watch")
    stderr = "".join(watcher.err)
    assert status == 0 and "Traceback" not in stderr, stderr[-2000:]
