"""The embedded store: one SQLite file (WAL mode) holds everything; kNN runs on a shared mapped matrix.

Why this shape (docs/architecture.md has the full decision):
- SQLite in WAL mode lets many reader processes (gunicorn workers) read while one writer (the
  indexer) commits, and a crash or kill -9 loses nothing committed and never corrupts the file.
- FTS5 gives word and prefix keyword search with BM25 ranking, in the same transaction as the vectors.
- kNN is exact: a float32 matrix product in numpy (about 80 ms for 1M x 512 on 2 cores). The vectors
  are mapped from a snapshot file that all processes share, and each process follows the writer
  incrementally (matrix.SharedVectors): every write bumps a sequence number, and a reader applies only
  the rows (and removals) newer than the last it saw. This module answers the SQL those need.
- Every sqlite3 error leaves a public method as the contract's StoreUnavailable.
"""
from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..filelock import FileLock, hold_shared
from ..labels import labels_for, matching_label, query_term
from .base import (EMBEDDED, FACETS, SORTS, DescriptorMismatch, Document, Entry, Hit, Label, NearLink, Page, Store,
                   StoreUnavailable, check_vectors, normalise_tags, search_words)
from .filters import Filters, combined, normalise_camera
from .matrix import ReadOnlyDatabase, SharedVectors, decode_meta, encode_meta

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    seq INTEGER NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    tags TEXT NOT NULL,               -- JSON list
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    descriptor TEXT NOT NULL,
    indexed_at REAL NOT NULL,
    modified_at REAL NOT NULL,
    vector BLOB NOT NULL,             -- float32, little-endian
    linked INTEGER NOT NULL DEFAULT 0, -- 1: its near links (near_links) were computed
    signature BLOB,                   -- near_duplicates.signature of the picture
    labels TEXT                       -- JSON [[label, confidence], ...], NULL until classified
    -- then the columns of _ADDED, which _MIGRATIONS adds to every file, new or made before
);
CREATE INDEX IF NOT EXISTS docs_seq ON docs(seq);
CREATE INDEX IF NOT EXISTS docs_hash ON docs(content_hash);
CREATE TABLE IF NOT EXISTS doc_tags (tag TEXT NOT NULL, rowid INTEGER NOT NULL, PRIMARY KEY (tag, rowid))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_tags_rowid ON doc_tags(rowid);
CREATE TABLE IF NOT EXISTS removed (rowid INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_seq ON removed(seq);
-- near-duplicate links from a document (rowid) to an earlier one (its id and content when linked)
CREATE TABLE IF NOT EXISTS near_links (rowid INTEGER NOT NULL, other TEXT NOT NULL, other_hash TEXT NOT NULL,
    score REAL NOT NULL, PRIMARY KEY (rowid, other)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS near_links_other ON near_links(other);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(filename, tags, tokenize='unicode61 remove_diacritics 2');
"""
# Columns added to docs since the first schema: a file made before gains them (empty) when opened, and its
# documents get their values on the next index run (Document.meta_version). camera is Document.camera, the
# name shown; camera_key and make_key are that name and the make as filters compare them (normalise_camera).
_ADDED = (("taken", "TEXT"), ("camera_make", "TEXT"), ("camera_model", "TEXT"), ("file_type", "TEXT"),
          ("folder", "TEXT"), ("meta_version", "INTEGER NOT NULL DEFAULT 0"), ("camera", "TEXT"),
          ("camera_key", "TEXT"), ("make_key", "TEXT"))
# What filters and browsing look up and sort by.
_INDEXES = """
CREATE INDEX IF NOT EXISTS docs_taken ON docs(taken);
CREATE INDEX IF NOT EXISTS docs_indexed ON docs(indexed_at);
CREATE INDEX IF NOT EXISTS docs_filename ON docs(filename);
CREATE INDEX IF NOT EXISTS docs_camera ON docs(camera_key);
CREATE INDEX IF NOT EXISTS docs_make ON docs(make_key);
CREATE INDEX IF NOT EXISTS docs_folder ON docs(folder);
CREATE INDEX IF NOT EXISTS docs_type ON docs(file_type);
CREATE INDEX IF NOT EXISTS docs_width ON docs(width);
CREATE INDEX IF NOT EXISTS docs_height ON docs(height);
"""
_META_COLUMNS = "rowid, id, filename, path, tags, width, height, bytes, content_hash, descriptor, " \
                "indexed_at, modified_at, linked, signature, labels, taken, camera_make, camera_model, file_type, " \
                "folder, meta_version"
# A document's content labels, one row each, found by label (a query's term names a set of labels,
# labels.labels_for). A store written before content labels gets this table and the `labels` column.
_LABELS = """
CREATE TABLE IF NOT EXISTS doc_labels (label TEXT NOT NULL, rowid INTEGER NOT NULL, confidence REAL NOT NULL,
    PRIMARY KEY (label, rowid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_labels_rowid ON doc_labels(rowid);
"""
# What a database made by an earlier version lacks, and the statements that add it (run once, on opening).
_MIGRATIONS = (
    ("SELECT 1 FROM pragma_table_info('docs') WHERE name='linked'",
     "ALTER TABLE docs ADD COLUMN linked INTEGER NOT NULL DEFAULT 0"),
    ("SELECT 1 FROM pragma_table_info('docs') WHERE name='signature'",
     "ALTER TABLE docs ADD COLUMN signature BLOB"),
    ("SELECT 1 FROM sqlite_master WHERE name='near_links'",
     _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS near_links"):_SCHEMA.index("CREATE VIRTUAL TABLE")]),
    ("SELECT 1 FROM pragma_table_info('docs') WHERE name='labels'", "ALTER TABLE docs ADD COLUMN labels TEXT"),
    ("SELECT 1 FROM sqlite_master WHERE name='doc_labels'", _LABELS),
    *((f"SELECT 1 FROM pragma_table_info('docs') WHERE name='{name}'", f"ALTER TABLE docs ADD COLUMN {name} {kind}")
      for name, kind in _ADDED),
    ("SELECT 1 FROM sqlite_master WHERE name='docs_height'", _INDEXES),   # its last index
)
log = logging.getLogger(__name__)


def users_lock(db_path: Path) -> Path:
    """The file every process with the store open holds a shared lock on (a restore needs it alone)."""
    return db_path.with_name(db_path.name + ".lock")


def setup_lock(db_path: Path) -> Path:
    """The file a process holds an exclusive lock on while it opens the store (its journal mode, its schema)."""
    return db_path.with_name(db_path.name + ".setup")


def snapshot_folder(db_path: Path) -> Path:
    """Where the vector snapshots of the database at `db_path` live: beside it, `index.sqlite3.vectors/`."""
    return db_path.with_name(db_path.name + ".vectors")


@contextmanager
def _contract_errors(path: Path) -> Iterator[None]:
    """sqlite3's errors as the contract's: the file cannot be read or written (disk error, closed, locked,
    read-only) is StoreUnavailable."""
    try:
        yield
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY:
            raise ReadOnlyDatabase(f"the embedded store {path} is read-only: {exc}") from exc
        raise StoreUnavailable(f"the embedded store {path} failed: {exc}") from exc


def _translated(method):
    """A public method of the store that raises the contract's errors only, never sqlite3's."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _contract_errors(self.path):
            return method(self, *args, **kwargs)
    return wrapper


def _translated_iterator(method):
    """The same for a method that yields."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _contract_errors(self.path):
            yield from method(self, *args, **kwargs)
    return wrapper


def _where(filters: Filters) -> tuple[str, list]:
    """SQL conditions on `docs d` that hold for the documents meeting `filters` ('1' for none), and their
    parameters. Each uses an index (see _INDEXES); a folder is itself or anything under it, as a range."""
    sql, params = ["1"], []

    def any_of(column: str, values) -> None:
        sql.append(f"d.{column} IN ({','.join('?' * len(values))})")
        params.extend(values)

    if filters.tags:
        sql.append(f"d.rowid IN (SELECT rowid FROM doc_tags WHERE tag IN ({','.join('?' * len(filters.tags))}) "
                   "GROUP BY rowid HAVING count(*) = ?)")
        params.extend([*filters.tags, len(filters.tags)])
    low, high = filters.taken_range()
    if low is not None:
        sql.append("d.taken >= ?")
        params.append(low)
    if high is not None:
        sql.append("d.taken < ?")
        params.append(high)
    if filters.cameras:
        marks = ",".join("?" * len(filters.cameras))
        sql.append(f"(d.camera_key IN ({marks}) OR d.make_key IN ({marks}))")
        params.extend([*filters.cameras, *filters.cameras])
    if filters.folders:
        if filters.everywhere:
            sql.append("d.folder IS NOT NULL")
        else:
            # '/' + 1 is '0': every path under "a/b" sorts in ["a/b/", "a/b0")
            sql.append("(" + " OR ".join("d.folder = ? OR (d.folder >= ? AND d.folder < ?)"
                                         for _ in filters.folders) + ")")
            for folder in filters.folders:
                params.extend([folder, folder + "/", folder + "0"])
    if filters.types:
        any_of("file_type", filters.types)
    if filters.min_width:
        sql.append("d.width >= ?")
        params.append(filters.min_width)
    if filters.min_height:
        sql.append("d.height >= ?")
        params.append(filters.min_height)
    return " AND ".join(sql), params


# browse orders (ties broken by path, unique per document, as on Elasticsearch)
_ORDER = {"taken": "d.taken IS NULL, d.taken DESC, d.indexed_at DESC, d.path",
          "indexed": "d.indexed_at DESC, d.path",
          "name": "d.filename, d.path"}


def _connect(path: Path, **options) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=60, isolation_level=None, **options)


class VectorRows:
    """The database's side of following its vectors (matrix.VectorSource), in SQL on one connection;
    sqlite3's errors leave it as the contract's (ReadOnlyDatabase for a read-only file)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, path: Path):
        self._db, self._lock, self.path = db, lock, path

    @contextmanager
    def _sql(self) -> Iterator[sqlite3.Connection]:
        with _contract_errors(self.path), self._lock:
            yield self._db

    def _one(self, sql: str, *params):
        with self._sql() as db:
            row = db.execute(sql, params).fetchone()
        return row[0] if row else None

    def version(self) -> int:
        return self._one("PRAGMA data_version")

    @contextmanager
    def reading(self):
        with self._sql() as db:
            db.execute("BEGIN")   # one consistent read
            try:
                yield
            finally:
                db.execute("COMMIT")

    def seq(self) -> int:
        return int(self._one("SELECT value FROM meta WHERE key='seq'") or 0)

    def named_snapshot(self) -> tuple[str, int] | None:
        return decode_meta(self._one("SELECT value FROM meta WHERE key='snapshot'"))

    def removed_since(self, seq: int) -> list[int]:
        with self._sql() as db:
            return [r for (r,) in db.execute("SELECT rowid FROM removed WHERE seq > ?", (seq,))]

    def count_since(self, seq: int) -> int:
        return self._one("SELECT count(*) FROM docs WHERE seq > ?", seq)

    def rows_since(self, seq: int) -> Iterator[tuple[int, bytes]]:
        with self._sql() as db:
            yield from db.execute("SELECT rowid, vector FROM docs WHERE seq > ?", (seq,))

    def count(self) -> int:
        return self._one("SELECT count(*) FROM docs")

    def dims(self) -> int:
        first = self._one("SELECT vector FROM docs LIMIT 1")
        return len(first) // 4 if first else 0

    def rows(self) -> Iterator[tuple[int, bytes]]:
        with self._sql() as db:
            yield from db.execute("SELECT rowid, vector FROM docs ORDER BY rowid")

    def name_snapshot(self, token: str, seq: int) -> None:
        with self._sql() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('snapshot', ?)", (encode_meta(token, seq),))
            db.execute("COMMIT")

    @contextmanager
    def separate(self):
        with self._sql():
            db = _connect(self.path)
        try:
            yield VectorRows(db, threading.RLock(), self.path)
        finally:
            db.close()


class EmbeddedStore(Store):
    backend = EMBEDDED

    def __init__(self, path: Path | str, snapshot_min_rows: int | None = 1000):
        """snapshot_min_rows: a process writes a new vector snapshot once it holds more than this many
        rows beside the current one (and more than an eighth of it); None: no snapshots, every process
        reads all vectors into memory of its own (the benchmarks' baseline)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._users = hold_shared(users_lock(self.path))   # released by close()
        try:
            # One process at a time sets a file up: SQLite answers a second process's switch to WAL with
            # "database is locked" at once (no busy wait), and two that both find a new file empty would
            # both add the columns of _MIGRATIONS.
            with _contract_errors(self.path), FileLock(setup_lock(self.path)):
                self._db = _connect(self.path, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes; see docs
                self._shared = SharedVectors(VectorRows(self._db, self._lock, self.path),
                                             snapshot_folder(self.path), snapshot_min_rows, self._lock)
                self._create_or_migrate()
        except BaseException:
            if self._users is not None:
                self._users.close()
            raise

    # -- writing -----------------------------------------------------------------------------

    def _has_schema(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name='docs_fts'").fetchone() is not None

    def _missing_migrations(self) -> list[str]:
        return [script for probe, script in _MIGRATIONS if self._db.execute(probe).fetchone() is None]

    def _create_or_migrate(self) -> None:
        """Make or upgrade the schema, writing only when something is missing (so a read-only copy of a
        current database opens as before)."""
        if not self._has_schema():
            with self._write():
                self._run(_SCHEMA + _LABELS)
        if missing := self._missing_migrations():
            with self._write():
                for script in missing:
                    self._run(script)

    def _run(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def _write(self):
        store = self

        class _Txn:
            def __enter__(self):
                store._lock.acquire()
                try:
                    store._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks
                except BaseException:
                    store._lock.release()
                    raise

            def __exit__(self, exc_type, *_):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                    # data_version only moves for other connections' commits: resync after our own.
                    store._shared.changed()
                finally:
                    store._lock.release()
        return _Txn()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _next_seq(self) -> int:
        seq = int(self._meta("seq") or 0) + 1
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
        return seq

    @_translated
    def descriptor(self) -> str | None:
        with self._lock:
            return self._meta("descriptor")

    @_translated
    def upsert(self, documents: Sequence[Document]) -> int:
        if not documents:
            return 0
        check_vectors(documents)
        with self._write():
            bound = self._meta("descriptor")
            if bound is not None and self._db.execute("SELECT 1 FROM docs LIMIT 1").fetchone() is None:
                bound = None  # an empty store takes whatever descriptor comes first
            for doc in documents:
                if bound is None:
                    bound = doc.descriptor
                    self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('descriptor', ?)",
                                     (bound,))
                if doc.descriptor != bound:
                    raise DescriptorMismatch(
                        f"this store holds {bound} vectors; {doc.path} has {doc.descriptor} (index into a new "
                        "LOOKALIKE_DATA_DIR, or go back to the settings this store was built with)")
            seq = self._next_seq()
            for doc in documents:
                tags = normalise_tags(doc.tags)
                vector = np.ascontiguousarray(doc.vector, dtype="<f4").tobytes()
                row = self._db.execute("SELECT rowid FROM docs WHERE id=?", (doc.id,)).fetchone()
                camera = doc.camera
                labels = None if doc.labels is None else json.dumps(
                    [[label.name, label.confidence] for label in doc.labels], ensure_ascii=False)
                values = (seq, doc.filename, doc.path, json.dumps(tags, ensure_ascii=False), doc.width,
                          doc.height, doc.bytes, doc.content_hash, doc.descriptor, doc.indexed_at,
                          doc.modified_at, vector, int(doc.near is not None), doc.signature, labels, doc.taken,
                          doc.camera_make, doc.camera_model, doc.file_type, doc.folder, doc.meta_version, camera,
                          normalise_camera(camera) if camera else None,
                          normalise_camera(doc.camera_make) if doc.camera_make else None)
                if row:
                    rowid = row[0]
                    self._db.execute(
                        "UPDATE docs SET seq=?, filename=?, path=?, tags=?, width=?, height=?, bytes=?, "
                        "content_hash=?, descriptor=?, indexed_at=?, modified_at=?, vector=?, linked=?, "
                        "signature=?, labels=?, taken=?, camera_make=?, camera_model=?, file_type=?, folder=?, "
                        "meta_version=?, camera=?, camera_key=?, make_key=? WHERE rowid=?", values + (rowid,))
                    self._db.execute("DELETE FROM doc_tags WHERE rowid=?", (rowid,))
                    self._db.execute("DELETE FROM docs_fts WHERE rowid=?", (rowid,))
                    self._db.execute("DELETE FROM near_links WHERE rowid=?", (rowid,))
                    self._db.execute("DELETE FROM doc_labels WHERE rowid=?", (rowid,))
                else:
                    rowid = self._db.execute(
                        "INSERT INTO docs(id, seq, filename, path, tags, width, height, bytes, content_hash, "
                        "descriptor, indexed_at, modified_at, vector, linked, signature, labels, taken, camera_make, "
                        "camera_model, file_type, folder, meta_version, camera, camera_key, make_key) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (doc.id,) + values).lastrowid
                    self._db.execute("DELETE FROM removed WHERE rowid=?", (rowid,))
                self._db.executemany("INSERT OR REPLACE INTO near_links(rowid, other, other_hash, score) "
                                     "VALUES (?, ?, ?, ?)",
                                     [(rowid, link.id, link.content_hash, float(link.score))
                                      for link in doc.near or () if link.id != doc.id])
                self._db.executemany("INSERT INTO doc_tags(tag, rowid) VALUES (?, ?)", [(t, rowid) for t in tags])
                self._db.executemany("INSERT OR REPLACE INTO doc_labels(label, rowid, confidence) VALUES (?, ?, ?)",
                                     [(label.name, rowid, label.confidence) for label in doc.labels or ()])
                self._db.execute("INSERT INTO docs_fts(rowid, filename, tags) VALUES (?, ?, ?)",
                                 (rowid, " ".join(search_words(doc.filename)), " ".join(search_words(" ".join(tags)))))
        return len(documents)

    @_translated
    def delete(self, doc_ids: Iterable[str]) -> int:
        doc_ids = list(doc_ids)
        if not doc_ids:
            return 0
        removed = 0
        with self._write():
            seq = self._next_seq()
            for doc_id in doc_ids:
                row = self._db.execute("SELECT rowid FROM docs WHERE id=?", (doc_id,)).fetchone()
                if not row:
                    continue
                rowid = row[0]
                self._db.execute("DELETE FROM docs WHERE rowid=?", (rowid,))
                self._db.execute("DELETE FROM doc_tags WHERE rowid=?", (rowid,))
                self._db.execute("DELETE FROM docs_fts WHERE rowid=?", (rowid,))
                self._db.execute("DELETE FROM near_links WHERE rowid=?", (rowid,))
                self._db.execute("DELETE FROM doc_labels WHERE rowid=?", (rowid,))
                self._db.execute("INSERT OR REPLACE INTO removed(rowid, seq) VALUES (?, ?)", (rowid, seq))
                removed += 1
        return removed

    # -- reading -----------------------------------------------------------------------------

    def _row_to_document(self, row, vector: bytes | None = None,
                         links: dict[int, list[NearLink]] | None = None) -> Document:
        (rowid, doc_id, filename, path, tags, width, height, size, content_hash, descriptor,
         indexed_at, modified_at, linked, signature, labels, taken, camera_make, camera_model, file_type, folder,
         meta_version) = row
        return Document(id=doc_id, vector=None if vector is None else np.frombuffer(vector, dtype="<f4").copy(),
                        filename=filename, path=path, tags=json.loads(tags), width=width, height=height,
                        bytes=size, content_hash=content_hash, descriptor=descriptor,
                        indexed_at=indexed_at, modified_at=modified_at,
                        near=(links or {}).get(rowid, []) if linked else None, signature=signature,
                        labels=None if labels is None else [Label(n, c) for n, c in json.loads(labels)], taken=taken,
                        camera_make=camera_make, camera_model=camera_model, file_type=file_type, folder=folder,
                        meta_version=meta_version)

    def _links(self, rowids: Sequence[int]) -> dict[int, list[NearLink]]:
        """The near links from these rows, best first (called under the lock)."""
        out: dict[int, list[NearLink]] = {}
        marks = ",".join("?" * len(rowids))
        for rowid, other, other_hash, score in self._db.execute(
                f"SELECT rowid, other, other_hash, score FROM near_links WHERE rowid IN ({marks}) "
                "ORDER BY rowid, score DESC, other", list(rowids)):
            out.setdefault(rowid, []).append(NearLink(other, other_hash, score))
        return out

    @_translated
    def get(self, doc_id: str, with_vector: bool = False) -> Document | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_META_COLUMNS}, vector FROM docs WHERE id=?", (doc_id,)).fetchone()
            links = self._links([row[0]]) if row else {}
        if row is None:
            return None
        return self._row_to_document(row[:-1], row[-1] if with_vector else None, links)

    def _documents_where(self, column: str, keys: Sequence) -> dict:
        """Documents (no vectors) whose `column` (rowid or id) is one of `keys`, keyed by it."""
        out = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT {_META_COLUMNS} FROM docs WHERE {column} IN ({marks})",
                                        chunk).fetchall()
                links = self._links([row[0] for row in rows])
                for row in rows:
                    doc = self._row_to_document(row, links=links)
                    out[row[0] if column == "rowid" else doc.id] = doc
        return out

    def _documents_by_rowid(self, rowids: Sequence[int]) -> dict[int, Document]:
        return self._documents_where("rowid", rowids)

    @_translated
    def documents(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        return self._documents_where("id", list(dict.fromkeys(doc_ids)))

    @_translated
    def exact_groups(self, content_hashes: Sequence[str] | None = None) -> list[list[str]]:
        # the shared hashes from the index alone, then the few rows that hold them (reading the id of every
        # row to group them all would visit the whole table)
        shared = "SELECT content_hash FROM docs {} GROUP BY content_hash HAVING count(*) > 1"
        rows: list[tuple[str, str]] = []
        with self._lock:
            if content_hashes is None:
                rows = self._db.execute(f"SELECT content_hash, id FROM docs WHERE content_hash IN "
                                        f"({shared.format('')})").fetchall()
            else:
                hashes = list(dict.fromkeys(content_hashes))
                for start in range(0, len(hashes), 500):
                    chunk = hashes[start:start + 500]
                    where = f"WHERE content_hash IN ({','.join('?' * len(chunk))})"
                    rows += self._db.execute(f"SELECT content_hash, id FROM docs WHERE content_hash IN "
                                             f"({shared.format(where)})", chunk).fetchall()
        groups: dict[str, list[str]] = {}
        for content_hash, doc_id in rows:
            groups.setdefault(content_hash, []).append(doc_id)
        return [sorted(ids) for ids in groups.values()]

    @_translated
    def near_pairs(self, min_score: float, touching: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
        # a link stands while its far end holds the content it was linked with (a removed document's own
        # links go with it)
        sql = ("SELECT a.id, l.other, l.score FROM near_links l JOIN docs a ON a.rowid = l.rowid "
               "JOIN docs b ON b.id = l.other AND b.content_hash = l.other_hash WHERE l.score >= ?")
        with self._lock:
            if touching is None:
                return list(self._db.execute(sql, (min_score,)))
            out: list[tuple[str, str, float]] = []
            ids = list(dict.fromkeys(touching))
            for start in range(0, len(ids), 400):
                chunk = ids[start:start + 400]
                marks = ",".join("?" * len(chunk))
                out += self._db.execute(f"{sql} AND (a.id IN ({marks}) OR l.other IN ({marks}))",
                                        (min_score, *chunk, *chunk))
            return list(dict.fromkeys(out))

    def _tagged_rowids(self, tags: Sequence[str]) -> list[int]:
        tags = normalise_tags(tags)
        marks = ",".join("?" * len(tags))
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT rowid FROM doc_tags WHERE tag IN ({marks}) GROUP BY rowid HAVING count(*) = ?",
                (*tags, len(tags)))]

    @_translated
    def warm_up(self) -> None:
        self._shared.current()

    @property
    def vector_snapshot(self) -> str | None:
        """The token of the vector snapshot this process maps; None while it holds every vector itself."""
        return self._shared.vectors.snapshot

    @_translated
    def knn(self, vector, *, descriptor, tags=(), offset=0, limit=10, exclude=(), min_score=None,
            filters=None) -> Page:
        bound = self.descriptor()
        if bound is not None and descriptor != bound:
            raise DescriptorMismatch(f"the query is a {descriptor} vector; this store holds {bound} vectors")
        filters = combined(filters, tags)
        vectors = self._shared.current()
        if len(vectors) == 0:
            return Page([], 0)
        scores = vectors.scores(np.asarray(vector, dtype=np.float32))
        eligible = vectors.live.copy()
        if filters:   # the rows that meet the filters, before anything is ranked
            kept = np.zeros(len(vectors), dtype=bool)
            kept[vectors.positions(self._matching_rowids(filters))] = True
            eligible &= kept
        if exclude:
            eligible[vectors.positions(self._rowids_of(exclude))] = False
        if min_score is not None:
            eligible &= scores >= min_score
        total = int(eligible.sum())
        want = min(offset + limit, total)
        if want <= offset:
            return Page([], total)
        masked = np.where(eligible, scores, -np.inf)
        top = np.argpartition(-masked, want - 1)[:want] if want < len(masked) else np.arange(len(masked))
        top = top[np.argsort(-masked[top], kind="stable")][offset:want]
        rowids = vectors.rowids
        docs = self._documents_by_rowid([int(rowids[i]) for i in top])
        hits = [Hit(docs[int(rowids[i])], float(scores[i])) for i in top if int(rowids[i]) in docs]
        return Page(hits, total)

    def _matching_rowids(self, filters: Filters) -> list[int]:
        if filters.only_tags:
            return self._tagged_rowids(filters.tags)
        where, params = _where(filters)
        with self._lock:
            return [r for (r,) in self._db.execute(f"SELECT d.rowid FROM docs d WHERE {where}", params)]

    def _rowids_of(self, doc_ids: Sequence[str]) -> list[int]:
        """The rows of these documents (ids with none are left out)."""
        with self._lock:
            marks = ",".join("?" * len(doc_ids))
            return [r for (r,) in self._db.execute(f"SELECT rowid FROM docs WHERE id IN ({marks})", list(doc_ids))]

    @_translated
    def knn_many(self, vectors, *, descriptor, limit, min_score, exclude=()) -> list[list[Hit]]:
        """One matrix product for the whole batch: at 100,000 vectors a query reads 200 MB, so reading them
        once for 16 queries instead of 16 times is what keeps linking new pictures cheap."""
        bound = self.descriptor()
        if bound is not None and descriptor != bound:
            raise DescriptorMismatch(f"the query is a {descriptor} vector; this store holds {bound} vectors")
        queries = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        current = self._shared.current()
        if len(current) == 0 or len(queries) == 0:
            return [[] for _ in queries]
        scores = current.scores_many(queries)
        eligible = current.live.copy()
        if exclude:
            eligible[current.positions(self._rowids_of(exclude))] = False
        picked: list[np.ndarray] = []
        for column in range(len(queries)):
            candidates = np.flatnonzero(eligible & (scores[:, column] >= min_score))
            if len(candidates) > limit:
                candidates = candidates[np.argpartition(-scores[candidates, column], limit - 1)[:limit]]
            picked.append(candidates[np.argsort(-scores[candidates, column], kind="stable")])
        rowids = current.rowids
        docs = self._documents_by_rowid(sorted({int(rowids[i]) for top in picked for i in top}))
        return [[Hit(docs[int(rowids[i])], float(scores[i, column])) for i in top if int(rowids[i]) in docs]
                for column, top in enumerate(picked)]

    @_translated
    def keyword(self, text, *, tags=(), offset=0, limit=10, filters=None) -> Page:
        words = search_words(text)
        filters = combined(filters, tags)
        where, params = _where(filters)
        with self._lock:
            if words:
                match = " AND ".join(f'"{w}"*' for w in words)  # every word, as a word or a prefix
                base = f"FROM docs_fts f JOIN docs d ON d.rowid = f.rowid WHERE docs_fts MATCH ? AND {where}"
                # then documents with a label the words name (labels.py), that no name or tag matched
                named = labels_for(query_term(text))
                labelled = (f"FROM (SELECT rowid, max(confidence) AS confidence FROM doc_labels WHERE label IN "
                            f"({','.join('?' * len(named)) or 'NULL'}) GROUP BY rowid) t JOIN docs d ON "
                            f"d.rowid = t.rowid WHERE {where} "
                            "AND d.rowid NOT IN (SELECT rowid FROM docs_fts WHERE docs_fts MATCH ?)")
                label_params = [*named, *params, match]
                total = self._db.execute(f"SELECT (SELECT count(*) {base}) + (SELECT count(*) {labelled})",
                                         [match, *params, *label_params]).fetchone()[0]
                rows = self._db.execute(
                    f"SELECT rowid, part, score FROM (SELECT d.rowid, 0 AS part, bm25(docs_fts, 2.0, 1.0) AS score, "
                    f"d.filename AS filename, d.id AS id {base} UNION ALL SELECT d.rowid, 1, -t.confidence, "
                    f"d.filename, d.id {labelled}) ORDER BY part, score, filename, id LIMIT ? OFFSET ?",
                    [match, *params, *label_params, limit, offset]).fetchall()
            elif filters:
                return self._listed(filters, "ORDER BY d.filename, d.id", offset, limit)
            else:
                return Page([], 0)
        docs = self._documents_by_rowid([r[0] for r in rows])
        # bm25() is lower-is-better and negative, and so is a label's confidence here: report them positive
        term = query_term(text)
        return Page([Hit(docs[rowid], float(-score), matching_label(docs[rowid].labels, term) if part else None)
                     for rowid, part, score in rows if rowid in docs], total)

    def _listed(self, filters: Filters, order: str, offset: int, limit: int) -> Page:
        """The documents meeting `filters` in `order`, scored 0."""
        where, params = _where(filters)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM docs d WHERE {where}", params).fetchone()[0]
            rowids = [r for (r,) in self._db.execute(f"SELECT d.rowid FROM docs d WHERE {where} {order} "
                                                     "LIMIT ? OFFSET ?", [*params, limit, offset])]
        docs = self._documents_by_rowid(rowids)
        return Page([Hit(docs[r], 0.0) for r in rowids if r in docs], total)

    @_translated
    def browse(self, filters=None, *, sort="taken", offset=0, limit=10) -> Page:
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)} (got {sort!r})")
        return self._listed(filters or Filters(), f"ORDER BY {_ORDER[sort]}", offset, limit)

    @_translated
    def facets(self, filters=None, limit=50) -> dict[str, list[tuple[str, int]]]:
        where, params = _where(filters or Filters())
        queries = {
            "tags": f"SELECT t.tag, count(*) AS n FROM doc_tags t JOIN docs d ON d.rowid = t.rowid WHERE {where} "
                    "GROUP BY t.tag",
            "camera": f"SELECT d.camera, count(*) AS n FROM docs d WHERE {where} AND d.camera IS NOT NULL "
                      "GROUP BY d.camera",
            "folder": f"SELECT d.folder, count(*) AS n FROM docs d WHERE {where} AND d.folder IS NOT NULL "
                      "GROUP BY d.folder",
            "year": f"SELECT substr(d.taken, 1, 4), count(*) AS n FROM docs d WHERE {where} AND d.taken IS NOT NULL "
                    "GROUP BY 1",
            "labels": f"SELECT l.label, count(*) AS n FROM doc_labels l JOIN docs d ON d.rowid = l.rowid "
                      f"WHERE {where} GROUP BY l.label",
        }
        out = {}
        with self._lock:
            for name in FACETS:
                out[name] = [(str(value), n) for value, n in self._db.execute(
                    f"{queries[name]} ORDER BY n DESC, 1 LIMIT ?", [*params, limit])]
        return out

    @_translated
    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM docs").fetchone()[0]

    @_translated_iterator
    def entries(self) -> Iterator[Entry]:
        with self._lock:
            rows = self._db.execute("SELECT id, path, content_hash, bytes, modified_at, tags, linked, meta_version, "
                                    "labels IS NOT NULL FROM docs").fetchall()
        for doc_id, path, content_hash, size, modified_at, tags, linked, meta_version, labelled in rows:
            yield Entry(doc_id, path, content_hash, size, modified_at, tuple(json.loads(tags)), bool(linked),
                        meta_version, bool(labelled))

    @_translated
    def find_by_hash(self, content_hashes):
        return self._vectors_by("content_hash", content_hashes)

    @_translated
    def vectors(self, doc_ids):
        return self._vectors_by("id", doc_ids)

    def _vectors_by(self, column: str, keys) -> dict[str, np.ndarray]:
        """Stored vectors keyed by `column` (id or content_hash), 500 keys a query."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT {column}, vector FROM docs WHERE {column} IN ({marks})",
                                                  chunk):
                    out[key] = np.frombuffer(blob, dtype="<f4").copy()
        return out

    @_translated
    def tag_counts(self, limit: int = 50) -> list[tuple[str, int]]:
        with self._lock:
            return [(t, n) for t, n in self._db.execute(
                "SELECT tag, count(*) AS n FROM doc_tags GROUP BY tag ORDER BY n DESC, tag LIMIT ?", (limit,))]

    def ping(self) -> bool:
        try:
            with self._lock:
                self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
            return True
        except sqlite3.Error:
            return False

    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        """Afterwards this process holds nothing of the store: no connection (the snapshot writer's own
        included), no thread, no mapped snapshot. A file replaced under a live connection (a restore)
        would make SQLite fail with a disk I/O error."""
        self._shared.close()
        with self._lock:
            self._db.close()
        if self._users is not None:
            self._users.close()
            self._users = None

