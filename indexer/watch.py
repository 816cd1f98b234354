"""`lookalike index --watch`: index once, then keep the index in step with the folders.

The platform's file events (inotify, FSEvents, ReadDirectoryChangesW, through watchdog) say which paths
changed; nothing walks the folders on a timer. A path an event names waits until it has settled: no
event for `settle` seconds, the same size and modification time at two looks that far apart, and (where
the platform reports it) no writer holding it open. Then the settled paths go to the indexer in one
step: pictures that exist are indexed by the same `Indexer.run` as a plain `index` (unchanged ones are
skipped, known content takes its stored vector by content hash), and only then are the documents of
paths that are gone removed, so a moved picture's new document finds the old one's vector. A folder that
goes (or comes back, or is replaced) has its documents reconciled with the disk. SIGTERM or Ctrl-C ends
the loop after the batch being written, if any: every batch is committed on its own.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from backend.imaging import is_image_path
from backend.ingest import FileToIndex, Indexer, Summary, entries_under
from backend.stores.base import StoreUnavailable, document_id

SETTLE_SECONDS = 1.0       # quiet time before a changed path is indexed (a copy in progress keeps changing)
TICK_SECONDS = 0.2         # how often settled paths are looked for
OPEN_PATIENCE = 60.0       # a file reported open for writing this long without a change is taken anyway
RETRY_SECONDS = 2.0        # a step the store could not take is tried again after this long


class Stopped(Exception):
    """A stop was asked for (SIGTERM, Ctrl-C); raised between batches, so nothing is half-written."""


@dataclass
class Step:
    """What one step of the watch did."""
    summary: Summary
    removed: int

    def as_json(self) -> dict:
        return {**self.summary.as_json(), "removed": self.removed}


@dataclass
class _Pending:
    root: Path
    last_event: float                      # monotonic time of the last event for this path
    looked: float                          # when `signature` was taken
    signature: tuple[int, int] | None      # (size, mtime_ns) then; None: no such file
    folder: bool = False                   # a folder whose documents are reconciled with the disk
    replaces: list[Path] = field(default_factory=list)   # paths moved here: removed once this is indexed


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at this path (device, inode): a folder removed and made again is another one."""
    try:
        stat = folder.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino) if folder.is_dir() else None


class _Events(FileSystemEventHandler):
    """Hands watchdog's events (from its thread) to the follower's loop, with the root they came under."""

    def __init__(self, root: Path, queue: SimpleQueue):
        self.root, self.queue = root, queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.queue.put((self.root, event))


