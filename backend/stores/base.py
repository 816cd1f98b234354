"""The store contract that every backend implements, and the types that cross it.

Ids: one document per file. A document's id is `document_id(path)`: the first 20 hex digits of the
SHA-256 of its absolute path, so re-indexing a file updates its document in place. The same content
under two paths is two documents (both with the same content_hash); the indexer then reuses the stored
vector instead of running the model again.
"""
from __future__ import annotations

import builtins
import hashlib
import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from .filters import Filters


# The version of what a document holds beside its vector: its metadata (backend/metadata.py) and its duplicate
# signature (backend/near_duplicates.py; 2: the 128 x 128 one). Documents indexed with an older one get the
# current ones on the next index run, keeping their vectors.
METADATA_VERSION = 2

# The backends, as Store.backend names them (and /api/stats reports them).
EMBEDDED, ELASTICSEARCH = "embedded", "elasticsearch"
BACKENDS = (EMBEDDED, ELASTICSEARCH)


class StoreError(RuntimeError):
    """Base of the store's errors."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached (for example the Elasticsearch cluster is down)."""


class DescriptorMismatch(StoreError):
    """Vectors of another descriptor (model, weights, pooling, size) than the store holds."""


class InvalidVector(StoreError, ValueError):
    """A vector that is not a finite unit vector (all zero, NaN, not normalised)."""


def normalise_tag(tag: str) -> str:
    """Tags are compared case-insensitively with runs of white space folded."""
    return " ".join(tag.split()).lower()


def normalise_tags(tags) -> list[str]:
    """Distinct, normalised, sorted, empty ones dropped."""
    return sorted({normalise_tag(t) for t in tags} - {""})


_WORD = re.compile(r"[^\W_]+")             # runs of letters and digits: IMG_2034.JPG -> img, 2034, jpg
_ACCENTS = re.compile("[\u0300-\u036f]")     # combining diacritical marks (Latin, Greek, Cyrillic accents)


def search_words(text: str) -> list[str]:
    """The words of a file name, a tag or a query, as every store indexes and matches them: runs of letters
    and digits, case-folded, accents removed (Café -> cafe). Marks of other scripts (Japanese dakuten) stay.
    One function for both backends, so keyword search behaves the same on each."""
    decomposed = unicodedata.normalize("NFKD", (text or "").casefold())
    return _WORD.findall(unicodedata.normalize("NFC", _ACCENTS.sub("", decomposed)))


def camera_name(make: str | None, model: str | None) -> str | None:
    """The camera as people name it: the model, led by the make unless the model already starts with it
    ("Canon" + "Canon EOS 5D" -> "Canon EOS 5D"; "NIKON CORPORATION" + "NIKON D750" -> "NIKON D750")."""
    make, model = (make or "").strip(), (model or "").strip()
    if not model:
        return make or None
    if not make or model.lower().startswith(make.split()[0].lower()):
        return model
    return f"{make} {model}"


def check_vectors(documents: Sequence["Document"]) -> None:
    """Every stored vector is a finite unit vector (cosine = dot product): a zero, NaN or unnormalised vector
    is refused before anything is written, by every backend alike."""
    for doc in documents:
        vector = np.asarray(doc.vector, dtype=np.float32)
        norm = float(np.linalg.norm(vector)) if vector.size and np.isfinite(vector).all() else float("nan")
        if not abs(norm * norm - 1.0) <= 1e-3:   # Elasticsearch's own tolerance for dot_product vectors
            raise InvalidVector(f"{doc.path}: its vector is not a unit vector (length {norm:.4g}); "
                                "a picture with no features (for example all black) cannot be searched by content")


def document_id(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:20]


@dataclass(frozen=True)
class NearLink:
    """A stored near-duplicate candidate of a document: another document `id`, which held `content_hash` when
    the link was made, whose vector's cosine with this one's was `score` (at least duplicates.LINK_FLOOR).
    A link is made once, by the later of the two documents; it stands while the other document still holds
    that content (a vector is a function of the bytes), so removals and re-indexing need no fix-up."""
    id: str
    content_hash: str
    score: float


@dataclass(frozen=True)
class Label:
    """A content label: an ImageNet class name (backend/labels.py) and the classifier's confidence in it."""
    name: str
    confidence: float

    def as_json(self) -> dict:
        return {"label": self.name, "confidence": round(self.confidence, 4)}


