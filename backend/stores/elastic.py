"""The Elasticsearch store: an alias in front of one versioned index per descriptor; approximate kNN.

Layout (docs/elasticsearch.md has the reasoning and the documentation each choice was checked against):
- Documents live in a physical index `<alias>-v1-<sha256(descriptor)[:10]>`; the alias (LOOKALIKE_ES_INDEX)
  points at the live one. The descriptor is in the index mapping's `_meta`, so vectors of another
  descriptor are refused. A rebuild for a new descriptor fills its own index beside the live one
  (`stage`), then `promote` moves the alias in one atomic `_aliases` call.
- The vector is a `dense_vector` with `dot_product` similarity (our vectors are L2-normalised).
  Elasticsearch scores it as (1 + dot) / 2; we report 2 * _score - 1, so both backends give cosine
  similarity in [-1, 1]. The kNN `similarity` option takes the raw dot product, so min_score maps 1:1.
- Writes wait for a refresh (refresh=wait_for): when upsert or delete returns, the change is searchable.
- Every call that cannot reach the cluster raises StoreUnavailable (the API answers 503); nothing
  remembers the failure, so the next call after the cluster is back simply works.

The request bodies are built by the pure functions below, pinned by tests/test_elastic.py.
"""
from __future__ import annotations

import hashlib
import re
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers

from .base import (DescriptorMismatch, Document, Entry, Hit, Page, Store, StoreError, StoreUnavailable,
                   normalise_tags)

SCHEMA = 1                        # bump when the mapping changes incompatibly: the index name carries it
VECTOR = "vector"
MAX_WINDOW = 10_000               # index.max_result_window, and the ceiling for k and num_candidates
META_FIELDS = ["filename", "path", "tags", "width", "height", "bytes", "content_hash", "descriptor",
               "indexed_at", "modified_at"]
ENTRY_FIELDS = ["path", "content_hash", "bytes", "modified_at", "tags"]
# The same word split as the analyzer's tokenizer: runs of letters and digits.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# Statuses that mean "the cluster cannot serve this now", as opposed to "this request is wrong".
_UNAVAILABLE = (429, 502, 503, 504)


# -- request bodies (pure) -------------------------------------------------------------------------

def index_name(alias: str, descriptor: str) -> str:
    return f"{alias}-v{SCHEMA}-{hashlib.sha256(descriptor.encode()).hexdigest()[:10]}"


