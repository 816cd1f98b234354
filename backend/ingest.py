"""Ingestion: files or uploads -> (read, hash, decode, resize) -> batched VGG16 -> bulk upsert.

`Indexer` writes the documents of files (the command line's folders): decoding runs in a small thread
pool ahead of the model (Pillow releases the GIL while decoding), so the CPU-bound model call is rarely
left waiting. Every batch is committed on its own: an interrupted run keeps what it wrote, and the next
run skips it. `Uploads` is what the API adds and removes: an uploaded picture (decoded once, kept under
its content hash), the thumbnail cache, and the clean-up when a document is deleted.
"""
from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import numpy as np

from . import duplicates, imaging, near_duplicates
from .classifier import Classifier
from .features import FeatureExtractor
from .filelock import write_atomically
from .imaging import Decoded, ImageError, Limits, one_picture, read_file, thumbnail_jpeg
from .labels import top_labels
from .metadata import PhotoMetadata
from .search import FileMissing
from .stores.base import (METADATA_VERSION, Document, Entry, InvalidVector, Label, Store, StoreError, check_vectors,
                          document_id, normalise_tags)

MAX_FILENAME_LENGTH = 255
log = logging.getLogger("lookalike.labels")
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
               "TIFF": ".tif", "HEIF": ".heic", "AVIF": ".avif"}


@dataclass(frozen=True)
class FileToIndex:
    path: Path           # absolute
    tags: tuple[str, ...]
    bytes: int
    modified_at: float
    root: Path | None = None   # the folder given to the indexer that holds it (None: an upload)

    @property
    def id(self) -> str:
        return document_id(str(self.path))

    @property
    def folder(self) -> str | None:
        """Its folder relative to the root ('' for a file at the root or given itself); None for an upload."""
        if self.root is None:
            return None
        try:
            folder = self.path.parent.relative_to(self.root).as_posix()
        except ValueError:   # the root is the file itself
            return ""
        return "" if folder == "." else folder


@dataclass
class Summary:
    indexed: int = 0           # documents written (new or changed files)
    reused: int = 0            # of those, how many took a stored vector of the same content (no model call)
    skipped: int = 0           # unchanged since the last run
    pruned: int = 0            # documents removed because their file is gone
    linked: int = 0            # unchanged documents given their near-duplicate links (indexed before links were kept)
    failures: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def as_json(self) -> dict:
        return {"indexed": self.indexed, "reused": self.reused, "skipped": self.skipped, "failed": self.failed,
                "pruned": self.pruned, "linked": self.linked, "seconds": round(self.seconds, 3),
                "failures": [{"path": p, "reason": r} for p, r in self.failures]}


@dataclass
class _Loaded:
    item: FileToIndex
    content_hash: str
    width: int
    height: int
    pixels: np.ndarray          # prepared model input
    signature: bytes            # near_duplicates.signature: what decides whether two pictures are the same
    filename: str | None = None  # the document's file name when not the file's own (an upload's)
    metadata: PhotoMetadata = PhotoMetadata()
    label_pixels: np.ndarray | None = None   # the classifier's input, from the same decoded picture


