"""The embedded store's vectors as a search process holds them: a shared snapshot file plus recent changes.

Every search process (a gunicorn worker) needs all vectors for exact kNN. Reading them from SQLite into
private memory costs each worker its own copy (2 GB at 1M images) and a slow start (16 s at 1M).
Instead, the vectors are also written to a snapshot, a plain .npy file next to the database, that every
process maps read-only: the page cache holds one copy for all of them, and a new worker starts at once.
What changed after the snapshot (rows written or removed since its sequence number) is kept privately
per process, and a new snapshot is written once those changes grow past a fraction of it.

The snapshot is only a cache of the database. The database names its current snapshot (meta key
`snapshot`: a random token and the sequence number it holds), so a snapshot is never applied to another
database or to a restored backup's other history; a missing, damaged or unwritable snapshot only means
the vectors are read from the database, as before.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from ..filelock import FileLock, fsync
from .base import StoreError, StoreUnavailable

log = logging.getLogger(__name__)
SNAPSHOT_RETRY_SECONDS = 600


@dataclass(frozen=True)
class Vectors:
    """One consistent view of the vectors (replaced, never edited: searches in other threads keep theirs).

    base: rows of the snapshot (mapped read-only), sorted by rowid; `alive` marks those not replaced or
    removed since. extra: rows written since the snapshot, private to this process, sorted by rowid."""
    base: np.ndarray
    base_rowids: np.ndarray
    alive: np.ndarray
    extra: np.ndarray
    extra_rowids: np.ndarray
    seq: int = 0
    snapshot: str | None = None     # the token of the mapped snapshot

    @classmethod
    def empty(cls) -> "Vectors":
        none = np.empty((0, 0), dtype=np.float32)
        ids = np.empty(0, dtype=np.int64)
        return cls(none, ids, np.empty(0, dtype=bool), none, ids)

    def __len__(self) -> int:
        return len(self.base_rowids) + len(self.extra_rowids)

    @cached_property
    def rowids(self) -> np.ndarray:
        """Row ids by position (base first, then extra); dead base rows included."""
        return np.concatenate([self.base_rowids, self.extra_rowids])

    @cached_property
    def live(self) -> np.ndarray:
        """Which positions hold a current document."""
        return np.concatenate([self.alive, np.ones(len(self.extra_rowids), dtype=bool)])

    @property
    def changes(self) -> int:
        """Rows this process holds beside the snapshot: what a new snapshot would take off its hands."""
        return len(self.extra_rowids) + int(len(self.alive) - self.alive.sum())

    def scores(self, query: np.ndarray) -> np.ndarray:
        out = np.empty(len(self), dtype=np.float32)
        n = len(self.base_rowids)
        if n:
            np.matmul(self.base, query, out=out[:n])
        if len(self.extra_rowids):
            np.matmul(self.extra, query, out=out[n:])
        return out

    def scores_many(self, queries: np.ndarray) -> np.ndarray:
        """scores() for the rows of `queries` at once, (len(self), len(queries)): one pass over the vectors."""
        out = np.empty((len(self), len(queries)), dtype=np.float32)
        n = len(self.base_rowids)
        if n:
            np.matmul(self.base, queries.T, out=out[:n])
        if len(self.extra_rowids):
            np.matmul(self.extra, queries.T, out=out[n:])
        return out

    def positions(self, rowids: Iterable[int]) -> np.ndarray:
        """Positions of the current rows with these ids (ids with no current row are left out)."""
        wanted = np.fromiter(rowids, dtype=np.int64)
        in_extra, at_extra = _find(self.extra_rowids, wanted)
        _, at_base = _find(self.base_rowids, wanted[~in_extra])
        at_base = at_base[self.alive[at_base]] if len(at_base) else at_base
        return np.concatenate([at_base, at_extra + len(self.base_rowids)])

    def apply(self, removed: Iterable[int], rows: Iterable[tuple[int, bytes]], seq: int, count: int) -> "Vectors":
        """A new view with rowids removed and at most `count` rows (rowid, float32 bytes) written since this
        one. The rows are read one by one into one preallocated array (a million small arrays, stacked,
        took 3x the time and twice the memory of the matrix)."""
        new_ids = np.empty(count, dtype=np.int64)
        new_vecs = None
        n = 0
        for n, (rowid, blob) in enumerate(rows, 1):
            vec = np.frombuffer(blob, dtype="<f4")
            if new_vecs is None:
                new_vecs = np.empty((count, len(vec)), dtype=np.float32)
            new_ids[n - 1] = rowid
            new_vecs[n - 1] = vec
        new_ids = new_ids[:n]
        touched = np.concatenate([np.fromiter(removed, dtype=np.int64), new_ids])
        alive = self.alive
        _, at_base = _find(self.base_rowids, touched)
        if len(at_base):
            alive = alive.copy()
            alive[at_base] = False   # removed, or replaced by a row in extra
        base, base_rowids = self.base, self.base_rowids
        dims = self.extra.shape[1] if new_vecs is None else new_vecs.shape[1]
        if dims != base.shape[1] and not alive.any():
            # the store was emptied and refilled with another descriptor: the snapshot holds nothing live
            base, base_rowids, alive = np.empty((0, dims), np.float32), base_rowids[:0], alive[:0]
        # extra: the rows kept from before and the new ones, sorted by rowid
        keep = ~np.isin(self.extra_rowids, touched)
        parts = [self.extra if keep.all() else self.extra[keep]] if keep.any() else []
        if new_vecs is not None:   # some rows were read
            parts.append(new_vecs[:n])
        if not parts:
            extra = np.empty((0, dims), np.float32)
        else:   # one part is used as it is: concatenate would copy it
            extra = parts[0] if len(parts) == 1 else np.concatenate(parts)
        ids = np.concatenate([self.extra_rowids[keep], new_ids])
        order = np.argsort(ids, kind="stable")
        if len(ids) and not np.all(order == np.arange(len(ids))):
            extra, ids = extra[order], ids[order]
        return Vectors(base, base_rowids, alive, extra, ids, seq, self.snapshot)


def _find(sorted_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(for each wanted id: is it in sorted_ids, positions in sorted_ids of those that are)."""
    if not len(sorted_ids) or not len(wanted):
        return np.zeros(len(wanted), dtype=bool), np.empty(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, wanted), len(sorted_ids) - 1)
    found = sorted_ids[at] == wanted
    return found, at[found]