def index_body(descriptor: str, dims: int, index_type: str = "hnsw", m: int = 16,
               ef_construction: int = 100) -> dict:
    """Settings and mappings of a physical index holding `dims`-dimensional vectors of one descriptor."""
    words = {"type": "text", "analyzer": "words", "index_prefixes": {"min_chars": 1, "max_chars": 10}}
    return {
        "settings": {
            "analysis": {
                "tokenizer": {"words": {"type": "pattern", "pattern": "[^\\p{L}\\p{N}]+"}},
                "analyzer": {"words": {"type": "custom", "tokenizer": "words",
                                       "filter": ["lowercase", "asciifolding"]}},
            },
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": {"descriptor": descriptor, "dims": dims, "schema": SCHEMA},
            "properties": {
                VECTOR: {"type": "dense_vector", "dims": dims, "index": True, "similarity": "dot_product",
                         "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction}},
                "filename": {**words, "fields": {"keyword": {"type": "keyword"}}},
                "path": {"type": "keyword"},
                "tags": {"type": "keyword", "normalizer": "lowercase", "fields": {"text": words}},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "bytes": {"type": "long"},
                "content_hash": {"type": "keyword"},
                "descriptor": {"type": "keyword"},
                "indexed_at": {"type": "double"},
                "modified_at": {"type": "double"},
            },
        },
    }


def document_source(doc: Document) -> dict:
    """The JSON stored for a document (its id is the Elasticsearch _id)."""
    return {VECTOR: np.asarray(doc.vector, dtype=np.float32).tolist(), "filename": doc.filename,
            "path": doc.path, "tags": normalise_tags(doc.tags), "width": int(doc.width),
            "height": int(doc.height), "bytes": int(doc.bytes), "content_hash": doc.content_hash,
            "descriptor": doc.descriptor, "indexed_at": float(doc.indexed_at),
            "modified_at": float(doc.modified_at)}


def _tag_filters(tags: Sequence[str]) -> list[dict]:
    return [{"term": {"tags": tag}} for tag in normalise_tags(tags)]


def knn_body(vector, *, k: int, num_candidates: int, tags: Sequence[str] = (), exclude: Sequence[str] = (),
             min_score: float | None = None) -> dict:
    """The k nearest documents, best first. Tags and excluded ids are a filter *inside* knn, so they are
    applied during the graph search (k matching documents come back), not after it."""
    knn: dict = {"field": VECTOR, "query_vector": np.asarray(vector, dtype=np.float32).tolist(), "k": k,
                 "num_candidates": min(MAX_WINDOW, max(num_candidates, k))}
    conditions: dict = {}
    if tags:
        conditions["filter"] = _tag_filters(tags)
    if exclude:
        conditions["must_not"] = [{"ids": {"values": list(exclude)}}]
    if conditions:
        knn["filter"] = {"bool": conditions}
    if min_score is not None:
        knn["similarity"] = float(min_score)   # the raw dot product (= cosine here), not the _score
    return {"knn": knn, "size": k, "_source": {"excludes": [VECTOR]}}


def keyword_body(text: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 10) -> dict | None:
    """Every word must match the file name or a tag, as a whole word or a word prefix; None when there
    is nothing to search for. Each word is its own multi_match (bool_prefix: a one-term prefix query on
    each field) so that different words may match different fields, as in the embedded store."""
    words = [w.lower() for w in _WORD.findall(text or "")]
    filters = _tag_filters(tags)
    if not words and not filters:
        return None
    body: dict = {"from": offset, "size": limit, "track_total_hits": True, "_source": {"excludes": [VECTOR]}}
    if words:
        body["query"] = {"bool": {
            "must": [{"multi_match": {"query": word, "type": "bool_prefix", "fields": ["filename^2", "tags.text"]}}
                     for word in words],
            # whole words rank above prefixes
            "should": [{"multi_match": {"query": " ".join(words), "fields": ["filename^2", "tags.text"]}}],
            "filter": filters}}
        body["sort"] = ["_score", {"filename.keyword": "asc"}, {"path": "asc"}]
    else:
        body["query"] = {"bool": {"filter": filters}}
        body["sort"] = [{"filename.keyword": "asc"}, {"path": "asc"}]
    return body


def ids_body(doc_ids: Sequence[str], with_vector: bool) -> dict:
    body: dict = {"query": {"ids": {"values": list(doc_ids)}}, "size": len(doc_ids),
                  "_source": {"excludes": [VECTOR]}}
    if with_vector:
        body["fields"] = [VECTOR]   # vectors come through `fields` on 8.x and 9.x alike (9.2+ drop them from _source)
    return body


def hash_body(content_hashes: Sequence[str]) -> dict:
    """One stored vector per content hash."""
    return {"query": {"terms": {"content_hash": list(content_hashes)}}, "collapse": {"field": "content_hash"},
            "size": len(content_hashes), "_source": ["content_hash"], "fields": [VECTOR]}


def tag_counts_body(limit: int) -> dict:
    return {"size": 0, "aggs": {"tags": {"terms": {"field": "tags", "size": limit,
                                                   "order": [{"_count": "desc"}, {"_key": "asc"}]}}}}


def swap_actions(alias: str, old_indices: Iterable[str], new_index: str) -> list[dict]:
    """One _aliases request: readers see either the old index or the new one, never neither."""
    return [*({"remove": {"index": old, "alias": alias}} for old in old_indices if old != new_index),
            {"add": {"index": new_index, "alias": alias}}]


def score_to_cosine(score: float) -> float:
    """dot_product _score is (1 + dot) / 2 for float vectors."""
    return 2.0 * float(score) - 1.0


def public_url(url: str) -> str:
    """The URL without user name and password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _hit_document(hit: dict, vector: bool = False) -> Document:
    src = hit["_source"]
    vec = None
    if vector:
        values = (hit.get("fields") or {}).get(VECTOR)
        vec = None if values is None else np.asarray(values, dtype=np.float32).reshape(-1)
    return Document(id=hit["_id"], vector=vec, filename=src["filename"], path=src["path"],
                    tags=list(src.get("tags") or []), width=src["width"], height=src["height"],
                    bytes=src["bytes"], content_hash=src["content_hash"], descriptor=src["descriptor"],
                    indexed_at=src["indexed_at"], modified_at=src.get("modified_at", 0.0))


def _error_type(exc: ApiError) -> str | None:
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    return error.get("type") if isinstance(error, dict) else None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        if isinstance(error, dict):
            cause = (error.get("root_cause") or [error])[0]
            return f"{cause.get('type', 'error')}: {cause.get('reason', '')}".strip()
        return f"HTTP {exc.meta.status}"
    # "HTTPConnection(host=..., port=...): Failed to establish a new connection: [Errno 111] ..." -> the cause
    text = re.sub(r"^\w*Connection\([^)]*\):\s*", "", str(getattr(exc, "message", "") or exc).strip())
    return text.splitlines()[0] if text else type(exc).__name__


# -- the store -------------------------------------------------------------------------------------

class ElasticStore(Store):
    backend = "elasticsearch"

    def __init__(self, client: Elasticsearch, url: str, alias: str = "lookalike", *, num_candidates: int = 200,
                 index_type: str = "hnsw", m: int = 16, ef_construction: int = 100, wait: float | None = 60.0):
        if not _INDEX_NAME.match(alias):
            raise StoreError(f"LOOKALIKE_ES_INDEX={alias!r} is not a valid index name: use lower-case "
                             "letters, digits, '.', '_' and '-', starting with a letter or digit")
        self._client = client
        self.url = public_url(url)
        self.alias = alias
        self.num_candidates = num_candidates
        self.index_options = {"index_type": index_type, "m": m, "ef_construction": ef_construction}
        self._staged: str | None = None
        if wait is not None:   # None: do not wait (the caller knows the cluster is, or was, up)
            self.wait_until_ready(wait)

    @classmethod
    def from_settings(cls, settings) -> "ElasticStore":
        try:
            client = Elasticsearch(
                settings.store, request_timeout=settings.es_timeout, api_key=settings.es_api_key,
                ca_certs=settings.es_ca_certs,
                # Immediate retries for a node that answered "unavailable" or dropped the connection;
                # bulk writes add their own retries with backoff (upsert).
                max_retries=3, retry_on_status=(502, 503, 504), retry_on_timeout=False)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"LOOKALIKE_STORE={public_url(settings.store)!r} cannot be used: {exc}") from None
        return cls(client, settings.store, settings.es_index, num_candidates=settings.es_num_candidates,
                   index_type=settings.es_index_type, m=settings.es_hnsw_m,
                   ef_construction=settings.es_hnsw_ef_construction, wait=settings.es_wait)

    # -- connection ------------------------------------------------------------------------------

    def wait_until_ready(self, timeout: float) -> None:
        """Return once the cluster health is yellow or green; StoreUnavailable after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = self._client.options(request_timeout=max(1.0, min(deadline - time.monotonic(), 10.0)),
                                              max_retries=0).cluster.health()
                if health["status"] in ("green", "yellow"):
                    return
                reason = f"cluster health is {health['status']}"
            except ApiError as exc:
                if exc.meta.status in (401, 403):
                    raise StoreError(f"Elasticsearch at {self.url} refused us ({_reason(exc)}): check "
                                     "LOOKALIKE_ES_API_KEY or the user in LOOKALIKE_STORE") from None
                reason = _reason(exc)
            except TransportError as exc:
                reason = _reason(exc)
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(f"Elasticsearch at {self.url} is not ready after {timeout:g} s ({reason}); "
                                       "start it (docker compose up -d elasticsearch) or fix LOOKALIKE_STORE")
            time.sleep(min(1.0, left))

    @contextmanager
    def _call(self, what: str):
        """Map the client's errors to the store's: unreachable -> StoreUnavailable, refused -> StoreError."""
        try:
            yield
        except helpers.BulkIndexError as exc:
            first = next(iter(exc.errors[0].values()), {}) if exc.errors else {}
            error = first.get("error") or {}
            if first.get("status") in _UNAVAILABLE:
                raise StoreUnavailable(f"Elasticsearch at {self.url} could not {what}: "
                                       f"{error.get('type', '')} {error.get('reason', '')}".strip()) from None
            raise StoreError(f"Elasticsearch refused to {what}: {len(exc.errors)} failed, first: "
                             f"{error.get('type', '')}: {error.get('reason', first)}") from None
        except ApiError as exc:
            if exc.meta.status in _UNAVAILABLE:
                raise StoreUnavailable(f"Elasticsearch at {self.url} could not {what}: {_reason(exc)}") from None
            raise StoreError(f"Elasticsearch refused to {what}: {_reason(exc)}") from None
        except TransportError as exc:
            kind = "is unreachable" if isinstance(exc, TransportConnectionError) else "failed"
            raise StoreUnavailable(f"Elasticsearch at {self.url} {kind} ({what}): {_reason(exc)}") from None

    def ping(self) -> bool:
        try:
            health = self._client.options(request_timeout=5, max_retries=0).cluster.health()
            return health["status"] in ("green", "yellow")
        except Exception:  # noqa: BLE001 -- ping never raises, whatever went wrong
            return False

    def location(self) -> str:
        return f"{self.url} index {self.alias}"

    def close(self) -> None:
        self._client.close()

    # -- which physical index --------------------------------------------------------------------

    def _indices(self, name: str) -> dict[str, str | None]:
        """{physical index: its descriptor} behind an alias or index name; {} when there is none."""
        with self._call("read the index mapping"):
            try:
                mappings = self._client.indices.get_mapping(index=name)
            except NotFoundError:
                return {}
        return {index: (body.get("mappings", {}).get("_meta") or {}).get("descriptor")
                for index, body in mappings.items()}

    def _live(self) -> tuple[str, str] | None:
        """(physical index, descriptor) behind the alias, or None before anything was written."""
        indices = self._indices(self.alias)
        if not indices:
            return None
        if len(indices) > 1 or None in indices.values():
            raise StoreError(f"{self.alias!r} on {self.url} is not an index this program created "
                             f"(it resolves to {', '.join(sorted(indices))}); set LOOKALIKE_ES_INDEX to another name")
        return next(iter(indices.items()))

    def _target(self) -> tuple[str, str] | None:
        """Where reads and writes go: the staged index while rebuilding, else the live one."""
        if self._staged is None:
            return self._live()
        name = index_name(self.alias, self._staged)
        return (name, self._staged) if self._indices(name) else None

    def _create(self, descriptor: str, dims: int) -> str:
        name = index_name(self.alias, descriptor)
        with self._call(f"create index {name}"):
            try:
                self._client.indices.create(index=name, **index_body(descriptor, dims, **self.index_options))
            except ApiError as exc:
                if _error_type(exc) != "resource_already_exists_exception":
                    raise
                # another indexer created it a moment ago: use it
        return name

    def _point_alias(self, new_index: str, old_indices: Iterable[str] = ()) -> None:
        with self._call(f"point alias {self.alias} at {new_index}"):
            self._client.indices.update_aliases(actions=swap_actions(self.alias, old_indices, new_index))

    def descriptor(self) -> str | None:
        target = self._target()
        return target[1] if target else None

    # -- rebuilding with another descriptor ------------------------------------------------------

    def stage(self, descriptor: str) -> str:
        """From now on this store object reads and writes the index for `descriptor` beside the live one
        (created with the first documents); the alias does not move until promote(). Returns its name."""
        self._staged = descriptor
        return index_name(self.alias, descriptor)

    def promote(self) -> str:
        """Point the alias at the staged index in one atomic _aliases call; the old index is kept (for
        going back) until you delete it. Returns the name of the index now live."""
        if self._staged is None:
            raise StoreError("nothing is staged: call stage(descriptor) and index first")
        name = index_name(self.alias, self._staged)
        if not self._indices(name):
            raise StoreError(f"{name} does not exist yet: index some files with the new descriptor first")
        live = self._live()
        self._point_alias(name, [live[0]] if live else [])
        self._staged = None
        return name

    # -- writing ---------------------------------------------------------------------------------

    def _write_target(self, descriptor: str, dims: int) -> str:
        target = self._target()
        if target is None:
            name = self._create(descriptor, dims)
            if self._staged is None:
                self._point_alias(name)
            elif self._staged != descriptor:
                raise DescriptorMismatch(f"the staged index is for {self._staged} vectors, not {descriptor}")
            return name
        name, bound = target
        if bound == descriptor:
            return name
        if self._staged is None and self.count() == 0:
            # an empty store takes whatever descriptor comes first (as the embedded store does)
            new = self._create(descriptor, dims)
            self._point_alias(new, [name])
            with self._call(f"delete the empty index {name}"):
                self._client.indices.delete(index=name, ignore_unavailable=True)
            return new
        raise DescriptorMismatch(
            f"{self.alias} holds {bound} vectors; these are {descriptor} (rebuild into a new index and "
            "promote it: docs/elasticsearch.md, 'Changing the descriptor')")

    def upsert(self, documents: Sequence[Document]) -> int:
        """Not atomic across documents as the embedded store is: a bulk request that fails half-way keeps
        the documents written before the failure (upsert by id makes the retry harmless)."""
        if not documents:
            return 0
        first = documents[0]
        for doc in documents:
            if doc.descriptor != first.descriptor:
                raise DescriptorMismatch(f"one batch holds {first.descriptor} and {doc.descriptor} vectors")
        name = self._write_target(first.descriptor, len(first.vector))
        actions = ({"_op_type": "index", "_index": name, "_id": doc.id, "_source": document_source(doc)}
                   for doc in documents)
        written = 0
        with self._call(f"write {len(documents)} documents"):
            for ok, _ in helpers.streaming_bulk(self._client, actions, chunk_size=500, max_retries=5,
                                                initial_backoff=1, max_backoff=30,
                                                retry_on_status=_UNAVAILABLE, refresh="wait_for"):
                written += ok
        return written

    def delete(self, doc_ids: Iterable[str]) -> int:
        doc_ids = list(dict.fromkeys(doc_ids))
        target = self._target() if doc_ids else None
        if target is None:
            return 0
        actions = ({"_op_type": "delete", "_index": target[0], "_id": doc_id} for doc_id in doc_ids)
        removed = 0
        with self._call(f"delete {len(doc_ids)} documents"):
            for ok, item in helpers.streaming_bulk(self._client, actions, chunk_size=1000, max_retries=5,
                                                   initial_backoff=1, max_backoff=30, ignore_status=(404,),
                                                   retry_on_status=_UNAVAILABLE, refresh="wait_for"):
                removed += ok and item.get("delete", {}).get("result") == "deleted"
        return removed

    # -- reading ---------------------------------------------------------------------------------

    def _search(self, index: str, what: str, **body) -> dict:
        with self._call(what):
            return self._client.search(index=index, **body).body

    def get(self, doc_id: str, with_vector: bool = False) -> Document | None:
        target = self._target()
        if target is None:
            return None
        hits = self._search(target[0], "read a document", **ids_body([doc_id], with_vector))["hits"]["hits"]
        return _hit_document(hits[0], vector=with_vector) if hits else None

    def knn(self, vector, *, descriptor, tags=(), offset=0, limit=10, exclude=(), min_score=None) -> Page:
        target = self._target()
        if target is None:
            return Page([], 0)
        name, bound = target
        if descriptor != bound:
            raise DescriptorMismatch(f"the query is a {descriptor} vector; this index holds {bound} vectors")
        # kNN has no offset: ask for the best offset + limit and keep the last `limit` of them.
        k = min(offset + limit, MAX_WINDOW)
        if k <= offset:
            return Page([], 0)
        body = knn_body(vector, k=k, num_candidates=self.num_candidates, tags=tags, exclude=exclude,
                        min_score=min_score)
        result = self._search(name, "search by vector", **body)["hits"]
        hits = [Hit(_hit_document(h), score_to_cosine(h["_score"])) for h in result["hits"][offset:k]]
        return Page(hits, result["total"]["value"])

    def keyword(self, text, *, tags=(), offset=0, limit=10) -> Page:
        target = self._target()
        # from + size may not pass index.max_result_window; deeper pages are empty
        size = max(0, min(limit, MAX_WINDOW - offset))
        body = keyword_body(text, tags=tags, offset=offset if size else 0, limit=size)
        if target is None or body is None:
            return Page([], 0)
        result = self._search(target[0], "search by keywords", **body)["hits"]
        hits = [Hit(_hit_document(h), float(h["_score"]) if h.get("_score") is not None else 0.0)
                for h in result["hits"]]
        return Page(hits, result["total"]["value"])

    def count(self) -> int:
        target = self._target()
        if target is None:
            return 0
        with self._call("count documents"):
            return int(self._client.count(index=target[0])["count"])

    def entries(self) -> Iterator[Entry]:
        target = self._target()
        if target is None:
            return
        with self._call("list documents"):
            for hit in helpers.scan(self._client, index=target[0], query={"query": {"match_all": {}}},
                                    _source=ENTRY_FIELDS, size=1000, scroll="5m"):
                src = hit["_source"]
                yield Entry(hit["_id"], src["path"], src["content_hash"], src["bytes"],
                            src.get("modified_at", 0.0), tuple(src.get("tags") or ()))

    def find_by_hash(self, content_hashes):
        hashes = list(dict.fromkeys(content_hashes))
        target = self._target() if hashes else None
        out: dict[str, np.ndarray] = {}
        if target is None:
            return out
        for start in range(0, len(hashes), 500):
            result = self._search(target[0], "look up content hashes", **hash_body(hashes[start:start + 500]))
            for hit in result["hits"]["hits"]:
                values = (hit.get("fields") or {}).get(VECTOR)
                if values is not None:
                    out[hit["_source"]["content_hash"]] = np.asarray(values, dtype=np.float32).reshape(-1)
        return out

    def vectors(self, doc_ids):
        ids = list(dict.fromkeys(doc_ids))
        target = self._target() if ids else None
        out: dict[str, np.ndarray] = {}
        if target is None:
            return out
        for start in range(0, len(ids), 500):
            result = self._search(target[0], "read vectors", **ids_body(ids[start:start + 500], with_vector=True))
            for hit in result["hits"]["hits"]:
                values = (hit.get("fields") or {}).get(VECTOR)
                if values is not None:
                    out[hit["_id"]] = np.asarray(values, dtype=np.float32).reshape(-1)
        return out

    def tag_counts(self, limit: int = 50) -> list[tuple[str, int]]:
        target = self._target()
        if target is None:
            return []
        result = self._search(target[0], "count tags", **tag_counts_body(limit))
        return [(b["key"], b["doc_count"]) for b in result["aggregations"]["tags"]["buckets"]]

    def stats(self) -> dict:
        target = self._target()
        return {**super().stats(), "index": target[0] if target else None}