@dataclass
class Document:
    id: str
    vector: np.ndarray | None       # (dims,) float32, L2-normalised; None when not loaded
    filename: str
    path: str
    tags: list[str]
    width: int
    height: int
    bytes: int
    content_hash: str               # sha256 hex of the file's bytes
    descriptor: str                 # the descriptor id of `vector`
    indexed_at: float               # unix time
    modified_at: float = 0.0        # the file's mtime when indexed; lets the indexer skip unchanged files
    near: list[NearLink] | None = None   # near-duplicate links to earlier documents; None: never linked
    signature: builtins.bytes | None = None   # the picture's layout (near_duplicates.signature); None: not computed
    # What the picture says of itself (backend/metadata.py), read in the same pass as its pixels:
    taken: str | None = None        # EXIF date taken, "YYYY-MM-DDTHH:MM:SS", "+HH:MM" added when the offset is known
    camera_make: str | None = None
    camera_model: str | None = None
    file_type: str | None = None    # jpeg, png, gif, bmp, webp, tiff, heic, avif
    folder: str | None = None       # the file's folder relative to the indexed root ('' at the root; None: an upload)
    meta_version: int = 0           # which version of the metadata reader filled the fields above (0: none)

    @property
    def camera(self) -> str | None:
        return camera_name(self.camera_make, self.camera_model)
    # Content labels, most confident first; None: not classified yet (the next `index` run labels it)
    labels: list[Label] | None = None

    def metadata(self) -> dict:
        """Everything but the vector, JSON-ready."""
        return {"id": self.id, "filename": self.filename, "path": self.path, "tags": list(self.tags),
                "width": self.width, "height": self.height, "bytes": self.bytes,
                "content_hash": self.content_hash, "descriptor": self.descriptor,
                "indexed_at": self.indexed_at, "modified_at": self.modified_at, **self.photo(),
                "labels": None if self.labels is None else [label.as_json() for label in self.labels]}

    def photo(self) -> dict:
        """The picture's own metadata, JSON-ready (shown with a document and with each result)."""
        return {"taken": self.taken, "camera": self.camera, "camera_make": self.camera_make,
                "camera_model": self.camera_model, "type": self.file_type, "folder": self.folder}


# browse orders: newest taken first (undated last, then newest indexed), newest indexed first, by file name
SORTS = ("taken", "indexed", "name")
FACETS = ("tags", "camera", "folder", "year", "labels")


@dataclass
class Hit:
    document: Document              # vector not loaded
    score: float                    # kNN: cosine similarity in [-1, 1]; keyword: the engine's relevance
    label: Label | None = None      # keyword: the content label the words matched (no file name or tag did)


@dataclass
class Page:
    hits: list[Hit]
    total: int                      # how many documents matched in all (kNN on Elasticsearch with min_score: at most k)


@dataclass(frozen=True)
class Entry:
    """What the indexer needs to decide whether a file must be indexed again."""
    id: str
    path: str
    content_hash: str
    bytes: int
    modified_at: float
    tags: tuple[str, ...] = field(default_factory=tuple)
    linked: bool = True             # False: indexed before near-duplicate links were kept (the next run links it)
    meta_version: int = 0      # below METADATA_VERSION: the next index run reads the file's metadata again
    labelled: bool = True           # False: indexed without content labels (the next run adds them)


