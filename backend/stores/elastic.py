"""The Elasticsearch store: an alias in front of one versioned index per descriptor; approximate kNN.

Layout (docs/elasticsearch.md has the reasoning and the documentation each choice was checked against):
- Documents live in a physical index `<alias>-v1-<sha256(descriptor)[:10]>`; the alias (LOOKALIKE_ES_INDEX)
  points at the live one. The descriptor is in the index mapping's `_meta`, so vectors of another
  descriptor are refused. A rebuild for a new descriptor fills its own index beside the live one
  (`stage`), then `promote` moves the alias in one atomic `_aliases` call.
- The vector is a `dense_vector` with `dot_product` similarity (our vectors are L2-normalised).
  Elasticsearch scores it as (1 + dot) / 2; we report 2 * _score - 1, so both backends give cosine
  similarity in [-1, 1]. The kNN `similarity` option takes the raw dot product, so min_score maps 1:1.
- File names and tags are split into words and accent-folded in Python by `search_words`, the function the
  embedded store uses, and indexed with the server's built-in `whitespace` analyzer: both backends match
  the same words, and the mapping needs nothing outside the server itself (docs/elasticsearch.md).
- Reads go to the alias; which physical index and descriptor it holds is remembered and read again only
  when a response comes from another index (someone promoted a rebuild) or the index is gone.
- When upsert or delete returns, the change is searchable: one bulk request waits for the refresh
  (refresh=wait_for); a larger write goes in requests of WRITE_CHUNK, WRITERS at a time, then one refresh.
  Documents the cluster rejects for load (429) are retried with backoff; other rejections raise.
- Vectors go out as float32: the store's client (orjson) writes each value in the fewest digits that read
  back as the same float32, about half the JSON (and of the stored _source) of Python's 17-digit floats.
- Every call that cannot reach the cluster, or that it does not answer within LOOKALIKE_ES_TIMEOUT, raises
  StoreUnavailable (the API answers 503); nothing remembers the failure, so the next call after the
  cluster is back simply works.

The request bodies are built by the pure functions below, pinned by tests/test_elastic.py.
"""
from __future__ import annotations

import base64
import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers
from elasticsearch.serializer import OrjsonSerializer

from ..labels import labels_for, matching_label, query_term
from .base import (ELASTICSEARCH, FACETS, SORTS, DescriptorMismatch, Document, Entry, Hit, Label, NearLink, Page,
                   Store, StoreError, StoreUnavailable, check_vectors, normalise_tags, search_words)
from .filters import NONE, Filters, combined, normalise_camera

SCHEMA = 2                        # bump when the mapping changes incompatibly: the index name carries it
# Bump when fields are added to the mapping: an index of an older revision gets them (put mapping) when opened,
# and its documents get values on the next indexing run. 1: near-duplicate links; 2: the picture's metadata
# (ADDED_PROPERTIES); 3: content labels (LABEL_MAPPING); 4: the links in doc values (near_links).
REVISION = 4
VECTOR = "vector"
WRITE_CHUNK = 500                 # documents per bulk request
WRITERS = 4                       # bulk requests of one upsert in flight at once
MAX_WINDOW = 10_000               # index.max_result_window, and the ceiling for k and num_candidates
META_FIELDS = ["filename", "path", "tags", "width", "height", "bytes", "content_hash", "descriptor",
               "indexed_at", "modified_at"]
ENTRY_FIELDS = ["path", "content_hash", "bytes", "modified_at", "tags", "linked", "meta_version", "labels"]
WORD_FIELDS = ["filename_words^2", "tag_words"]
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# Vector index types that keep the float vectors in the graph's scoring: nothing to rescore.
FLOAT_INDEX_TYPES = ("hnsw", "flat")
# Statuses that mean "the cluster cannot serve this now", as opposed to "this request is wrong".
_UNAVAILABLE = (429, 502, 503, 504)


# -- request bodies (pure) -------------------------------------------------------------------------