class Indexer:
    """Writes documents for files into a store. The extractor is built only when a file needs it, and so
    is the classifier of content labels (None: no labels; documents indexed so keep what they had)."""

    def __init__(self, store: Store, extractor: FeatureExtractor | Callable[[], FeatureExtractor],
                 limits: Limits = Limits(), batch_size: int = 16, decode_threads: int = 2,
                 classifier: Classifier | Callable[[], Classifier] | None = None):
        self.store = store
        self._extractor = extractor
        self.limits = limits
        self.batch_size = batch_size
        self.decode_threads = decode_threads
        self._classifier = classifier

    @property
    def extractor(self) -> FeatureExtractor:
        if callable(self._extractor) and not isinstance(self._extractor, FeatureExtractor):
            self._extractor = self._extractor()
        return self._extractor

    @property
    def labels(self) -> bool:
        """Whether pictures are given content labels."""
        return self._classifier is not None

    @property
    def draft_size(self) -> int:
        """The size JPEGs are decoded at (about): what the larger of the two networks takes."""
        classifier = self.classifier
        return max(self.extractor.spec.image_size, classifier.side if classifier is not None else 0)

    @property
    def classifier(self) -> Classifier | None:
        if callable(self._classifier) and not isinstance(self._classifier, Classifier):
            self._classifier = self._classifier()
        return self._classifier

    def plan(self, files: Iterable[FileToIndex], keep_tags: bool = False) -> tuple[
            list[FileToIndex], list[tuple[FileToIndex, Entry]], int, dict[str, Entry]]:
        """Split files into (to index, updates that keep the vector, unchanged count, known entries by id).
        An unchanged file is updated in place when its tags differ or its document lacks the current metadata.
        A file indexed without content labels is indexed again when labels are on: its vector is found by its
        content hash and reused (no VGG16 call), the picture is decoded for the classifier."""
        known = {entry.id: entry for entry in self.store.entries()}
        todo, retag, unchanged = [], [], 0
        for item in files:
            entry = known.get(item.id)
            if entry and keep_tags:
                item = replace(item, tags=entry.tags)
            if entry and self.labels and not entry.labelled:
                todo.append(item)
            elif entry and entry.bytes == item.bytes and entry.modified_at == item.modified_at:
                if (normalise_tags(item.tags) == normalise_tags(entry.tags)
                        and entry.meta_version >= METADATA_VERSION):
                    unchanged += 1
                else:
                    retag.append((item, entry))
            else:
                todo.append(item)
        return todo, retag, unchanged, known

    def run(self, files: Iterable[FileToIndex], *, prune_under: Iterable[Path] = (),
            progress: Callable[[int], None] | None = None, on_plan: Callable[[int], None] | None = None,
            failures: list[tuple[str, str]] | None = None, keep_tags: bool = False,
            left_out: Callable[[Path], bool] | None = None) -> Summary:
        """Index what is new or changed. failures: problems met before (the scan's), reported with the
        rest. keep_tags: documents already indexed keep their tags (a run given no tag options).
        left_out: with prune_under, also prune the documents of files that exist but that this tells the
        scan now leaves out (an exclusion)."""
        started = time.perf_counter()
        files = list(files)   # first: a lazy scan appends its problems to `failures` as it goes
        summary = Summary(failures=list(failures or []))
        todo, retag, summary.skipped, known = self.plan(files, keep_tags)
        if on_plan:
            on_plan(len(todo))
        self._retag(retag, summary)
        changing = {item.id for item in todo} | {entry.id for _, entry in retag}
        summary.linked = self._link_stored([e.id for e in known.values() if not e.linked and e.id not in changing])
        for batch in self._load(todo, summary):
            self._write(batch, summary)
            if progress:
                progress(len(batch))
        if prune_under:
            summary.pruned = self._prune(known, files, prune_under, left_out)
        summary.seconds = time.perf_counter() - started
        return summary

    def index_decoded(self, path: Path, data: bytes, decoded: Decoded, tags: Iterable[str] = (),
                      filename: str | None = None) -> Document:
        """Index one file now from its bytes, already read and decoded (the API's upload), named `filename`
        if given; raises ImageError for a picture that gives no usable vector."""
        stat = path.stat()
        item = FileToIndex(path.resolve(), tuple(tags), stat.st_size, stat.st_mtime)
        summary = Summary()
        self._write([self._prepared(item, data, decoded, filename)], summary)
        if summary.failures:    # the picture gave no usable vector
            raise ImageError(str(path), summary.failures[0][1], "unsupported")
        doc = self.store.get(item.id)
        if doc is None:         # another writer removed it a moment ago
            raise StoreError(f"{path} was removed from the store while it was being added")
        return doc

    # -- steps ---------------------------------------------------------------------------------

    def _retag(self, pairs: list[tuple[FileToIndex, Entry]], summary: Summary) -> None:
        """Files whose bytes are unchanged but whose tags differ, or whose documents were written before the
        current metadata: rewrite the document, keep the vector and the near-duplicate links (the file is read
        for its metadata; its pixels are decoded only for a signature of an older version, whose links are made
        again)."""
        for start in range(0, len(pairs), 500):
            docs = []
            for item, entry in pairs[start:start + 500]:
                doc = self.store.get(entry.id, with_vector=True)
                if doc is not None:
                    doc.tags = list(item.tags)
                    if entry.meta_version < METADATA_VERSION:
                        self._refresh_metadata(doc, item)
                    if not near_duplicates.is_current(doc.signature):   # written by an older version: its links
                        doc.signature, doc.near = self._signature(item.path), None   # are made again below
                    docs.append(doc)
            duplicates.link(self.store, [doc for doc in docs if doc.near is None])
            self.store.upsert(docs)
            summary.indexed += len(docs)
            summary.reused += len(docs)

    def _link_stored(self, doc_ids: list[str]) -> int:
        """Give stored documents that have none their near-duplicate links, from their stored vectors (no
        model call) and a signature read from their file; returns how many were linked."""
        linked = 0
        for start in range(0, len(doc_ids), self.batch_size):
            docs = [doc for doc in (self.store.get(i, with_vector=True) for i in doc_ids[start:start + self.batch_size])
                    if doc is not None and doc.near is None]
            for doc in docs:
                if not near_duplicates.is_current(doc.signature):
                    doc.signature = self._signature(Path(doc.path))
            duplicates.link(self.store, docs)
            linked += self.store.upsert(docs)
        return linked

    def _signature(self, path: Path) -> bytes | None:
        """The signature of a stored picture's file; None when it cannot be read now (compared by its vector)."""
        try:
            with one_picture(str(path)):
                decoded = imaging.decode(read_file(path, self.limits), self.limits, source=str(path), draft_size=256)
                return near_duplicates.signature(decoded.image)
        except (ImageError, OSError):
            return None

    def _refresh_metadata(self, doc: Document, item: FileToIndex) -> None:
        try:
            metadata = imaging.peek_metadata(read_file(item.path, self.limits), self.limits, str(item.path))
        except ImageError:   # it was indexed: it decoded then; its fields stay empty, its vector stays
            metadata = PhotoMetadata()
        _describe(doc, metadata, item.folder)

    def _load_one(self, item: FileToIndex) -> _Loaded:
        """Read, hash, decode and prepare one file; any failure is its ImageError."""
        draft = self.draft_size   # builds the models outside the boundary: a model that cannot load is no file's fault
        with one_picture(str(item.path)):
            data = read_file(item.path, self.limits)
            decoded = imaging.decode(data, self.limits, source=str(item.path), draft_size=draft)
            return self._prepared(item, data, decoded)

    def _prepared(self, item: FileToIndex, data: bytes, decoded: Decoded, filename: str | None = None) -> _Loaded:
        """A decoded picture made ready for the model; any failure is its ImageError."""
        extractor, classifier = self.extractor, self.classifier
        with one_picture(str(item.path)):
            return _Loaded(item, hashlib.sha256(data).hexdigest(), decoded.width, decoded.height,
                           extractor.prepare(decoded.image), near_duplicates.signature(decoded.image), filename,
                           decoded.metadata, None if classifier is None else classifier.prepare(decoded.image))

    def _try_load(self, item: FileToIndex) -> _Loaded | tuple[str, str]:
        try:
            return self._load_one(item)
        except ImageError as exc:
            return (str(item.path), exc.reason)

    def _load(self, todo: list[FileToIndex], summary: Summary) -> Iterator[list[_Loaded]]:
        """Decoded batches, decoding a few batches ahead of the consumer in worker threads."""
        if not todo:
            return
        self.extractor  # build the models before the threads start
        self.classifier
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode") as pool:
            # a bounded window of decodes in flight keeps memory flat on huge folders
            window = self.batch_size * 4
            items = iter(todo)
            pending = deque(pool.submit(self._try_load, item) for item in islice(items, window))
            batch: list[_Loaded] = []
            while pending:
                result = pending.popleft().result()
                nxt = next(items, None)
                if nxt is not None:
                    pending.append(pool.submit(self._try_load, nxt))
                if isinstance(result, tuple):
                    summary.failures.append(result)
                    continue
                batch.append(result)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def _write(self, batch: list[_Loaded], summary: Summary) -> None:
        reuse = self.store.find_by_hash([b.content_hash for b in batch])
        need = [b for b in batch if b.content_hash not in reuse]
        vectors = self._embed(need, summary)
        labels = self._classify(batch)
        descriptor = self.extractor.descriptor_id
        now = time.time()
        written = [b for b in batch if b.content_hash in reuse or id(b) in vectors]
        docs = [Document(id=b.item.id, vector=reuse.get(b.content_hash, vectors.get(id(b))),
                         filename=b.filename or b.item.path.name, path=str(b.item.path), tags=list(b.item.tags),
                         width=b.width, height=b.height, bytes=b.item.bytes, content_hash=b.content_hash,
                         descriptor=descriptor, indexed_at=now, modified_at=b.item.modified_at,
                         signature=b.signature, labels=labels.get(id(b)))
                for b in written]
        for doc, loaded in zip(docs, written):
            _describe(doc, loaded.metadata, loaded.item.folder)
        docs = [doc for doc in docs if self._usable(doc, summary)]
        duplicates.link(self.store, docs)
        self.store.upsert(docs)
        summary.indexed += len(docs)
        summary.reused += len(batch) - len(need)

    def _embed(self, need: list[_Loaded], summary: Summary) -> dict[int, np.ndarray]:
        """Vectors by id(loaded). A model call that fails for a batch is retried file by file, so only the
        file it fails on is reported (and left out); the rest of the batch is stored."""
        extractor = self.extractor
        try:
            return dict(zip((id(b) for b in need), extractor.embed([b.pixels for b in need], self.batch_size)))
        except Exception as exc:  # noqa: BLE001 -- whatever the model raised, one file must not cost a batch
            if len(need) == 1:
                summary.failures.append((str(need[0].item.path), f"the model failed on this image ({exc})"))
                return {}
        vectors: dict[int, np.ndarray] = {}
        for loaded in need:
            vectors.update(self._embed([loaded], summary))
        return vectors

    def _classify(self, batch: list[_Loaded]) -> dict[int, list[Label]]:
        """Content labels by id(loaded); none when labels are off. A classifier that fails leaves the batch
        unlabelled (documents are written; the next run labels them), as labels are not the index's core."""
        classifier = self.classifier
        if classifier is None:
            return {}
        ready = [(b, b.label_pixels) for b in batch if b.label_pixels is not None]
        try:
            probabilities = classifier.probabilities([pixels for _, pixels in ready], self.batch_size)
        except Exception as exc:  # noqa: BLE001 -- whatever the classifier raised, the descriptors are stored
            log.warning("content labels failed for a batch of %d pictures (%s); the next run adds them",
                        len(batch), exc)
            return {}
        return {id(b): top_labels(p) for (b, _), p in zip(ready, probabilities)}

    @staticmethod
    def _usable(doc: Document, summary: Summary) -> bool:
        """Every store refuses a vector that is not a unit vector: report that file alone, keep the batch."""
        try:
            check_vectors([doc])
            return True
        except InvalidVector:
            summary.failures.append((doc.path, "the picture gives no features to search by (an all-zero vector)"))
            return False

    def _prune(self, known: dict[str, Entry], files: list[FileToIndex], roots: Iterable[Path],
               left_out: Callable[[Path], bool] | None = None) -> int:
        """Remove documents under the roots whose files no longer exist, or are left out now."""
        present = {f.id for f in files}
        gone = [entry.id for entry in entries_under(known.values(), roots)
                if entry.id not in present and (not Path(entry.path).exists()
                                                 or (left_out is not None and left_out(Path(entry.path))))]
        return self.store.delete(gone)