class Store(ABC):
    """Documents with vectors: write in bulk, read by id, kNN, keyword search, listing."""

    backend: str = "?"
    # Whether the store can fill an index for another descriptor beside the live one (stage) and then
    # switch to it at once (promote). Stores that cannot refuse both with a StoreError.
    supports_rebuild: bool = False

    @abstractmethod
    def descriptor(self) -> str | None:
        """The descriptor id of the stored vectors; None while the store is empty and unbound."""

    @abstractmethod
    def upsert(self, documents: Sequence[Document]) -> int:
        """Insert or replace documents by id, atomically per call. Raises DescriptorMismatch when a
        vector's descriptor differs from the store's and InvalidVector when a vector is not a unit vector
        (check_vectors), writing nothing. Returns how many were written."""

    @abstractmethod
    def get(self, doc_id: str, with_vector: bool = False) -> Document | None: ...

    @abstractmethod
    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove documents; unknown ids are ignored. Returns how many were removed."""

    @abstractmethod
    def knn(self, vector: np.ndarray, *, descriptor: str, tags: Sequence[str] = (), offset: int = 0,
            limit: int = 10, exclude: Sequence[str] = (), min_score: float | None = None,
            filters: "Filters | None" = None) -> Page:
        """Nearest documents by cosine similarity, best first. `tags` and `filters`: conditions every
        result meets, applied during the search (a page is never short of matching documents that
        exist). `exclude`: ids left out. Raises DescriptorMismatch when `descriptor` is not the store's."""

    def knn_many(self, vectors: np.ndarray, *, descriptor: str, limit: int, min_score: float,
                 exclude: Sequence[str] = ()) -> list[list[Hit]]:
        """knn for several query vectors at once (rows of `vectors`), each with a threshold: for each row,
        its best `limit` hits with score >= min_score, `exclude` left out. A backend answers them together
        where that is cheaper (the embedded store reads its vectors once for the whole batch)."""
        return [self.knn(v, descriptor=descriptor, limit=limit, min_score=min_score, exclude=exclude).hits
                for v in vectors]

    @abstractmethod
    def keyword(self, text: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 10,
                filters: "Filters | None" = None) -> Page:
        """Documents whose file name or tags match the words (case-insensitive; a word matches whole
        words and word prefixes), best first; then those with a content label the words name (the label
        or a broader word for it, labels.terms), most confident first, each Hit naming its label and
        scored by its confidence. Empty text with tags lists the tagged documents."""

    @abstractmethod
    def browse(self, filters: "Filters | None" = None, *, sort: str = "taken", offset: int = 0,
               limit: int = 10) -> Page:
        """The documents that meet `filters`, in the order `sort` (one of SORTS) names; scores are 0."""

    @abstractmethod
    def facets(self, filters: "Filters | None" = None, limit: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Among the documents that meet `filters`: counts per tag, camera, folder and year taken
        (FACETS), the most frequent `limit` of each, most frequent first (ties by value)."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def entries(self) -> Iterator[Entry]:
        """Every document's Entry, for incremental indexing."""

    @abstractmethod
    def find_by_hash(self, content_hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by content hash (for files whose content is already indexed elsewhere)."""

    @abstractmethod
    def vectors(self, doc_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by document id (relevance feedback reads the marked images and re-ranks
        candidates with them); unknown ids are absent from the answer."""

    @abstractmethod
    def documents(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        """Documents by id (no vectors; links included); unknown ids are absent from the answer."""

    @abstractmethod
    def exact_groups(self, content_hashes: Sequence[str] | None = None) -> list[list[str]]:
        """Ids of the documents that share their bytes (content_hash) with another, one sorted list per
        content; `content_hashes`: only these contents."""

    @abstractmethod
    def near_pairs(self, min_score: float, touching: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
        """Every stored near link (from id, to id, score) with score >= min_score whose ends are both current
        documents, the far end still holding the content it was linked with. `touching`: only links from or
        to these ids."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the backend answers; never raises."""

    def degraded(self) -> str | None:
        """Why a store that answers is not at full strength (a replica lost, say), or None; never raises."""
        return None

    def stats(self) -> dict:
        return {"backend": self.backend, "count": self.count(), "descriptor": self.descriptor(),
                "location": self.location()}

    @abstractmethod
    def location(self) -> str:
        """Where the data lives (a file path or a URL and index name)."""

    @abstractmethod
    def tag_counts(self, limit: int = 50) -> list[tuple[str, int]]:
        """The most used tags and their counts, most used first."""

    def stage(self, descriptor: str) -> str:
        """From now on read and write a new index for `descriptor` beside the live one, which stays what
        other readers search until promote(); returns its name. Only where supports_rebuild."""
        raise StoreError(f"the {self.backend} store cannot rebuild beside the live index: index into a new "
                         "store instead")

    def promote(self) -> str:
        """Make the staged index the live one, atomically; returns its name. Only where supports_rebuild."""
        raise StoreError(f"the {self.backend} store cannot rebuild beside the live index: nothing is staged")

    def warm_up(self) -> None:
        """Load what searches need now (the embedded store's vectors), so the first search is not slow."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
