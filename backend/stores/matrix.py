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
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

from ..filelock import FileLock, fsync

log = logging.getLogger(__name__)


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
        if n:
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

    def write(self, count: int, dims: int, rows: Iterable[tuple[int, bytes]]) -> str:
        """Write a new snapshot of `count` rows (rowid, vector bytes) in rowid order; its token. Raises
        OSError (no room, no permission) or ValueError, leaving nothing behind."""
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

    def lock(self) -> FileLock:
        return FileLock(self.folder / "lock")


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