@dataclass
class Snapshots:
    """The snapshot files of one database: `<folder>/<token>/{vectors,rowids}.npy`, one per token."""
    folder: Path
    damaged: set[str] = field(default_factory=set)   # tokens that failed to load: not tried again
    _warned: bool = field(default=False, repr=False)

    def open(self, token: str, seq: int) -> Vectors | None:
        """The snapshot named by the database, mapped read-only; None when it is gone or damaged."""
        where = self.folder / token
        try:
            vectors = np.load(where / "vectors.npy", mmap_mode="r")
            rowids = np.load(where / "rowids.npy")
            if vectors.dtype != np.float32 or vectors.ndim != 2 or rowids.shape != (len(vectors),):
                raise ValueError("shapes do not match")
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                self.damaged.add(token)
                log.warning("vector snapshot %s is damaged (%s): reading the vectors from the database", where, exc)
            return None
        return Vectors(vectors, rowids, np.ones(len(rowids), dtype=bool), np.empty((0, vectors.shape[1]), np.float32),
                       np.empty(0, dtype=np.int64), seq, token)

    def write(self, count: int, dims: int, rows: Iterable[tuple[int, bytes]],
              stop: threading.Event | None = None) -> str:
        """Write a new snapshot of `count` rows (rowid, vector bytes) in rowid order; its token. Raises
        OSError (no room, no permission), ValueError, or Stopped once `stop` is set, leaving nothing behind."""
        token = uuid.uuid4().hex
        part = self.folder / f".{token}.part"
        try:
            part.mkdir(parents=True)
            rowids = np.empty(count, dtype=np.int64)
            n = 0
            # Plain buffered writes, not a writable memory map: on a full disk a write raises OSError,
            # where a store into a mapped page would kill the process (SIGBUS).
            with open(part / "vectors.npy", "wb") as out:
                np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False,
                                                           "shape": (count, dims)})
                if hasattr(os, "posix_fallocate"):   # not on macOS
                    os.posix_fallocate(out.fileno(), 0, out.tell() + count * dims * 4)   # no room: fail now
                for n, (rowid, blob) in enumerate(rows, 1):   # the stored bytes are little-endian float32
                    if len(blob) != dims * 4:
                        raise ValueError(f"row {rowid} has {len(blob) // 4} dimensions, not {dims}")
                    if stop is not None and n % 4096 == 0 and stop.is_set():
                        raise Stopped
                    rowids[n - 1] = rowid
                    out.write(blob)
                if n != count:
                    raise ValueError(f"expected {count} rows, read {n}")
                out.flush()
                os.fsync(out.fileno())
            np.save(part / "rowids.npy", rowids)
            fsync(part / "rowids.npy")
            part.rename(self.folder / token)
            fsync(self.folder)
            return token
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise

    def warn(self, exc: Exception) -> None:
        """Say once per process that snapshots fail, and what this process does instead."""
        if not self._warned:
            self._warned = True
            log.warning("cannot write vector snapshots in %s (%s): this process keeps the vectors in its own "
                        "memory meanwhile", self.folder, exc)

    def remove_all_but(self, token: str) -> None:
        """Delete older snapshots and parts left by a crash; called under the lock, so no other process is
        writing one. (A process that still maps an old snapshot keeps reading it until it moves on.)"""
        for entry in self.folder.iterdir():
            if entry.name != token and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)   # what is left is only disk, retried next time

    def lock(self, stop: threading.Event | None = None) -> FileLock:
        return FileLock(self.folder / "lock", stop)