def index_name(alias: str, descriptor: str, index_type: str = "hnsw", m: int = 16,
               ef_construction: int = 100, shards: int = 1) -> str:
    """The physical index for one descriptor and one set of vector index options: a rebuild after
    changing LOOKALIKE_ES_INDEX_TYPE (or m, ef_construction, or the number of shards, which an index cannot
    change) fills a new index beside the live one."""
    key = f"{descriptor}|{index_type}|{m}|{ef_construction}" + (f"|{shards}" if shards != 1 else "")
    return f"{alias}-v{SCHEMA}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def index_body(descriptor: str, dims: int, index_type: str = "hnsw", m: int = 16,
               ef_construction: int = 100) -> dict:
    """Settings and mappings of a physical index holding `dims`-dimensional vectors of one descriptor.
    Only what the server itself provides: no analysis module is needed."""
    # the words come already split and folded (search_words); whitespace only separates them again
    words = {"type": "text", "analyzer": "whitespace", "index_prefixes": {"min_chars": 1, "max_chars": 10}}
    return {
        "mappings": {
            "dynamic": "strict",
            "_meta": {"descriptor": descriptor, "dims": dims, "schema": SCHEMA, "revision": REVISION},
            "properties": {
                VECTOR: {"type": "dense_vector", "dims": dims, "index": True, "similarity": "dot_product",
                         "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction}},
                "filename": {"type": "keyword"},
                "filename_words": words,
                "path": {"type": "keyword"},
                "tags": {"type": "keyword"},
                "tag_words": words,
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "bytes": {"type": "long"},
                "content_hash": {"type": "keyword"},
                "descriptor": {"type": "keyword"},
                "indexed_at": {"type": "double"},
                "modified_at": {"type": "double"},
                # near-duplicate links: kept whole in _source, the linked ids searchable (a picture's group),
                # and each link as one "id hash score" value in doc values, which a report reads without
                # loading any document's _source (that holds its vector and signature: some 30 KB)
                "near": {"type": "object", "enabled": False},
                "near_ids": {"type": "keyword"},
                "near_links": {"type": "keyword", "index": False},
                "linked": {"type": "boolean"},
                "signature": {"type": "binary"},       # near_duplicates.signature, base64 in _source
                **ADDED_PROPERTIES,
                **LABEL_MAPPING,
            },
        },
    }


# The picture's metadata (REVISION 2): an index made before gains these fields when opened (_add_fields), with
# no rebuild; until the next index run fills them, its documents simply match no filter on them. `taken` is a
# keyword: the local time "YYYY-MM-DDTHH:MM:SS[+HH:MM]" sorts and compares as text, and stays the camera's
# wall-clock time (a date field would move it to UTC). camera_key and make_key are what camera filters compare
# (normalised).
ADDED_PROPERTIES: dict[str, dict[str, Any]] = {
    "taken": {"type": "keyword"},
    "taken_year": {"type": "integer"},
    "camera": {"type": "keyword"},
    "camera_make": {"type": "keyword", "index": False},
    "camera_model": {"type": "keyword", "index": False},
    "camera_key": {"type": "keyword"},
    "make_key": {"type": "keyword"},
    "file_type": {"type": "keyword"},
    "folder": {"type": "keyword"},
    "meta_version": {"type": "integer"},
}
# Content labels (backend/labels.py): one nested object per label, so that a query for the labels a word
# names scores a document by the confidence of the most confident of them.
LABEL_MAPPING = {"labels": {"type": "nested", "properties": {"name": {"type": "keyword"},
                                                             "confidence": {"type": "float"}}}}
SOURCE_EXCLUDES = [VECTOR, "signature"]


def replica_settings(replicas: str) -> dict:
    """LOOKALIKE_ES_REPLICAS as index settings: a fixed number, or a range that follows the cluster's size."""
    if "-" in replicas:
        return {"auto_expand_replicas": replicas}
    return {"auto_expand_replicas": "false", "number_of_replicas": int(replicas)}


def shard_settings(shards: int, replicas: str) -> dict:
    """The settings a new index is created with (LOOKALIKE_ES_SHARDS, LOOKALIKE_ES_REPLICAS)."""
    return {"number_of_shards": shards, **replica_settings(replicas)}


def document_source(doc: Document) -> dict:
    """The document as sent (its id is the Elasticsearch _id). The vector stays a float32 array: the
    store's client (orjson) writes each value with the fewest digits that read back as the same float32."""
    tags = normalise_tags(doc.tags)
    camera = doc.camera
    vector = np.ascontiguousarray(doc.vector, dtype=np.float32)
    return {VECTOR: vector, "filename": doc.filename,
            "filename_words": " ".join(search_words(doc.filename)), "path": doc.path, "tags": tags,
            "tag_words": [" ".join(search_words(tag)) for tag in tags], "width": int(doc.width),
            "height": int(doc.height), "bytes": int(doc.bytes), "content_hash": doc.content_hash,
            "descriptor": doc.descriptor, "indexed_at": float(doc.indexed_at),
            "modified_at": float(doc.modified_at), "linked": doc.near is not None,
            "near": [{"id": link.id, "hash": link.content_hash, "score": float(link.score)} for link in doc.near or ()],
            "near_ids": [link.id for link in doc.near or ()],
            "near_links": [f"{link.id} {link.content_hash} {float(link.score)!r}" for link in doc.near or ()],
            "signature": None if doc.signature is None else base64.b64encode(doc.signature).decode("ascii"),
            "taken": doc.taken, "taken_year": int(doc.taken[:4]) if doc.taken else None, "camera": camera,
            "camera_make": doc.camera_make, "camera_model": doc.camera_model,
            "camera_key": normalise_camera(camera) if camera else None,
            "make_key": normalise_camera(doc.camera_make) if doc.camera_make else None,
            "file_type": doc.file_type, "folder": doc.folder, "meta_version": int(doc.meta_version),
            **({} if doc.labels is None else {
                "labels": [{"name": label.name, "confidence": label.confidence} for label in doc.labels]})}


def filter_clauses(filters: Filters) -> list[dict]:
    """Filters as bool `filter` clauses (each must hold), the same conditions as the embedded store's SQL."""
    out: list[dict] = [{"term": {"tags": tag}} for tag in filters.tags]
    low, high = filters.taken_range()
    if low or high:
        out.append({"range": {"taken": {op: bound for op, bound in (("gte", low), ("lt", high)) if bound}}})
    if filters.cameras:
        out.append(_any([{"terms": {"camera_key": list(filters.cameras)}},
                         {"terms": {"make_key": list(filters.cameras)}}]))
    if filters.folders:
        out.append({"exists": {"field": "folder"}} if filters.everywhere else
                   _any([clause for folder in filters.folders
                         for clause in ({"term": {"folder": folder}}, {"prefix": {"folder": folder + "/"}})]))
    if filters.types:
        out.append({"terms": {"file_type": list(filters.types)}})
    for side, least in (("width", filters.min_width), ("height", filters.min_height)):
        if least:
            out.append({"range": {side: {"gte": least}}})
    return out


def _any(clauses: list[dict]) -> dict:
    return {"bool": {"should": clauses, "minimum_should_match": 1}}


def knn_body(vector, *, k: int, num_candidates: int, tags: Sequence[str] = (), exclude: Sequence[str] = (),
             min_score: float | None = None, filters: Filters | None = None, oversample: float = 0.0) -> dict:
    """The k nearest documents, best first. Filters and excluded ids are a filter *inside* knn, so they are
    applied during the graph search (k matching documents come back), not after it. `oversample` (> 0, on
    a quantized index): each shard gathers oversample x k hits on the quantized vectors and ranks and scores
    them again by the float vectors (`rescore_vector`), so the scores are exact cosines."""
    knn: dict = {"field": VECTOR, "query_vector": np.asarray(vector, dtype=np.float32).tolist(), "k": k,
                 "num_candidates": min(MAX_WINDOW, max(num_candidates, k))}
    if oversample > 0:
        knn["rescore_vector"] = {"oversample": float(oversample)}
    conditions: dict = {}
    clauses = filter_clauses(combined(filters, tags))
    if clauses:
        conditions["filter"] = clauses
    if exclude:
        conditions["must_not"] = [{"ids": {"values": list(exclude)}}]
    if conditions:
        knn["filter"] = {"bool": conditions}
    if min_score is not None:
        knn["similarity"] = float(min_score)   # the raw dot product (= cosine here), not the _score
    return {"knn": knn, "size": k, "_source": {"excludes": SOURCE_EXCLUDES}}


def keyword_body(text: str, *, tags: Sequence[str] = (), offset: int = 0, limit: int = 10,
                 filters: Filters | None = None) -> dict | None:
    """Every word must match the file name or a tag, as a whole word or a word prefix; None when there
    is nothing to search for. Each word is its own multi_match (bool_prefix: a one-term prefix query on
    each field) so that different words may match different fields, as in the embedded store."""
    words = search_words(text)
    clauses = filter_clauses(combined(filters, tags))
    if not words and not clauses:
        return None
    body: dict = {"from": offset, "size": limit, "track_total_hits": True, "_source": {"excludes": SOURCE_EXCLUDES}}
    if words:
        body["query"] = {"bool": {
            "must": [{"multi_match": {"query": word, "type": "bool_prefix", "fields": WORD_FIELDS}}
                     for word in words],
            # whole words rank above prefixes
            "should": [{"multi_match": {"query": " ".join(words), "fields": WORD_FIELDS}}],
            "filter": clauses}}
        body["sort"] = ["_score", {"filename": "asc"}, {"path": "asc"}]
    else:
        body["query"] = {"bool": {"filter": clauses}}
        body["sort"] = [{"filename": "asc"}, {"path": "asc"}]
    return body


# browse orders, as the embedded store's (_ORDER there); unmapped_type: an index made before `taken` existed
_SORTS = {"taken": [{"taken": {"order": "desc", "missing": "_last", "unmapped_type": "keyword"}},
                    {"indexed_at": "desc"}, {"path": "asc"}],
          "indexed": [{"indexed_at": "desc"}, {"path": "asc"}],
          "name": [{"filename": "asc"}, {"path": "asc"}]}


def browse_body(filters: Filters | None, *, sort: str, offset: int, limit: int) -> dict:
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)} (got {sort!r})")
    return {"query": {"bool": {"filter": filter_clauses(filters or NONE)}}, "sort": _SORTS[sort], "from": offset,
            "size": limit, "track_total_hits": True, "_source": {"excludes": [VECTOR]}}