def _describe(doc: Document, metadata: PhotoMetadata, folder: str | None) -> None:
    """Put what the picture says of itself (and its folder) on its document."""
    doc.taken, doc.camera_make, doc.camera_model = metadata.taken, metadata.camera_make, metadata.camera_model
    doc.file_type, doc.folder, doc.meta_version = metadata.file_type, folder, METADATA_VERSION


def entries_under(entries: Iterable[Entry], roots: Iterable[Path]) -> list[Entry]:
    """The entries whose files are the roots or lie under them (by path; the files need not exist)."""
    prefixes = [str(Path(r).expanduser().resolve()) for r in roots]
    return [entry for entry in entries
            if any(entry.path == p or entry.path.startswith(p.rstrip("/") + "/") for p in prefixes)]


class Uploads:
    """What the API adds and removes beside the store: uploaded pictures, kept in `folder` under their
    content hash; thumbnails, cached in `thumbnails` by document, content and size; and both cleaned up
    when a document is deleted. Uploads share the indexer's store and model."""

    def __init__(self, indexer: Indexer, folder: Path, thumbnails: Path, *, image_size: int,
                 thumbnail_size: int):
        self.indexer = indexer
        self.folder = Path(folder)
        self.thumbnails = Path(thumbnails)
        self.image_size = image_size           # the models' input size: JPEGs are decoded at about it
        self.thumbnail_size = thumbnail_size

    @property
    def store(self) -> Store:
        return self.indexer.store

    def add(self, data: bytes, tags: Iterable[str] = (), filename: str | None = None) -> tuple[Document, bool]:
        """Index an uploaded picture: (its document, whether it is new). The file is named by its content
        hash, the document by `filename` (the client's name, made safe, for keyword search). The bytes are decoded
        once, before anything touches the disk: bad bytes raise ImageError and leave nothing behind, and
        so does any later failure for a file this call wrote."""
        decoded = imaging.decode(data, self.indexer.limits, draft_size=self.image_size)
        self.indexer.extractor   # a model that cannot load fails the upload before a file is written
        path = self.folder / (hashlib.sha256(data).hexdigest() + _EXTENSIONS[decoded.format])
        existed = path.is_file()
        if not existed:
            write_atomically(path, data)
        try:
            doc = self.indexer.index_decoded(path, data, decoded, tags, filename=client_filename(filename, path.name))
        except BaseException:
            if not existed:
                path.unlink(missing_ok=True)
            raise
        return doc, not existed

    def thumbnail(self, doc: Document) -> tuple[Path, str]:
        """The cached thumbnail JPEG of a document, built on first use, and its tag (content and size: a
        changed file gets a new one). Raises FileMissing when it must be built and the file is gone."""
        size = self.thumbnail_size
        tag = f"{doc.content_hash[:16]}-{size}"
        cached = self.thumbnails / f"{doc.id}-{tag}.jpg"
        if not cached.is_file():
            path = Path(doc.path)
            if not path.is_file():
                raise FileMissing(doc.id)
            limits = self.indexer.limits
            picture = imaging.decode(read_file(path, limits), limits, source=doc.filename, draft_size=size).image
            write_atomically(cached, thumbnail_jpeg(picture, size))
        return cached, tag

    def set_tags(self, doc: Document, tags: Iterable[str]) -> Document | None:
        """Replace a document's tags, keeping its vector and labels (a file indexed from a folder keeps them
        until an `index` run given tag options decides its tags again); None if it is gone."""
        stored = self.store.get(doc.id, with_vector=True)
        if stored is None:      # removed a moment ago
            return None
        stored.tags = normalise_tags(tags)
        self.store.upsert([stored])
        stored.vector = None
        return stored

    def delete(self, doc: Document) -> None:
        """Remove a document, its thumbnails, and its file when it is an upload (files indexed from the
        user's folders are left alone)."""
        self.store.delete([doc.id])
        for cached in self.thumbnails.glob(f"{doc.id}-*.jpg"):
            cached.unlink(missing_ok=True)
        path = Path(doc.path)
        if path.parent == self.folder.resolve():
            path.unlink(missing_ok=True)


def client_filename(name: str | None, fallback: str) -> str:
    """The client's file name made safe to show: its last path part, without control characters (or
    JSON's lone surrogates), at most 255 characters; `fallback` when nothing is left."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs")).strip()
    return name[:MAX_FILENAME_LENGTH] if name not in ("", ".", "..") else fallback

