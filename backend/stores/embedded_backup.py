"""The embedded store's backup: SQLite's online backup API copies the database in one read transaction
(writers in WAL mode go on meanwhile; the copy is the database as of one commit), into a single file with
no write-ahead log. The vector snapshot is not copied: it is a cache that the restored store rebuilds.

A restore needs the store to itself: every process with the store open holds a shared lock
(embedded.users_lock), so a restore while a server or an indexer runs is refused, saying so."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import uuid
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

from ..filelock import exclusive_now, fsync
from .backups import Bar, BackupError, Checksum, IndexCopy, verify
from .base import EMBEDDED, Document

FILE = "index.sqlite3"


def file_sha256(path: Path, update=lambda n: None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            update(len(chunk))
    return digest.hexdigest()


def _figures(db: sqlite3.Connection, bar: Bar) -> dict:
    """Count, checksum and descriptor of the documents in `db`."""
    total = db.execute("SELECT count(*) FROM docs").fetchone()[0]
    row = db.execute("SELECT value FROM meta WHERE key='descriptor'").fetchone()
    checksum = Checksum()
    with bar("checksum", total, "doc") as update:
        for n, (doc_id, vector) in enumerate(db.execute("SELECT id, vector FROM docs"), 1):
            checksum.add(doc_id, vector)
            if n % 1000 == 0:
                update(1000)
        update(checksum.count % 1000)
    return {"count": checksum.count, "checksum": checksum.hexdigest(), "descriptor": row[0] if row else None}


@contextmanager
def _sqlite_errors(what: str) -> Iterator[None]:
    """sqlite3's errors as one line: `what` went wrong, and SQLite's reason."""
    try:
        yield
    except sqlite3.Error as exc:
        raise BackupError(f"{what}: {exc}") from None


def _copy_database(source: Path, target: Path, *, read_only: bool) -> None:
    """SQLite's backup API, all pages in one step: one read transaction, so the copy is one commit's state
    even while others write (a stepped backup starts again after every commit of another connection)."""
    uri = f"file:{source}?mode=ro" if read_only else str(source)
    with closing(sqlite3.connect(uri, uri=read_only, timeout=60)) as src, \
            closing(sqlite3.connect(target, isolation_level=None)) as out:
        src.backup(out)
        out.execute("DELETE FROM meta WHERE key='snapshot'")   # the vector snapshot is rebuilt, never copied
        out.execute("PRAGMA journal_mode=DELETE")               # one self-contained file


def check_file(folder: Path, index: dict) -> None:
    """BackupError unless the backup's database file is the one its manifest describes."""
    file = folder / str(index.get("file", FILE))
    if not file.is_file():
        raise BackupError(f"backup {folder} is incomplete: {file.name} is missing")
    if file.stat().st_size != index.get("bytes") or file_sha256(file) != index.get("sha256"):
        raise BackupError(f"backup {folder} is damaged: {file.name} is not the file its manifest describes "
                          "(truncated or altered)")


def backup_documents(folder: Path, manifest: dict, *, move_uploads: tuple[str, str] | None = None,
                     batch: int = 2000) -> Iterator[list[Document]]:
    """The documents of an embedded store's backup, whole (vectors, near links, labels, metadata), `batch`
    at a time, for another store to take in. Read from a private copy of the database (opening it as a
    store may migrate an older schema; the backup itself stays as it is). move_uploads: as in restore()."""
    from .embedded import EmbeddedStore

    with tempfile.TemporaryDirectory(prefix="lookalike-restore-") as scratch:
        copy = Path(scratch) / FILE
        with _sqlite_errors(f"backup {folder} is damaged: its database cannot be read"):
            _copy_database(folder / manifest["index"]["file"], copy, read_only=True)
        with EmbeddedStore(copy, snapshot_min_rows=None) as store:
            ids = [entry.id for entry in store.entries()]
            for start in range(0, len(ids), batch):
                chunk = ids[start:start + batch]
                documents, vectors = store.documents(chunk), store.vectors(chunk)
                for doc in documents.values():
                    doc.vector = vectors[doc.id]
                    if move_uploads and doc.path.startswith(move_uploads[0]):
                        doc.path = move_uploads[1] + doc.path[len(move_uploads[0]):]
                yield [documents[doc_id] for doc_id in chunk]


class EmbeddedCopy(IndexCopy):
    backend = EMBEDDED

    def __init__(self, path: Path):
        self.path = Path(path)

    def copy(self, folder: Path, bar: Bar, repository: str | None) -> dict:
        if repository is not None:
            raise BackupError("--repository is for an Elasticsearch store; the embedded store is copied into DEST")
        if not self.path.is_file():
            raise BackupError(f"no index at {self.path}: nothing to back up")
        target = folder / FILE
        with _sqlite_errors(f"could not copy {self.path}"):
            _copy_database(self.path, target, read_only=False)
            with closing(sqlite3.connect(f"file:{target}?mode=ro", uri=True)) as db:
                figures = _figures(db, bar)
        size = target.stat().st_size
        with bar("file checksum", size, "B") as update:
            digest = file_sha256(target, update)
        return {**figures, "index": {"file": FILE, "bytes": size, "sha256": digest}}

    def check(self, folder: Path, index: dict) -> None:
        check_file(folder, index)

    def count(self) -> int:
        if not self.path.is_file():
            return 0
        with _sqlite_errors(f"could not read {self.path}"), closing(sqlite3.connect(self.path, timeout=60)) as db:
            has_docs = db.execute("SELECT 1 FROM sqlite_master WHERE name='docs'").fetchone()
            return db.execute("SELECT count(*) FROM docs").fetchone()[0] if has_docs else 0

    def restore(self, folder: Path, manifest: dict, *, force: bool, bar: Bar,
                move_uploads: tuple[str, str] | None) -> dict:
        from .embedded import users_lock

        lock = exclusive_now(users_lock(self.path))
        if lock is None:
            raise BackupError(f"the store {self.path} is open in another process (a server or an indexer): stop it, "
                              "then restore")
        with lock:
            existing = self.count()
            if existing and not force:
                raise BackupError(f"{self.path} holds {existing} documents: restore replaces them only with --force")
            staged = self.path.with_name(f".{self.path.name}.restore-{uuid.uuid4().hex[:8]}")
            try:
                with _sqlite_errors(f"backup {folder} is damaged: its database cannot be read"):
                    _copy_database(folder / manifest["index"]["file"], staged, read_only=True)
                    with closing(sqlite3.connect(staged, isolation_level=None)) as db:
                        if move_uploads:
                            old, new = move_uploads
                            db.execute("UPDATE docs SET path = ? || substr(path, ?) WHERE substr(path, 1, ?) = ?",
                                       (new, len(old) + 1, len(old), old))
                        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                            raise BackupError(f"backup {folder} is damaged: its database fails SQLite's check")
                        figures = _figures(db, bar)
                verify(folder, manifest, figures)
                self._replace_live(staged)
            finally:
                staged.unlink(missing_ok=True)
        return figures

    def _replace_live(self, staged: Path) -> None:
        """Swap the verified copy in: nobody has the store open (the lock), the live database's log is
        checkpointed into it first, so that a crash at any point leaves either the old database or the new."""
        if self.path.is_file():
            with _sqlite_errors(f"could not checkpoint {self.path}"), \
                    closing(sqlite3.connect(self.path, timeout=60)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for suffix in ("-wal", "-shm"):   # a log left beside the new file would be replayed into it
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(staged, self.path)
        fsync(self.path.parent)