_FACET_FIELDS = {"tags": "tags", "camera": "camera", "folder": "folder", "year": "taken_year"}


def facets_body(filters: Filters | None, limit: int) -> dict:
    order = [{"_count": "desc"}, {"_key": "asc"}]
    aggs: dict = {name: {"terms": {"field": _FACET_FIELDS[name], "size": limit, "order": order}}
                  for name in FACETS if name != "labels"}
    # content labels are nested objects (one per label): counted inside them, each document once per label
    aggs["labels"] = {"nested": {"path": "labels"},
                      "aggs": {"names": {"terms": {"field": "labels.name", "size": limit, "order": order}}}}
    return {"size": 0, "query": {"bool": {"filter": filter_clauses(filters or NONE)}}, "aggs": aggs}


def label_body(text: str, *, filters: Filters | None = None, offset: int = 0, limit: int = 10) -> dict | None:
    """Documents with a content label the words name (labels.py), most confident first, leaving out those
    whose file name or tags match the words (keyword_body finds them first); None without words."""
    term = query_term(text)
    text_query = keyword_body(text)
    if not term or text_query is None:
        return None
    named = labels_for(term)
    if not named:
        return None
    by_confidence = {"function_score": {"query": {"terms": {"labels.name": list(named)}}, "boost_mode": "replace",
                                        "field_value_factor": {"field": "labels.confidence"}}}
    return {"from": offset, "size": limit, "track_total_hits": True, "_source": {"excludes": SOURCE_EXCLUDES},
            "query": {"bool": {"must": [{"nested": {"path": "labels", "score_mode": "max", "query": by_confidence}}],
                               "filter": filter_clauses(filters or NONE),
                               "must_not": [{"bool": {"must": text_query["query"]["bool"]["must"]}}]}},
            "sort": ["_score", {"filename": "asc"}, {"path": "asc"}]}


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


EXACT_BUCKETS = 50_000       # shared contents one answer may list (under search.max_buckets, 65,536)


def exact_hashes_body(partition: int, partitions: int) -> dict:
    """Content hashes held by two or more documents, one partition of them."""
    return {"size": 0, "aggs": {"hashes": {"terms": {
        "field": "content_hash", "min_doc_count": 2, "size": EXACT_BUCKETS,
        "include": {"partition": partition, "num_partitions": partitions}}}}}


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


def _stored_vector(hit: dict) -> np.ndarray | None:
    values = (hit.get("fields") or {}).get(VECTOR)
    return None if values is None else np.asarray(values, dtype=np.float32).reshape(-1)


def _hit_document(hit: dict, vector: bool = False) -> Document:
    src = hit["_source"]
    vec = _stored_vector(hit) if vector else None
    return Document(id=hit["_id"], vector=vec, filename=src["filename"], path=src["path"],
                    tags=list(src.get("tags") or []), width=src["width"], height=src["height"],
                    bytes=src["bytes"], content_hash=src["content_hash"], descriptor=src["descriptor"],
                    indexed_at=src["indexed_at"], modified_at=src.get("modified_at", 0.0),
                    near=_links(src) if src.get("linked") else None,
                    signature=base64.b64decode(src["signature"]) if src.get("signature") else None,
                    taken=src.get("taken"), camera_make=src.get("camera_make"), camera_model=src.get("camera_model"),
                    file_type=src.get("file_type"), folder=src.get("folder"), meta_version=src.get("meta_version") or 0,
                    labels=_labels(src.get("labels")))


def _links(src: dict) -> list[NearLink]:
    return [NearLink(link["id"], link["hash"], float(link["score"])) for link in src.get("near") or ()]


def _labels(stored: list[dict] | None) -> list[Label] | None:
    return None if stored is None else [Label(label["name"], float(label["confidence"])) for label in stored]