class Stopped(Exception):
    """The store is being closed: a snapshot being written is given up."""


def decode_meta(value: str | None) -> tuple[str, int] | None:
    """The database's meta `snapshot` value: (token, seq)."""
    if not value:
        return None
    try:
        data = json.loads(value)
        token, seq = str(data["token"]), int(data["seq"])
    except (ValueError, KeyError, TypeError):
        return None
    return (token, seq) if re.fullmatch(r"[0-9a-f]{32}", token) else None   # a folder name, never a path


def encode_meta(token: str, seq: int) -> str:
    return json.dumps({"token": token, "seq": seq})


class ReadOnlyDatabase(StoreUnavailable):
    """The database cannot be written: snapshots, which it must name, are off."""


class VectorSource(Protocol):
    """What following the vectors needs from the database (the embedded store answers in SQL). Every
    method but version() and separate() runs inside reading(), which makes the reads one consistent view;
    a failure of the database raises StoreError (ReadOnlyDatabase for a write refused as read-only)."""

    def version(self) -> int:
        """A number that changes whenever another connection commits (free to read)."""

    def reading(self) -> AbstractContextManager[None]: ...

    def seq(self) -> int:
        """The sequence number of the last write."""

    def named_snapshot(self) -> tuple[str, int] | None:
        """The snapshot the database names as current: (token, the sequence number it holds)."""

    def removed_since(self, seq: int) -> list[int]:
        """Row ids removed after `seq`."""

    def count_since(self, seq: int) -> int:
        """How many rows were written after `seq`."""

    def rows_since(self, seq: int) -> Iterable[tuple[int, bytes]]:
        """The rows (rowid, float32 bytes) written after `seq`."""

    def count(self) -> int: ...

    def dims(self) -> int:
        """Dimensions of the stored vectors (0 while there are none)."""

    def rows(self) -> Iterable[tuple[int, bytes]]:
        """Every row (rowid, float32 bytes) in rowid order."""

    def name_snapshot(self, token: str, seq: int) -> None:
        """Name this snapshot as current, in a write transaction of its own."""

    def separate(self) -> AbstractContextManager["VectorSource"]:
        """The same database on a connection of its own (for writing a snapshot beside the searches)."""


class _ManyRows(Exception):
    """Following would mean holding many rows privately: a new snapshot is cheaper."""


