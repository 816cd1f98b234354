"""An exclusive lock on a file, held for a `with` block: one process at a time does a costly write
(a vector snapshot, a converted model) while the others wait for it and then use the result; and
`fsync`, which makes such a write durable before it is named."""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

if sys.platform != "win32":
    import fcntl


class FileLock:
    """`with FileLock(path) as locked:` -- locked is False when the folder cannot be written, or when
    `stop` was set while waiting for another holder (a store being closed gives up its wait)."""

    def __init__(self, path: Path, stop: threading.Event | None = None):
        self.path = Path(path)
        self.stop = stop
        self.file: BinaryIO | None = None

    def __enter__(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = file = open(self.path, "a+b")
            if sys.platform == "win32":   # on Windows two processes may both do the work (the last one wins)
                return True
            if self.stop is None:
                fcntl.flock(file, fcntl.LOCK_EX)
                return True
            while True:   # a blocking flock cannot be interrupted from another thread: poll instead
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if self.stop.wait(0.05):
                        return False
        except OSError:
            return False   # an unwritable folder

    def __exit__(self, *exc) -> None:
        if self.file:
            self.file.close()   # releases the lock


def hold_shared(path: Path) -> BinaryIO | None:
    """A shared lock on `path`, held until the returned file is closed: every process that has a store open
    holds one, so that a restore (exclusive_now) can tell the store is in use. Waits while a restore holds
    it. None where it cannot be taken (an unwritable folder, Windows): the store opens all the same."""
    if sys.platform == "win32":
        return None
    try:
        file = open(path, "a+b")
    except OSError:
        return None
    try:
        fcntl.flock(file, fcntl.LOCK_SH)
    except OSError:
        file.close()
        return None
    return file


def exclusive_now(path: Path) -> BinaryIO | None:
    """An exclusive lock on `path` if nobody holds one of hold_shared's (else None), until the file is closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    file = open(path, "a+b")
    if sys.platform == "win32":
        return file
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's) contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Readers (other threads, other workers) see the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