class Follower:
    """Follows folders (absolute) and keeps the indexer's store in step with them.

    take(path, root, problems=...) makes a file's FileToIndex (its tags) or None; excluded(path) says
    whether the run leaves a file out (the exclusions and the data folder)."""

    def __init__(self, indexer: Indexer, roots: Iterable[Path], *,
                 take: Callable[..., FileToIndex | None], excluded: Callable[[Path], bool],
                 keep_tags: bool, report: Callable[[Step], None], settle: float = SETTLE_SECONDS):
        self.indexer = indexer
        self.roots = list(dict.fromkeys(roots))
        self.take, self.excluded, self.keep_tags, self.report = take, excluded, keep_tags, report
        self.settle = settle
        self._queue: SimpleQueue = SimpleQueue()
        self._pending: dict[Path, _Pending] = {}
        self._open: dict[Path, int] = {}         # files reported open (inotify), by how many openers
        self._identities: dict[Path, tuple[int, int] | None] = {}
        self._watches: dict[Path, object] = {}
        self._stop = threading.Event()
        self._observer = Observer()

    def run(self, index_once: Callable[[Callable[[int], None]], None]) -> int:
        """Watch, index once (index_once(progress) with a progress hook that stops between batches), then
        follow the events until asked to stop. Returns the exit status (0)."""
        previous = {sig: signal.signal(sig, self._ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._observer.start()
            self._check_roots(time.monotonic())    # watching starts before the first pass: nothing is missed
            index_once(self._between_batches)
            # The model now, and a call at each input shape it takes (as a server's warm-up does), so that
            # no change waits for the model to load or for the first call at its picture's shape.
            started = time.perf_counter()
            shapes = self.indexer.extractor.warm_up()
            print(f"model warm-up: {shapes} input shapes in {time.perf_counter() - started:.1f} s", file=sys.stderr,
                  flush=True)
            print(f"watching {len(self.roots)} folder{'s' if len(self.roots) > 1 else ''} for changes "
                  "(SIGTERM or Ctrl-C stops)", file=sys.stderr, flush=True)
            while not self._stop.wait(TICK_SECONDS):
                self._tick()
        except Stopped:
            pass
        finally:
            self._observer.stop()
            self._observer.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print("stopped: the index holds every batch written", file=sys.stderr, flush=True)
        return 0

    def _ask_to_stop(self, signum, frame) -> None:
        self._stop.set()

    def _between_batches(self, count: int) -> None:
        if self._stop.is_set():
            raise Stopped

    # -- events -> pending paths ---------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        self._drain(now)
        self._check_roots(now)
        ready = self._ready(now)
        if not ready:
            return
        try:
            self._step(ready)
        except StoreUnavailable as exc:
            # The store is down or too slow for a while (a restart, a stalled cluster): keep following, and
            # give the step's paths another go later. A step is safe to repeat: what it wrote is skipped.
            print(f"error: {exc}; trying again in {RETRY_SECONDS:.0f} s", file=sys.stderr, flush=True)
            for path, pending in ready:
                pending.last_event = max(pending.last_event, now + RETRY_SECONDS)
                self._pending.setdefault(path, pending)

    def _drain(self, now: float) -> None:
        while True:
            try:
                root, event = self._queue.get_nowait()
            except Empty:
                return
            self._on_event(root, event, now)

    def _on_event(self, root: Path, event: FileSystemEvent, now: float) -> None:
        kind = event.event_type
        src = Path(os.fsdecode(event.src_path))
        dest = Path(os.fsdecode(event.dest_path)) if kind == "moved" and event.dest_path else None
        if event.is_directory:
            # A folder's own "modified" and "attrib" come with every change in it: its files have their own.
            if kind == "deleted":
                self._note_folder(root, src, now)
            elif kind == "moved":   # its files' own moves come too: reconcile after they had their turn
                self._note_folder(root, src, now + self.settle)
            if kind == "created" or dest is not None:
                self._note_tree(root, dest or src, now)
            return
        if kind == "opened":
            self._open[src] = self._open.get(src, 0) + 1
            return
        if kind in ("closed", "closed_no_write"):
            self._closed(src)
            if kind == "closed_no_write":      # a reader (our own hashing among them): nothing changed
                return
        if dest is not None:
            if src in self._open:
                self._open[dest] = self._open.pop(src)
            if self._note(root, dest, now):
                # The move's two ends go in one step, the new path first: its document takes the old
                # one's vector by content hash before the old one is removed.
                moved = self._pending.pop(src, None)
                self._pending[dest].replaces += [src, *(moved.replaces if moved else ())]
                return
        self._note(root, src, now)

    def _closed(self, path: Path) -> None:
        left = self._open.pop(path, 0) - 1
        if left > 0:
            self._open[path] = left

    def _note(self, root: Path, path: Path, now: float) -> bool:
        """Note a file that changed (or went); False when it is not a picture this run takes."""
        if not is_image_path(path) or self.excluded(path):
            return False
        pending = self._pending.get(path)
        if pending is None or pending.folder:
            self._pending[path] = _Pending(root, now, now, _signature(path))
        else:
            pending.last_event = max(pending.last_event, now)
        return True

    def _note_folder(self, root: Path, folder: Path, when: float) -> None:
        self._pending[folder] = _Pending(root, when, when, None, folder=True)

    def _note_tree(self, root: Path, folder: Path, now: float) -> None:
        """A folder that appeared: note its files now (some may have come before its watch did)."""
        for parent, _, names in os.walk(folder):
            for name in names:
                self._note(root, Path(parent) / name, now)

    def _check_roots(self, now: float) -> None:
        """Watch each root; when one went, came back or was replaced, watch it again and reconcile it."""
        for root in self.roots:
            identity = _identity(root)
            if root in self._identities and identity == self._identities[root]:
                continue
            first = root not in self._identities
            watch = self._watches.pop(root, None)
            if watch is not None:
                try:
                    self._observer.unschedule(watch)  # type: ignore[arg-type]
                except KeyError:
                    pass
            if identity is not None:
                try:
                    self._watches[root] = self._observer.schedule(_Events(root, self._queue), str(root),
                                                                  recursive=True)
                except FileNotFoundError:    # gone again in between: the next tick looks again
                    identity = None
            self._identities[root] = identity
            if first:
                continue
            print(f"{root}: {'back' if identity else 'gone'}", file=sys.stderr, flush=True)
            self._note_folder(root, root, now)
            if identity is not None:
                self._note_tree(root, root, now)

    def _ready(self, now: float) -> list[tuple[Path, _Pending]]:
        """The pending paths that have settled, taken out of `pending`."""
        ready = []
        for path, pending in list(self._pending.items()):
            quiet = now - pending.last_event
            if quiet < self.settle:
                continue
            if not pending.folder:
                signature = _signature(path)
                if signature != pending.signature or now - pending.looked < self.settle:
                    if signature != pending.signature:
                        pending.signature, pending.looked = signature, now
                    continue
                if signature is not None and self._open.get(path, 0) > 0 and quiet < OPEN_PATIENCE:
                    continue                # still open for writing
            ready.append((path, self._pending.pop(path)))
        return ready

    # -- one step -----------------------------------------------------------------------------

    def _step(self, ready: list[tuple[Path, _Pending]]) -> None:
        """Index the settled files that exist, then remove the documents of those gone."""
        store = self.indexer.store
        problems: list[tuple[str, str]] = []
        files = [path for path, pending in ready if not pending.folder and path.is_file()]
        roots = {path: pending.root for path, pending in ready}
        items = [item for item in (self.take(path, roots[path], problems=problems) for path in files) if item]
        summary = self.indexer.run(items, keep_tags=self.keep_tags, failures=problems,
                                   progress=self._between_batches)
        named = [gone for path, pending in ready if not pending.folder for gone in (path, *pending.replaces)]
        gone = {document_id(str(path)) for path in named if not path.is_file()}
        folders = [path for path, pending in ready if pending.folder]
        if folders:
            gone.update(entry.id for entry in entries_under(store.entries(), folders)
                        if not Path(entry.path).is_file() or self.excluded(Path(entry.path)))
        removed = store.delete(sorted(gone)) if gone else 0
        if summary.indexed or summary.failed or removed:
            self.report(Step(summary, removed))