class SharedVectors:
    """The vectors of one database as this process searches them, kept up to date: `current()` moves onto
    the snapshot the database names (mapped, shared with every process) and applies the rows written and
    removed since; when those grow past an eighth of the snapshot (and `min_rows`), it writes a new
    snapshot, in a background thread once searches are being served. min_rows None: no snapshots (every
    vector read into this process's memory). `lock` is the one that guards the source's connection."""

    def __init__(self, source: VectorSource, folder: Path, min_rows: int | None, lock: threading.RLock):
        self.source = source
        self.snapshots = Snapshots(folder)
        self.min_rows = min_rows
        self.vectors = Vectors.empty()
        self.writer: threading.Thread | None = None   # the background snapshot writer, while one runs
        self._lock = lock
        self._off = min_rows is None      # also once the database turns out to be read-only
        self._retry_at = 0.0              # after a failed write: not again before this (monotonic)
        self._version: int | None = None
        self._loaded = False
        self._stop = threading.Event()    # set by close(): a snapshot being written is given up

    def current(self) -> Vectors:
        """The vectors as the database holds them now."""
        with self._lock:
            version = self.source.version()
            if version == self._version:
                return self.vectors
            # First load (a worker starting): a new snapshot, if one is due, costs less than reading every
            # vector into memory of its own, and nothing is served yet.
            try:
                followed = self._follow(self.vectors, snapshot_if_large=not self._loaded)
            except _ManyRows:
                self._write_snapshot()
                followed = self._follow(self.vectors, snapshot_if_large=False)
            self.vectors, self._loaded, self._version = followed, True, version
            if self._needs_snapshot(followed.changes, len(followed.base_rowids)):
                # Later ones are written beside the searches, which go on with their private rows.
                if self.writer is None or not self.writer.is_alive():
                    self.writer = threading.Thread(target=self._write_snapshot, name="vector-snapshot", daemon=True)
                    self.writer.start()
            return followed

    def close(self) -> None:
        """Give up a snapshot being written, wait for its thread (which holds a connection of its own) and
        let go of the mapped file: afterwards nothing of this process holds the database or the snapshot,
        so the files may be replaced (a restore) or removed. Call it without holding the source's lock."""
        self._stop.set()
        self._off = True
        writer = self.writer
        if writer is not None:
            writer.join()
        self.writer = None
        with self._lock:
            self.vectors, self._version = Vectors.empty(), None

    def changed(self) -> None:
        """This process committed through the source's own connection, which version() does not see."""
        self._version = None

    def _needs_snapshot(self, changes: int, base_rows: int) -> bool:
        """Whether a process holding `changes` rows beside a snapshot of `base_rows` had better have a new one."""
        return (not self._off and time.monotonic() >= self._retry_at
                and changes > max(self.min_rows or 0, base_rows // 8))

    def _follow(self, vectors: Vectors, snapshot_if_large: bool) -> Vectors:
        """`vectors` moved to the database's current state. With snapshot_if_large: raises _ManyRows instead
        when that means holding many rows privately."""
        source, reopened = self.source, 0
        while True:
            with source.reading():
                named, seq = source.named_snapshot(), source.seq()
                if seq < vectors.seq:   # the database went back in time (a backup restored): start again
                    vectors = Vectors.empty()
                if (named and named[0] != vectors.snapshot and not self._off
                        and named[0] not in self.snapshots.damaged):
                    opened = self.snapshots.open(*named)
                    if opened is None and reopened < 2 and named[0] not in self.snapshots.damaged:
                        reopened += 1
                        continue   # replaced between reading its name and opening it: read the name again
                    # else go on from what this process holds (reading every vector if it holds none)
                    if opened is not None:
                        vectors = opened
                if seq == vectors.seq:
                    return vectors
                removed, count = source.removed_since(vectors.seq), source.count_since(vectors.seq)
                if snapshot_if_large and self._needs_snapshot(vectors.changes + len(removed) + count,
                                                              len(vectors.base_rowids)):
                    raise _ManyRows
                return vectors.apply(removed, source.rows_since(vectors.seq), seq, count)

    def _write_snapshot(self) -> None:
        """Write all vectors, straight from the database, to a new snapshot for every process to map. One
        process at a time (the others wait, then use it); on a connection of its own, so that searches in
        other threads go on meanwhile. A failure is retried after a while, or never for a read-only database."""
        unnamed = None   # a snapshot written but not yet named by the database
        try:
            with self.source.separate() as db, self.snapshots.lock(self._stop) as locked:
                if self._stop.is_set():
                    return
                if not locked:
                    raise OSError(f"cannot lock {self.snapshots.folder}")
                with db.reading():
                    seq, named, count = db.seq(), db.named_snapshot(), db.count()
                    if named and named[0] not in self.snapshots.damaged:   # another process wrote one meanwhile?
                        since = db.count_since(named[1]) + len(db.removed_since(named[1]))
                        if not self._needs_snapshot(since, count) and (self.snapshots.folder / named[0]).is_dir():
                            return
                    unnamed = self.snapshots.write(count, db.dims(), db.rows(), self._stop)
                db.name_snapshot(unnamed, seq)
                token, unnamed = unnamed, None
                self.snapshots.remove_all_but(token)
        except Stopped:
            return
        except (OSError, ValueError, StoreError) as exc:
            if unnamed is not None:
                shutil.rmtree(self.snapshots.folder / unnamed, ignore_errors=True)   # named nowhere: useless
            if isinstance(exc, ReadOnlyDatabase):
                self._off = True
            else:
                self._retry_at = time.monotonic() + SNAPSHOT_RETRY_SECONDS
            self.snapshots.warn(exc)
