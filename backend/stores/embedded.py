"""The embedded store: one SQLite file (WAL mode) holds everything; kNN runs on an in-memory matrix.

Why this shape (docs/architecture.md has the full decision):
- SQLite in WAL mode lets many reader processes (gunicorn workers) read while one writer (the
  indexer) commits, and a crash or kill -9 loses nothing committed and never corrupts the file.
- FTS5 gives word and prefix keyword search with BM25 ranking, in the same transaction as the vectors.
- kNN is exact: a float32 matrix product in numpy (about 80 ms for 1M x 512 on 2 cores). Each
  process keeps the matrix in memory and follows the writer incrementally: every write bumps a
  sequence number, and a reader applies only the rows (and removals) newer than the last it saw.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .base import DescriptorMismatch, Document, Entry, Hit, Page, Store, normalise_tags

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
    vector BLOB NOT NULL              -- float32, little-endian
);
CREATE INDEX IF NOT EXISTS docs_seq ON docs(seq);
CREATE INDEX IF NOT EXISTS docs_hash ON docs(content_hash);
CREATE TABLE IF NOT EXISTS doc_tags (tag TEXT NOT NULL, rowid INTEGER NOT NULL, PRIMARY KEY (tag, rowid))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_tags_rowid ON doc_tags(rowid);
CREATE TABLE IF NOT EXISTS removed (rowid INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_seq ON removed(seq);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(filename, tags, tokenize='unicode61 remove_diacritics 2');
"""
_META_COLUMNS = "rowid, id, filename, path, tags, width, height, bytes, content_hash, descriptor, " \
                "indexed_at, modified_at"
_WORD = re.compile(r"\w+", re.UNICODE)


class _Matrix:
    """This process's copy of the vectors, kept in step with the database by sequence number."""

    def __init__(self, dims: int = 512):
        self.vectors = np.empty((0, dims), dtype=np.float32)
        self.rowids = np.empty(0, dtype=np.int64)
        self.position: dict[int, int] = {}
        self.seq = 0
        self.data_version = None

    def apply(self, removed: list[int], rows: Iterable[tuple[int, bytes]], seq: int, count: int) -> None:
        """rows: at most `count` (rowid, vector) pairs, read one by one into one preallocated array (a list
        of a million small arrays, stacked, took 3x the time and twice the memory of the matrix)."""
        # Build new arrays rather than editing in place, so a search running in another
        # thread keeps a consistent snapshot.
        vectors, rowids = self.vectors, self.rowids
        if removed:
            drop = [self.position[r] for r in removed if r in self.position]
            if drop:
                keep = np.ones(len(rowids), dtype=bool)
                keep[drop] = False
                vectors, rowids = vectors[keep], rowids[keep]
        position = {int(r): i for i, r in enumerate(rowids)} if removed else dict(self.position)
        new_ids, new_vecs, replaced = [], None, {}
        for rowid, blob in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            if rowid in position:
                replaced[position[rowid]] = vec
            else:
                if new_vecs is None:
                    new_vecs = np.empty((count, len(vec)), dtype=np.float32)
                position[rowid] = len(rowids) + len(new_ids)
                new_vecs[len(new_ids)] = vec
                new_ids.append(rowid)
        if replaced:
            vectors = vectors.copy()
            for i, vec in replaced.items():
                vectors[i] = vec
        if new_ids:
            new_vecs = new_vecs[:len(new_ids)]
            if vectors.shape[1] != new_vecs.shape[1]:
                vectors = np.empty((0, new_vecs.shape[1]), dtype=np.float32)
            vectors = np.concatenate([vectors, new_vecs]) if len(vectors) else new_vecs
            rowids = np.concatenate([rowids, np.asarray(new_ids, dtype=np.int64)])
        self.vectors, self.rowids, self.position, self.seq = vectors, rowids, position, seq