def links_query(touching: Sequence[str] | None) -> dict:
    """The documents that hold links (or, with `touching`, links from or to those ids)."""
    if touching is None:
        return {"exists": {"field": "near_ids"}}
    return {"bool": {"should": [{"ids": {"values": list(touching)}}, {"terms": {"near_ids": list(touching)}}],
                     "minimum_should_match": 1, "filter": [{"exists": {"field": "near_ids"}}]}}


def _link_values(values: list[str]) -> list[NearLink]:
    """Links from their near_links doc values ("id hash score"; ids are hex, the score a float)."""
    links = []
    for value in values:
        doc_id, rest = value.split(" ", 1)
        content, score = rest.rsplit(" ", 1)
        links.append(NearLink(doc_id, content, float(score)))
    return links


def _failed_shards(answer: dict) -> int:
    """Shards that did not answer a search, count or each search of an _msearch (0: a whole answer)."""
    answers = answer.get("responses") or [answer]
    return sum(int((one.get("_shards") or {}).get("failed") or 0) for one in answers if isinstance(one, dict))


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
    backend = ELASTICSEARCH
    supports_rebuild = True

    def __init__(self, client: Elasticsearch, url: str, alias: str = "lookalike", *, num_candidates: int = 200,
                 index_type: str = "hnsw", m: int = 16, ef_construction: int = 100, wait: float | None = 60.0,
                 timeout: float = 30.0, shards: int = 1, replicas: str = "0-1", oversample: float = 0.0):
        if not _INDEX_NAME.match(alias):
            raise StoreError(f"LOOKALIKE_ES_INDEX={alias!r} is not a valid index name: use lower-case "
                             "letters, digits, '.', '_' and '-', starting with a letter or digit")
        self._client = client
        self.url = ",".join(public_url(one) for one in url.split(","))
        # Quick checks (readiness, health) go to each node at most once: with several nodes, one that is down
        # or stalled must not answer for the cluster; with one, a failure is final at once.
        self._quick_retries = len(url.split(",")) - 1
        self.alias = alias
        self.shards, self.replicas = shards, replicas
        self.num_candidates = num_candidates
        self.index_options: dict[str, Any] = {"index_type": index_type, "m": m, "ef_construction": ef_construction}
        self.oversample = oversample
        self.timeout = timeout
        self._staged: str | None = None
        self._known: tuple[str, str] | None = None   # (physical index, descriptor) last read from the mapping
        self.mapping_reads = 0                        # how often that was needed (benchmarks.elastic counts it)
        self._vector_types: dict[str, str] = {}      # physical index: its vectors' index type, as read
        if wait is not None:   # None: do not wait (the caller knows the cluster is, or was, up)
            self.wait_until_ready(wait)

    @classmethod
    def from_settings(cls, settings) -> "ElasticStore":
        urls = settings.es_urls
        try:
            # The transport keeps a pool of the given nodes and sends each request to the next one round
            # the pool. A node that refuses the connection, drops it, answers 502/503/504 or (with several
            # nodes) does not answer within the timeout is marked dead for a back-off period and the
            # request goes again to another node; with one node a timeout is final, so a stalled cluster
            # costs one timeout, not four. No sniffing: the nodes' publish addresses are often not
            # reachable from here (containers, NAT), so the pool is exactly the URLs given.
            # Bulk writes add their own retries with backoff (upsert).
            client = Elasticsearch(
                urls, request_timeout=settings.es_timeout, api_key=settings.es_api_key,
                ca_certs=settings.es_ca_certs, serializer=OrjsonSerializer(), max_retries=max(3, len(urls)),
                retry_on_status=(502, 503, 504), retry_on_timeout=len(urls) > 1)
        except (ValueError, TypeError) as exc:
            shown = ",".join(public_url(url) for url in urls)
            raise StoreError(f"LOOKALIKE_STORE={shown!r} cannot be used: {exc}") from None
        return cls(client, settings.store, settings.es_index, num_candidates=settings.es_num_candidates,
                   index_type=settings.es_index_type, m=settings.es_hnsw_m,
                   ef_construction=settings.es_hnsw_ef_construction, wait=settings.es_wait,
                   timeout=settings.es_timeout, shards=settings.es_shards, replicas=settings.es_replicas,
                   oversample=settings.es_rescore_oversample)

    # -- connection ------------------------------------------------------------------------------

    def _probe(self, timeout: float) -> str | None:
        """None when our index (or the cluster, before the index exists) answers a search; else why not.
        Asks only for our own index, never the whole cluster's health: a key restricted to our indices may
        do it, and another index's trouble is not ours (docs/elasticsearch.md, 'Privileges')."""
        client = self._client.options(request_timeout=max(1.0, timeout), max_retries=self._quick_retries)
        try:
            client.search(index=self.alias, size=0, track_total_hits=False)
            return None
        except NotFoundError:
            return None        # nothing indexed yet: the cluster answered, the first write creates the index
        except ApiError as exc:
            if exc.meta.status in (401, 403):
                raise StoreError(f"Elasticsearch at {self.url} refused us ({_reason(exc)}): check "
                                 "LOOKALIKE_ES_API_KEY or the user in LOOKALIKE_STORE") from None
            return _reason(exc)
        except TransportError as exc:
            return _reason(exc)

    def wait_until_ready(self, timeout: float) -> None:
        """Return once our index can be searched; StoreUnavailable after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            reason = self._probe(min(deadline - time.monotonic(), 10.0))
            if reason is None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(f"Elasticsearch at {self.url} is not ready after {timeout:g} s ({reason}); "
                                       "start it (docker compose up -d elasticsearch) or fix LOOKALIKE_STORE")
            time.sleep(min(1.0, left))

    @contextmanager
    def _call(self, what: str):
        """Map the client's errors to the store's: unreachable or too slow -> StoreUnavailable, refused ->
        StoreError."""
        try:
            yield
        except ApiError as exc:
            if exc.meta.status in _UNAVAILABLE:
                raise StoreUnavailable(f"Elasticsearch at {self.url} could not {what}: {_reason(exc)}") from None
            raise StoreError(f"Elasticsearch refused to {what}: {_reason(exc)}") from None
        except TransportError as exc:
            kind = "is unreachable" if isinstance(exc, TransportConnectionError) else "did not answer"
            raise StoreUnavailable(f"Elasticsearch at {self.url} {kind} ({what}): {_reason(exc)}") from None
        except helpers.ScanError as exc:
            raise StoreUnavailable(f"Elasticsearch at {self.url} could not {what}: {exc}") from None

    def ping(self) -> bool:
        try:
            return self._probe(5.0) is None
        except Exception:  # noqa: BLE001 -- ping never raises, whatever went wrong
            return False

    def degraded(self) -> str | None:
        """Our index's health when it is not green. Searches still answer while it is yellow (every shard
        has a copy somewhere): a replica is missing, e.g. a node is down or one node holds a replica setting
        meant for a cluster. Needs the `monitor` cluster privilege; without it, nothing is said. Before the
        index exists nothing is asked: the health of a missing index waits for it to appear (30 s)."""
        try:
            if self._target() is None:
                return None
            health = self._client.options(request_timeout=5.0, max_retries=self._quick_retries).cluster.health(
                index=self.alias)
        except (ApiError, TransportError, StoreError):
            return None
        status = health.get("status")
        if status in (None, "green"):
            return None
        unassigned = health.get("unassigned_shards", 0)
        return (f"Elasticsearch index {self.alias} is {status}: {unassigned} shard copies unassigned, "
                f"{health.get('number_of_data_nodes')} data nodes; searches answer from the copies left")

    def location(self) -> str:
        return f"{self.url} index {self.alias}"

    def close(self) -> None:
        self._client.close()

    # -- which physical index --------------------------------------------------------------------

    def _indices(self, name: str) -> dict[str, dict]:
        """{physical index: its _meta} behind an alias or index name; {} when there is none."""
        self.mapping_reads += 1
        with self._call("read the index mapping"):
            try:
                mappings = self._client.indices.get_mapping(index=name)
            except NotFoundError:
                return {}
        for index, body in mappings.items():
            options = body.get("mappings", {}).get("properties", {}).get(VECTOR, {}).get("index_options") or {}
            self._vector_types[index] = options.get("type", "")
        return {index: body.get("mappings", {}).get("_meta") or {} for index, body in mappings.items()}

    def _live(self) -> tuple[str, str] | None:
        """(physical index, descriptor) behind the alias, read now; None before anything was written."""
        indices = self._indices(self.alias)
        if not indices:
            return None
        if len(indices) > 1 or any("descriptor" not in meta for meta in indices.values()):
            raise StoreError(f"{self.alias!r} on {self.url} is not an index this program created "
                             f"(it resolves to {', '.join(sorted(indices))}); set LOOKALIKE_ES_INDEX to another name")
        index, meta = next(iter(indices.items()))
        if meta.get("schema") != SCHEMA:
            raise StoreError(f"{index} was made by an older version of this program (schema {meta.get('schema')}, "
                             f"now {SCHEMA}): rebuild it with `python -m indexer index PATH --rebuild`")
        if meta.get("revision", 0) < REVISION:
            self._add_fields(index, meta)
        return index, meta["descriptor"]

    def _add_fields(self, index: str, meta: dict) -> None:
        """Give an index of an older revision the fields added since (adding fields is allowed on a live
        index; existing documents get values when next indexed)."""
        body = index_body(meta["descriptor"], int(meta.get("dims") or 0) or 1, **self.index_options)["mappings"]
        properties = {name: spec for name, spec in body["properties"].items() if name != VECTOR}
        with self._call(f"add the new fields to {index}"):
            self._client.indices.put_mapping(index=index, properties=properties,
                                             meta={**meta, "revision": REVISION})

    def _target(self, fresh: bool = False) -> tuple[str, str] | None:
        """Where reads and writes go: the staged index while rebuilding, else the live one. Remembered once
        found; `fresh` reads it again."""
        if self._known is None or fresh:
            if self._staged is None:
                self._known = self._live()
            else:
                name = self.index_for(self._staged)
                self._known = (name, self._staged) if self._indices(name) else None
        return self._known

    def index_for(self, descriptor: str) -> str:
        """The name of the physical index this store creates for `descriptor` with its index options."""
        return index_name(self.alias, descriptor, **self.index_options, shards=self.shards)

    def _read_index(self) -> str:
        """The name searches use: the alias (so a rebuild promoted elsewhere is seen at once) or the staged index."""
        return self.alias if self._staged is None else self.index_for(self._staged)

    def _check_source(self, hits: list[dict]) -> None:
        """A hit from another physical index than the remembered one: the alias moved, read it again."""
        known = self._known
        if known is not None and any(hit.get("_index") not in (None, known[0]) for hit in hits):
            self._target(fresh=True)

    def _create(self, descriptor: str, dims: int, name: str | None = None) -> str:
        """Create the physical index for `descriptor` (named after it unless `name` is given) with the
        configured vector type, shards and replicas."""
        name = name or self.index_for(descriptor)
        with self._call(f"create index {name} ({self.index_options['index_type']}, {dims} dimensions)"):
            body = index_body(descriptor, dims, **self.index_options)
            body.setdefault("settings", {}).update(shard_settings(self.shards, self.replicas))
            try:
                self._client.indices.create(index=name, **body)
            except ApiError as exc:
                if _error_type(exc) != "resource_already_exists_exception":
                    raise
                # another indexer created it a moment ago: use it
        return name

    def _point_alias(self, new_index: str, old_indices: Iterable[str] = ()) -> None:
        with self._call(f"point alias {self.alias} at {new_index}"):
            try:
                self._client.indices.update_aliases(actions=swap_actions(self.alias, old_indices, new_index))
            except ApiError as exc:
                # two indexers creating the store at once: the other one pointed the alias already
                if not old_indices and self._indices(self.alias).keys() == {new_index}:
                    return
                raise exc

    def descriptor(self) -> str | None:
        target = self._target(fresh=True)
        return target[1] if target else None

    # -- rebuilding with another descriptor ------------------------------------------------------

    def stage(self, descriptor: str) -> str:
        """From now on this store object reads and writes the index for `descriptor` beside the live one
        (created with the first documents); the alias does not move until promote(). Returns its name."""
        self._staged, self._known = descriptor, None
        return self.index_for(descriptor)

    def promote(self) -> str:
        """Point the alias at the staged index in one atomic _aliases call; the old index is kept (for
        going back) until you delete it. Returns the name of the index now live."""
        if self._staged is None:
            raise StoreError("nothing is staged: call stage(descriptor) and index first")
        name = self.index_for(self._staged)
        if not self._indices(name):
            raise StoreError(f"{name} does not exist yet: index some files with the new descriptor first")
        with self._call(f"set the replicas of {name}"):
            # the replicas, unlike the shards, can change on a live index: a rebuild applies them
            self._client.indices.put_settings(index=name, settings=replica_settings(self.replicas))
        old = list(self._indices(self.alias))
        self._point_alias(name, old)
        self._staged, self._known = None, None
        return name

    # -- writing ---------------------------------------------------------------------------------

    def _write_target(self, descriptor: str, dims: int) -> str:
        target = self._target() or self._target(fresh=True)
        if target is None:
            name = self._create(descriptor, dims)
            if self._staged is None:
                self._point_alias(name)
            elif self._staged != descriptor:
                raise DescriptorMismatch(f"the staged index is for {self._staged} vectors, not {descriptor}")
            self._known = (name, descriptor)
            return name
        name, bound = target
        if bound != descriptor:
            target = self._target(fresh=True)          # was it promoted elsewhere meanwhile?
            name, bound = target if target else (name, bound)
        if bound == descriptor:
            return name
        if self._staged is None and self.count() == 0:
            # an empty store takes whatever descriptor comes first (as the embedded store does)
            new = self._create(descriptor, dims)
            self._point_alias(new, [name])
            with self._call(f"delete the empty index {name}"):
                self._client.indices.delete(index=name, ignore_unavailable=True)
            self._known = (new, descriptor)
            return new
        raise DescriptorMismatch(
            f"{self.alias} holds {bound} vectors; these are {descriptor} (rebuild into a new index and "
            "promote it: docs/elasticsearch.md, 'Changing the descriptor')")

    def _bulk(self, index: str, actions: Sequence[dict], what: str, chunk_size: int,
              ignore_status=()) -> list[dict]:
        """Send actions in bulk requests of chunk_size. One request waits for the refresh that makes it
        searchable (refresh=wait_for: no segment of its own). Several go up to WRITERS at once without
        waiting, then one refresh makes them all searchable: a large upsert makes one set of segments,
        not one per second of writing (fewer segments to merge, each merge rebuilding HNSW graphs). Either
        way, when this returns the writes are searchable. Items the cluster rejected for load (429) are
        retried with backoff by the client. Returns the items that succeeded; raises for any that still
        failed."""
        chunks = [actions[start:start + chunk_size] for start in range(0, len(actions), chunk_size)]

        def send(chunk: Sequence[dict]) -> list[tuple[bool, dict]]:
            return list(helpers.streaming_bulk(
                self._client, chunk, chunk_size=chunk_size, max_retries=8, initial_backoff=0.5,
                max_backoff=10, retry_on_status=_UNAVAILABLE, raise_on_error=False, ignore_status=ignore_status,
                refresh="wait_for" if len(chunks) == 1 else False, request_timeout=self.timeout))

        done: list[dict] = []
        failed: list[dict] = []
        with self._call(what):
            if len(chunks) > 1:
                with ThreadPoolExecutor(min(WRITERS, len(chunks)), thread_name_prefix="bulk") as pool:
                    sent = [item for part in pool.map(send, chunks) for item in part]
                self._client.options(request_timeout=self.timeout).indices.refresh(index=index)
            else:
                sent = send(actions)
        for ok, item in sent:
            result: dict = next(iter(item.values()), {})
            (done if ok or result.get("status") in ignore_status else failed).append(item)
        if failed:
            first: dict = next(iter(failed[0].values()), {})
            error = first.get("error") or {}
            reason = f"{error.get('type', '')}: {error.get('reason', first)}" if isinstance(error, dict) else error
            if first.get("status") in _UNAVAILABLE:
                raise StoreUnavailable(f"Elasticsearch at {self.url} could not {what}: {len(failed)} still "
                                       f"rejected after retries, first: {reason}")
            raise StoreError(f"Elasticsearch refused to {what}: {len(failed)} failed, first: {reason}")
        return done

    def upsert(self, documents: Sequence[Document]) -> int:
        """Not atomic across documents as the embedded store is: a bulk request that fails half-way keeps
        the documents written before the failure (upsert by id makes the retry harmless)."""
        if not documents:
            return 0
        first = documents[0]
        for doc in documents:
            if doc.descriptor != first.descriptor:
                raise DescriptorMismatch(f"one batch holds {first.descriptor} and {doc.descriptor} vectors")
        check_vectors(documents)   # so every vector is there
        return self.write(self._write_target(first.descriptor, np.asarray(first.vector).shape[0]), documents)

    def write(self, index: str, documents: Sequence[Document]) -> int:
        """Write whole documents (vectors included) into the physical index `index` as they are; searchable
        when this returns."""
        actions = [{"_op_type": "index", "_index": index, "_id": doc.id, "_source": document_source(doc)}
                   for doc in documents]
        return len(self._bulk(index, actions, f"write {len(documents)} documents", chunk_size=WRITE_CHUNK))

    def delete(self, doc_ids: Iterable[str]) -> int:
        doc_ids = list(dict.fromkeys(doc_ids))
        target = self._target(fresh=True) if doc_ids else None
        if target is None:
            return 0
        actions = [{"_op_type": "delete", "_index": target[0], "_id": doc_id} for doc_id in doc_ids]
        done = self._bulk(target[0], actions, f"delete {len(doc_ids)} documents", chunk_size=1000,
                          ignore_status=(404,))
        return sum(item.get("delete", {}).get("result") == "deleted" for item in done)

    # -- reading ---------------------------------------------------------------------------------

    def _whole(self, what: str, send: Callable[[], dict], tries: int = 4) -> dict:
        """send() until its answer comes from every shard. A node lost between a search's query and fetch
        phases (or all copies of a shard briefly unreachable) gives a 200 with only what the other shards
        had: a page silently short. Asked again a moment later, the cluster has routed around that node;
        if every try is partial, StoreUnavailable, never a short page."""
        for attempt in range(tries):
            with self._call(what):
                result = send()
            failed = _failed_shards(result)
            if not failed:
                return result
            if attempt + 1 < tries:
                time.sleep(0.25 * (attempt + 1))
        raise StoreUnavailable(f"Elasticsearch at {self.url} could not {what}: {failed} shards did not answer "
                               f"({tries} tries)")

    def _search(self, what: str, **body) -> dict:
        """A search of our index, answered by every shard; {} hits when the index does not exist yet."""
        def send() -> dict:
            try:
                return self._client.search(index=self._read_index(), **body).body
            except NotFoundError:
                self._known = None
                return {"hits": {"hits": [], "total": {"value": 0}}, "aggregations": {}}
        result = self._whole(what, send)
        self._check_source(result["hits"]["hits"])
        return result

    def get(self, doc_id: str, with_vector: bool = False) -> Document | None:
        hits = self._search("read a document", **ids_body([doc_id], with_vector))["hits"]["hits"]
        return _hit_document(hits[0], vector=with_vector) if hits else None

    def _rescoring(self) -> float:
        """The oversample factor of the kNN query: only quantized vectors are rescored (hnsw keeps floats).
        The type is the searched index's own, which differs from the configured one until a rebuild after
        LOOKALIKE_ES_INDEX_TYPE changed."""
        known = self._known
        index_type = (known and self._vector_types.get(known[0])) or self.index_options["index_type"]
        return self.oversample if index_type not in FLOAT_INDEX_TYPES else 0.0

    def knn(self, vector, *, descriptor, tags=(), offset=0, limit=10, exclude=(), min_score=None,
            filters=None) -> Page:
        # kNN has no offset: ask for the best offset + limit and keep the last `limit` of them.
        k = min(offset + limit, MAX_WINDOW)
        if k <= offset:
            return Page([], 0)
        for attempt in range(2):
            target = self._target()
            if target is None:
                return Page([], 0)
            if descriptor != target[1]:
                raise DescriptorMismatch(f"the query is a {descriptor} vector; this index holds {target[1]} vectors")
            body = knn_body(vector, k=k, num_candidates=self.num_candidates, tags=tags, exclude=exclude,
                            min_score=min_score, filters=filters, oversample=self._rescoring())
            result = self._search("search by vector", **body)["hits"]
            if self._known == target:       # the answer came from the index the query was checked against
                break
        hits = [Hit(_hit_document(h), score_to_cosine(h["_score"])) for h in result["hits"][offset:k]]
        total = result["total"]["value"]
        if min_score is None and len(result["hits"]) >= k:
            # kNN stops counting at k; without a threshold every document passing the filters is a match
            # (as in the embedded store), so count them: a client paging on `total` sees the next page
            total = max(total, self._count("count kNN matches", body["knn"].get("filter")))
        return Page(hits, total)

    def knn_many(self, vectors, *, descriptor, limit, min_score, exclude=()) -> list[list[Hit]]:
        """Every query in one _msearch request (one round trip for an indexer's batch)."""
        vectors = list(vectors)
        target = self._target()
        if target is None or not vectors:
            return [[] for _ in vectors]
        if descriptor != target[1]:
            raise DescriptorMismatch(f"the query is a {descriptor} vector; this index holds {target[1]} vectors")
        searches: list[dict] = []
        for vector in vectors:
            body = knn_body(vector, k=limit, num_candidates=self.num_candidates, exclude=exclude,
                            min_score=min_score, oversample=self._rescoring())
            body["_source"] = {"excludes": [VECTOR]}     # the candidates' signatures are compared (duplicates)
            searches += [{"index": self._read_index()}, body]
        responses = self._whole("search by vectors",
                                lambda: self._client.msearch(searches=searches).body)["responses"]
        out: list[list[Hit]] = []
        for response in responses:
            error = response.get("error")
            if error:
                if isinstance(error, dict) and error.get("type") == "index_not_found_exception":
                    self._known = None
                    out.append([])
                    continue
                raise StoreError(f"Elasticsearch refused to search by vectors: {error}")
            out.append([Hit(_hit_document(h), score_to_cosine(h["_score"])) for h in response["hits"]["hits"]])
        return out

    def keyword(self, text, *, tags=(), offset=0, limit=10, filters=None) -> Page:
        # from + size may not pass index.max_result_window; deeper pages are empty
        size = max(0, min(limit, MAX_WINDOW - offset))
        body = keyword_body(text, tags=tags, offset=offset if size else 0, limit=size, filters=filters)
        if body is None:
            return Page([], 0)
        result = self._search("search by keywords", **body)["hits"]
        hits = [Hit(_hit_document(h), float(h["_score"]) if h.get("_score") is not None else 0.0)
                for h in result["hits"]]
        total = result["total"]["value"]
        # then the documents found by a content label, after every name and tag match
        start = max(0, offset - total)
        wanted = max(0, min(size - len(hits), MAX_WINDOW - start))
        labelled = label_body(text, filters=combined(filters, tags), offset=start if wanted else 0, limit=wanted)
        if labelled is None:
            return Page(hits, total)
        found = self._search("search by content labels", **labelled)["hits"]
        term = query_term(text)
        for h in found["hits"]:
            doc = _hit_document(h)
            label = matching_label(doc.labels, term)
            hits.append(Hit(doc, label.confidence if label else 0.0, label))
        return Page(hits, total + found["total"]["value"])

    def browse(self, filters=None, *, sort="taken", offset=0, limit=10) -> Page:
        size = max(0, min(limit, MAX_WINDOW - offset))
        result = self._search("list documents", **browse_body(filters, sort=sort, offset=offset if size else 0,
                                                             limit=size))["hits"]
        return Page([Hit(_hit_document(h), 0.0) for h in result["hits"]], result["total"]["value"])

    def facets(self, filters=None, limit=50) -> dict[str, list[tuple[str, int]]]:
        aggregations = self._search("count facets", **facets_body(filters, limit)).get("aggregations") or {}
        aggregations["labels"] = (aggregations.get("labels") or {}).get("names") or {}
        return {name: [(str(b["key"]), b["doc_count"]) for b in (aggregations.get(name) or {}).get("buckets", [])]
                for name in FACETS}

    def count(self) -> int:
        return self._count("count documents")

    def _count(self, what: str, query: dict | None = None) -> int:
        def send() -> dict:
            try:
                return self._client.count(index=self._read_index(), query=query).body
            except NotFoundError:
                return {"count": 0}
        return int(self._whole(what, send)["count"])

    def entries(self) -> Iterator[Entry]:
        if self._target(fresh=True) is None:
            return
        # every page of the scroll has the store's timeout, so a stalled cluster cannot hang the listing
        with self._call("list documents"):
            for hit in helpers.scan(self._client.options(request_timeout=self.timeout), index=self._read_index(),
                                    query={"query": {"match_all": {}}}, _source=ENTRY_FIELDS, size=1000,
                                    scroll="5m"):
                src = hit["_source"]
                yield Entry(hit["_id"], src["path"], src["content_hash"], src["bytes"],
                            src.get("modified_at", 0.0), tuple(src.get("tags") or ()), bool(src.get("linked")),
                            src.get("meta_version") or 0, src.get("labels") is not None)

    def documents(self, doc_ids):
        return {hit["_id"]: _hit_document(hit)
                for hit in self._by_ids("read documents", doc_ids, _source={"excludes": [VECTOR]})}

    def _by_ids(self, what: str, doc_ids: Iterable[str], **read) -> Iterator[dict]:
        """The hits of the documents with these ids, 1,000 a request, read as `read` says (_source, fields)."""
        ids = list(dict.fromkeys(doc_ids))
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            yield from self._search(what, query={"ids": {"values": chunk}}, size=len(chunk), **read)["hits"]["hits"]

    def exact_groups(self, content_hashes: Sequence[str] | None = None) -> list[list[str]]:
        """Content hashes held by two or more documents (one terms aggregation; in partitions only when one
        answer would hold more buckets than it may), then their ids."""
        hashes: list[str] = list(dict.fromkeys(content_hashes or ()))
        partitions = 1
        while content_hashes is None:
            found: list[str] = []
            complete = True
            for partition in range(partitions):
                result = self._search("group identical files", **exact_hashes_body(partition, partitions))
                buckets = (result.get("aggregations") or {}).get("hashes", {}).get("buckets", [])
                found += [b["key"] for b in buckets]
                complete = complete and len(buckets) < EXACT_BUCKETS
            if complete:
                hashes = found
                break
            partitions *= 8          # more shared contents than one answer holds: split them
        groups: dict[str, list[str]] = {}
        for start in range(0, len(hashes), 1000):
            for hit in self._scan("list identical files", {"terms": {"content_hash": hashes[start:start + 1000]}},
                                  ["content_hash"]):
                groups.setdefault(hit["fields"]["content_hash"][0], []).append(hit["_id"])
        return [sorted(ids) for ids in groups.values() if len(ids) > 1]

    def near_pairs(self, min_score: float, touching: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
        if self._target(fresh=True) is None:
            return []
        holders: dict[str, str] = {}                         # content hash of every document read here
        links_of: dict[str, list[NearLink]] = {}
        unconverted: list[str] = []                          # written before near_links: links in _source only
        for hit in self._scan("read near-duplicate links", links_query(touching), ["near_links", "content_hash"]):
            fields = hit.get("fields") or {}
            holders[hit["_id"]] = fields["content_hash"][0]
            if "near_links" in fields:
                links_of[hit["_id"]] = _link_values(fields["near_links"])
            else:
                unconverted.append(hit["_id"])
        for hit in self._by_ids("read near-duplicate links", unconverted, _source=["near"]):
            links_of[hit["_id"]] = _links(hit["_source"])
        # (from, to, to's content when linked, score)
        found = [(a, link.id, link.content_hash, link.score)
                 for a, links in links_of.items() for link in links if link.score >= min_score]
        if touching is not None:
            found = [f for f in found if f[0] in touching or f[1] in touching]
        # a link stands while its far end is there and holds the content it was linked with
        unknown = sorted({to for _, to, _, _ in found} - holders.keys())
        for hit in self._by_ids("read linked documents", unknown, _source=False, docvalue_fields=["content_hash"]):
            holders[hit["_id"]] = hit["fields"]["content_hash"][0]
        return [(a, b, score) for a, b, content, score in found if holders.get(b) == content]

    def _scan(self, what: str, query: dict, fields: list[str]) -> Iterator[dict]:
        """Every document matching the query, with these fields read from doc values (no _source)."""
        with self._call(what):
            yield from helpers.scan(self._client.options(request_timeout=self.timeout), index=self._read_index(),
                                    query={"query": query, "docvalue_fields": fields}, _source=False, size=1000,
                                    scroll="2m")

    def find_by_hash(self, content_hashes):
        return self._stored_vectors("look up content hashes", content_hashes, hash_body,
                                    lambda hit: hit["_source"]["content_hash"])

    def vectors(self, doc_ids):
        return self._stored_vectors("read vectors", doc_ids, lambda ids: ids_body(ids, with_vector=True),
                                    lambda hit: hit["_id"])

    def _stored_vectors(self, what: str, keys, body, key_of) -> dict[str, np.ndarray]:
        """Stored vectors for `keys`, 500 a request, keyed by key_of(hit)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            for hit in self._search(what, **body(keys[start:start + 500]))["hits"]["hits"]:
                vector = _stored_vector(hit)
                if vector is not None:
                    out[key_of(hit)] = vector
        return out

    def tag_counts(self, limit: int = 50) -> list[tuple[str, int]]:
        result = self._search("count tags", **tag_counts_body(limit))
        buckets = (result.get("aggregations") or {}).get("tags", {}).get("buckets", [])
        return [(b["key"], b["doc_count"]) for b in buckets]

    def stats(self) -> dict:
        target = self._target(fresh=True)
        return {**super().stats(), "index": target[0] if target else None}