class EmbeddedStore(Store):
    backend = "embedded"

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes; see docs
        self._matrix = _Matrix()
        if not self._has_schema():
            with self._write():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)

    # -- writing -----------------------------------------------------------------------------

    def _has_schema(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name='docs_fts'").fetchone() is not None

    def _write(self):
        store = self

        class _Txn:
            def __enter__(self):
                store._lock.acquire()
                store._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks

            def __exit__(self, exc_type, *_):
                try:
                    store._db.execute("ROLLBACK" if exc_type else "COMMIT")
                    # data_version only moves for other connections' commits: resync after our own.
                    store._matrix.data_version = None
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

    def descriptor(self) -> str | None:
        with self._lock:
            return self._meta("descriptor")

    def upsert(self, documents: Sequence[Document]) -> int:
        if not documents:
            return 0
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
                        f"this store holds {bound} vectors; {doc.path} has {doc.descriptor} "
                        "(index into a new data directory, or delete the old documents first)")
            seq = self._next_seq()
            for doc in documents:
                tags = normalise_tags(doc.tags)
                vector = np.ascontiguousarray(doc.vector, dtype="<f4").tobytes()
                row = self._db.execute("SELECT rowid FROM docs WHERE id=?", (doc.id,)).fetchone()
                values = (seq, doc.filename, doc.path, json.dumps(tags, ensure_ascii=False), doc.width,
                          doc.height, doc.bytes, doc.content_hash, doc.descriptor, doc.indexed_at,
                          doc.modified_at, vector)
                if row:
                    rowid = row[0]
                    self._db.execute(
                        "UPDATE docs SET seq=?, filename=?, path=?, tags=?, width=?, height=?, bytes=?, "
                        "content_hash=?, descriptor=?, indexed_at=?, modified_at=?, vector=? WHERE rowid=?",
                        values + (rowid,))
                    self._db.execute("DELETE FROM doc_tags WHERE rowid=?", (rowid,))
                    self._db.execute("DELETE FROM docs_fts WHERE rowid=?", (rowid,))
                else:
                    rowid = self._db.execute(
                        "INSERT INTO docs(id, seq, filename, path, tags, width, height, bytes, content_hash, "
                        "descriptor, indexed_at, modified_at, vector) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (doc.id,) + values).lastrowid
                    self._db.execute("DELETE FROM removed WHERE rowid=?", (rowid,))
                self._db.executemany("INSERT INTO doc_tags(tag, rowid) VALUES (?, ?)", [(t, rowid) for t in tags])
                self._db.execute("INSERT INTO docs_fts(rowid, filename, tags) VALUES (?, ?, ?)",
                                 (rowid, doc.filename, " ".join(tags)))
        return len(documents)

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
                self._db.execute("INSERT OR REPLACE INTO removed(rowid, seq) VALUES (?, ?)", (rowid, seq))
                removed += 1
        return removed

    # -- reading -----------------------------------------------------------------------------

    def _row_to_document(self, row, vector: bytes | None = None) -> Document:
        (_, doc_id, filename, path, tags, width, height, size, content_hash, descriptor,
         indexed_at, modified_at) = row
        return Document(id=doc_id, vector=None if vector is None else np.frombuffer(vector, dtype="<f4").copy(),
                        filename=filename, path=path, tags=json.loads(tags), width=width, height=height,
                        bytes=size, content_hash=content_hash, descriptor=descriptor,
                        indexed_at=indexed_at, modified_at=modified_at)

    def get(self, doc_id: str, with_vector: bool = False) -> Document | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_META_COLUMNS}, vector FROM docs WHERE id=?", (doc_id,)).fetchone()
        if row is None:
            return None
        return self._row_to_document(row[:-1], row[-1] if with_vector else None)

    def _documents_by_rowid(self, rowids: Sequence[int]) -> dict[int, Document]:
        out = {}
        with self._lock:
            for start in range(0, len(rowids), 500):
                chunk = list(rowids[start:start + 500])
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(f"SELECT {_META_COLUMNS} FROM docs WHERE rowid IN ({marks})", chunk):
                    out[row[0]] = self._row_to_document(row)
        return out

    def _tagged_rowids(self, tags: Sequence[str]) -> list[int]:
        tags = normalise_tags(tags)
        marks = ",".join("?" * len(tags))
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT rowid FROM doc_tags WHERE tag IN ({marks}) GROUP BY rowid HAVING count(*) = ?",
                (*tags, len(tags)))]

    def sync(self) -> None:
        """Bring this process's matrix up to date with what writers have committed."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            matrix = self._matrix
            if version == matrix.data_version and matrix.seq:
                return
            self._db.execute("BEGIN")  # one consistent snapshot for both queries
            try:
                seq = int(self._meta("seq") or 0)
                if seq != matrix.seq:
                    removed = [r[0] for r in self._db.execute(
                        "SELECT rowid FROM removed WHERE seq > ?", (matrix.seq,))]
                    count = self._db.execute("SELECT count(*) FROM docs WHERE seq > ?", (matrix.seq,)).fetchone()[0]
                    rows = self._db.execute("SELECT rowid, vector FROM docs WHERE seq > ?", (matrix.seq,))
                    matrix.apply(removed, rows, seq, count)
            finally:
                self._db.execute("COMMIT")
            matrix.data_version = version

    def knn(self, vector, *, descriptor, tags=(), offset=0, limit=10, exclude=(), min_score=None) -> Page:
        bound = self.descriptor()
        if bound is not None and descriptor != bound:
            raise DescriptorMismatch(f"the query is a {descriptor} vector; this store holds {bound} vectors")
        self.sync()
        matrix = self._matrix
        vectors, rowids, position = matrix.vectors, matrix.rowids, matrix.position
        if len(rowids) == 0:
            return Page([], 0)
        scores = vectors @ np.asarray(vector, dtype=np.float32)
        eligible = np.ones(len(rowids), dtype=bool)
        if tags:
            eligible[:] = False
            eligible[[position[r] for r in self._tagged_rowids(tags) if r in position]] = True
        if exclude:
            with self._lock:
                marks = ",".join("?" * len(exclude))
                for (rowid,) in self._db.execute(f"SELECT rowid FROM docs WHERE id IN ({marks})", list(exclude)):
                    if rowid in position:
                        eligible[position[rowid]] = False
        if min_score is not None:
            eligible &= scores >= min_score
        total = int(eligible.sum())
        want = min(offset + limit, total)
        if want <= offset:
            return Page([], total)
        masked = np.where(eligible, scores, -np.inf)
        top = np.argpartition(-masked, want - 1)[:want] if want < len(masked) else np.arange(len(masked))
        top = top[np.argsort(-masked[top], kind="stable")][offset:want]
        docs = self._documents_by_rowid([int(rowids[i]) for i in top])
        hits = [Hit(docs[int(rowids[i])], float(scores[i])) for i in top if int(rowids[i]) in docs]
        return Page(hits, total)

    def keyword(self, text, *, tags=(), offset=0, limit=10) -> Page:
        words = [w.lower() for w in _WORD.findall(text or "")]
        tag_filter, params = "", []
        tags = normalise_tags(tags)
        if tags:
            marks = ",".join("?" * len(tags))
            tag_filter = (f" AND d.rowid IN (SELECT rowid FROM doc_tags WHERE tag IN ({marks}) "
                          f"GROUP BY rowid HAVING count(*) = {len(tags)})")
            params = list(tags)
        with self._lock:
            if words:
                match = " AND ".join(f'"{w}"*' for w in words)  # every word, as a word or a prefix
                base = f"FROM docs_fts f JOIN docs d ON d.rowid = f.rowid WHERE docs_fts MATCH ?{tag_filter}"
                total = self._db.execute(f"SELECT count(*) {base}", [match, *params]).fetchone()[0]
                rows = self._db.execute(
                    f"SELECT d.rowid, bm25(docs_fts, 2.0, 1.0) {base} ORDER BY 2, d.filename LIMIT ? OFFSET ?",
                    [match, *params, limit, offset]).fetchall()
            elif tags:
                base = f"FROM docs d WHERE 1{tag_filter}"
                total = self._db.execute(f"SELECT count(*) {base}", params).fetchone()[0]
                rows = self._db.execute(f"SELECT d.rowid, 0 {base} ORDER BY d.filename, d.id LIMIT ? OFFSET ?",
                                        [*params, limit, offset]).fetchall()
            else:
                return Page([], 0)
        docs = self._documents_by_rowid([r[0] for r in rows])
        # bm25() is lower-is-better and negative; report a positive relevance.
        return Page([Hit(docs[r[0]], float(-r[1])) for r in rows if r[0] in docs], total)

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM docs").fetchone()[0]

    def entries(self) -> Iterator[Entry]:
        with self._lock:
            rows = self._db.execute("SELECT id, path, content_hash, bytes, modified_at, tags FROM docs").fetchall()
        for doc_id, path, content_hash, size, modified_at, tags in rows:
            yield Entry(doc_id, path, content_hash, size, modified_at, tuple(json.loads(tags)))

    def find_by_hash(self, content_hashes):
        hashes = list(dict.fromkeys(content_hashes))
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(hashes), 500):
                chunk = hashes[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for content_hash, blob in self._db.execute(
                        f"SELECT content_hash, vector FROM docs WHERE content_hash IN ({marks})", chunk):
                    out[content_hash] = np.frombuffer(blob, dtype="<f4").copy()
        return out

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
        with self._lock:
            self._db.close()

