"""The Elasticsearch store against a real single-node server (tests/es_node.py): what only a real cluster
can show. Index types, the stored mapping and its analysis, scores, deep kNN paging, refresh on idle
shards, concurrent creation, a rebuild promoted under live searches, and the faults: a write queue that
rejects (429), a stalled JVM (SIGSTOP), an unrelated red index."""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from elasticsearch import Elasticsearch

from backend.config import Settings
from backend.stores import Document, StoreError, StoreUnavailable, open_store, search_words
from backend.stores.base import NearLink
from backend.stores.elastic import REVISION, ElasticStore, document_source, index_body, index_name

from .conftest import delete_indices


def unit_vectors(n: int, dims: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def docs(vectors: np.ndarray, descriptor: str = "d", start: int = 0, tags=("t",)) -> list[Document]:
    return [Document(id=f"d{start + i:05d}", vector=v, filename=f"photo_{start + i}.jpg",
                     path=f"/x/photo_{start + i}.jpg", tags=list(tags), width=1, height=1, bytes=1,
                     content_hash=f"h{start + i}", descriptor=descriptor, indexed_at=0.0)
            for i, v in enumerate(vectors)]


@pytest.fixture
def new_store(es_url):
    """Stores on fresh aliases of the session's node, removed afterwards."""
    made: list[tuple[ElasticStore, str]] = []

    def make(alias: str | None = None, **settings) -> ElasticStore:
        alias = alias or f"lookalike-test-{uuid.uuid4().hex[:8]}"
        store = open_store(Settings(store=es_url, es_index=alias, **settings))
        made.append((store, alias))
        return store

    yield make
    for store, alias in made:
        store.close()
        delete_indices(es_url, alias)


# -- index types, mapping, scores ---------------------------------------------------------------------

# How far a returned score may be from the true cosine without rescoring in the query
# (LOOKALIKE_ES_RESCORE_OVERSAMPLE=0): exact for float HNSW; int8 and int4 score with their quantized
# vectors. Measured on 8.19.21, 200 random 512-d vectors, 20 queries x top 10: largest error 0 (hnsw),
# 0.021 (int8_hnsw), 0.052 (int4_hnsw), 0 (bbq_hnsw: 8.19's mapping rescores it with the float vectors by
# default). The tolerances leave about twice that.
SCORE_TOLERANCE = {"hnsw": 1e-5, "int8_hnsw": 0.05, "int4_hnsw": 0.1, "bbq_hnsw": 0.05}


@pytest.mark.parametrize("index_type", list(SCORE_TOLERANCE))
def test_every_index_type_at_512_dimensions(new_store, index_type):
    store = new_store(es_index_type=index_type, es_rescore_oversample=0)
    vectors = unit_vectors(200, 512, seed=1)
    assert store.upsert(docs(vectors)) == 200
    client = store._client
    name = store.index_for("d")
    options = client.indices.get_mapping(index=name)[name]["mappings"]["properties"]["vector"]["index_options"]
    assert options["type"] == index_type
    query = vectors[7]
    page = store.knn(query, descriptor="d", limit=10)
    assert page.hits[0].document.id == "d00007"
    exact = vectors @ query
    errors = [abs(h.score - exact[int(h.document.id[1:])]) for h in page.hits]
    assert max(errors) <= SCORE_TOLERANCE[index_type], (index_type, max(errors))


@pytest.mark.parametrize("index_type", ["int8_hnsw", "int4_hnsw", "bbq_hnsw"])
def test_a_quantized_index_with_rescoring_returns_the_exact_cosines_of_the_top_hits(new_store, index_type):
    store = new_store(es_index_type=index_type, es_rescore_oversample=3)
    vectors = unit_vectors(300, 512, seed=5)
    store.upsert(docs(vectors))
    for query in (vectors[11], unit_vectors(1, 512, seed=77)[0]):
        exact = vectors @ query
        best = np.argsort(-exact, kind="stable")[:10]
        page = store.knn(query, descriptor="d", limit=10)
        found = [int(h.document.id[1:]) for h in page.hits]
        assert found == best.tolist(), index_type        # the exact top 10, in the exact order
        np.testing.assert_allclose([h.score for h in page.hits], exact[best], atol=1e-5)
        [many] = store.knn_many([query], descriptor="d", limit=10, min_score=None)   # the indexer's path
        np.testing.assert_allclose([h.score for h in many], exact[best], atol=1e-5)
    if index_type != "bbq_hnsw":       # 8.19 rescores bbq by its mapping's default even without the query's
        store.oversample = 0
        page = store.knn(query, descriptor="d", limit=10)
        errors = [abs(h.score - exact[int(h.document.id[1:])]) for h in page.hits]
        assert max(errors) > 1e-4, "without rescore_vector the scores are the quantized ones"


def test_rescoring_follows_the_searched_index_not_the_configured_type(new_store):
    """A store configured for float HNSW searching an int8 index made before (LOOKALIKE_ES_INDEX_TYPE changed,
    no rebuild yet) still rescores it: exact cosines; and the other way round a float index answers as ever."""
    vectors = unit_vectors(300, 512, seed=6)
    query = unit_vectors(1, 512, seed=78)[0]
    exact = vectors @ query
    best = np.argsort(-exact, kind="stable")[:10]
    for made, configured in (("int8_hnsw", "hnsw"), ("hnsw", "int8_hnsw")):
        writer = new_store(es_index_type=made, es_rescore_oversample=3)
        writer.upsert(docs(vectors))
        reader = new_store(writer.alias, es_index_type=configured, es_rescore_oversample=3)
        page = reader.knn(query, descriptor="d", limit=10)
        assert [int(h.document.id[1:]) for h in page.hits] == best.tolist(), (made, configured)
        np.testing.assert_allclose([h.score for h in page.hits], exact[best], atol=1e-5)


@pytest.mark.parametrize("index_type, dims", [("bbq_hnsw", 16), ("int4_hnsw", 15)])
def test_a_type_the_server_refuses_is_one_clear_error_and_nothing_is_created(new_store, index_type, dims):
    store = new_store(es_index_type=index_type)
    vectors = unit_vectors(3, dims)
    with pytest.raises(StoreError) as caught:
        store.upsert(docs(vectors))
    message = str(caught.value)
    assert "\n" not in message and index_type in message and f"{dims} dimensions" in message
    client = store._client
    assert not client.indices.exists(index=f"{store.alias}*", allow_no_indices=False, expand_wildcards="all")
    assert not client.indices.exists_alias(name=store.alias)
    assert store.count() == 0 and store.descriptor() is None


def test_the_stored_mapping_meta_and_analysis(new_store):
    store = new_store()
    store.upsert(docs(unit_vectors(1, 8), descriptor="vgg16-test"))
    client, name = store._client, store.index_for("vgg16-test")
    mapping = client.indices.get_mapping(index=name)[name]["mappings"]
    assert mapping["_meta"] == {"descriptor": "vgg16-test", "dims": 8, "schema": 2, "revision": REVISION}
    assert mapping["dynamic"] == "strict"
    assert list(client.indices.get_alias(name=store.alias)) == [name]

    def tokens(field: str, text: str) -> list[str]:
        indexed = " ".join(search_words(text))         # what document_source stores
        return [t["token"] for t in client.indices.analyze(index=name, field=field, text=indexed)["tokens"]]

    assert tokens("filename_words", "IMG_2034.JPG") == ["img", "2034", "jpg"]
    assert tokens("filename_words", "Café Crème") == ["cafe", "creme"]
    assert tokens("filename_words", "MiXeD CaSe") == ["mixed", "case"]
    assert tokens("tag_words", "Brown Coat") == ["brown", "coat"]
    assert tokens("filename_words", "東京タワー") == ["東京タワー"]
    # prefixes of up to 10 characters are indexed terms; longer ones still match (the contract test)
    words = mapping["properties"]["filename_words"]
    assert words["analyzer"] == "whitespace" and words["index_prefixes"] == {"min_chars": 1, "max_chars": 10}
    # a document written with a field the mapping does not know is refused (dynamic: strict)
    with pytest.raises(Exception, match="strict_dynamic_mapping"):
        client.index(index=name, id="x", document={"unknown": 1})


def test_vectors_read_back_and_hnsw_scores_are_the_cosine(new_store):
    store = new_store()
    vectors = unit_vectors(50, 64, seed=3)
    store.upsert(docs(vectors))
    for i in (0, 17, 49):
        got = store.get(f"d{i:05d}", with_vector=True)
        assert np.array_equal(got.vector, vectors[i])           # float32 bit for bit through JSON
    found = store.find_by_hash(["h3", "h44", "nope"])
    assert set(found) == {"h3", "h44"} and np.array_equal(found["h44"], vectors[44])
    query = unit_vectors(1, 64, seed=99)[0]
    page = store.knn(query, descriptor="d", limit=50)
    exact = vectors @ query
    assert [h.document.id for h in page.hits] == [f"d{i:05d}" for i in np.argsort(-exact, kind="stable")]
    np.testing.assert_allclose([h.score for h in page.hits], np.sort(exact)[::-1], atol=1e-5)


def test_links_written_before_they_were_kept_in_doc_values_are_still_reported(new_store, es_url):
    """A report reads the links from doc values (near_links); documents written before that field existed
    hold their links in _source only, and are read from there until they are written again."""
    alias = f"lookalike-test-{uuid.uuid4().hex[:8]}"
    store = new_store(alias)
    written = docs(unit_vectors(4, 8, seed=5))
    written[1].near = [NearLink("d00000", "h0", 0.93)]
    written[2].near = [NearLink("d00001", "h1", 0.85), NearLink("d00000", "changed since", 0.99)]
    store.upsert(written)
    expected = [("d00001", "d00000", 0.93), ("d00002", "d00001", 0.85)]   # a link to other content does not stand
    assert sorted(store.near_pairs(0.8)) == expected

    def with_doc_values(client) -> set[str]:
        hits = client.search(index=alias, query={"match_all": {}}, docvalue_fields=["near_links"], source=False,
                             size=10)["hits"]["hits"]
        return {hit["_id"] for hit in hits if "near_links" in hit.get("fields", {})}
    with Elasticsearch(es_url) as client:
        assert with_doc_values(client) == {"d00001", "d00002"}
        for doc in written[1:3]:                          # as a version before doc values wrote them
            source = {**document_source(doc), "vector": doc.vector.tolist()}
            del source["near_links"]
            client.index(index=alias, id=doc.id, document=source, refresh=True)
        assert with_doc_values(client) == set()
        assert sorted(store.near_pairs(0.8)) == expected
        assert sorted(store.near_pairs(0.8, touching=["d00002"])) == expected[1:]
        assert sorted(store.near_pairs(0.9)) == expected[:1]
        store.upsert([written[2]])                       # written again by the indexer
        assert with_doc_values(client) == {"d00002"}
    assert sorted(store.near_pairs(0.8)) == expected


def test_an_index_of_an_older_mapping_revision_gains_the_new_fields_when_opened(es_url):
    """An index made at revision 3 (before near_links) is opened by this version: the field is added (put
    mapping, no rebuild), its documents still report their links, and documents written now use it."""
    alias = f"lookalike-test-{uuid.uuid4().hex[:8]}"
    body = index_body("d", 8)
    del body["mappings"]["properties"]["near_links"]
    body["mappings"]["_meta"]["revision"] = 3
    name = index_name(alias, "d")
    written = docs(unit_vectors(3, 8, seed=6))
    written[1].near = [NearLink("d00000", "h0", 0.9)]
    try:
        with Elasticsearch(es_url) as client:
            client.indices.create(index=name, **body, aliases={alias: {}})
            for doc in written:                          # as revision 3 wrote them
                source = {**document_source(doc), "vector": doc.vector.tolist()}
                del source["near_links"]
                client.index(index=name, id=doc.id, document=source, refresh=True)
            store = open_store(Settings(store=es_url, es_index=alias))
            try:
                assert store.near_pairs(0.8) == [("d00001", "d00000", 0.9)]
                mapping = client.indices.get_mapping(index=name)[name]["mappings"]
                assert mapping["_meta"]["revision"] == REVISION and "near_links" in mapping["properties"]
                written[2].near = [NearLink("d00001", "h1", 0.85)]
                store.upsert([written[2]])
                assert sorted(store.near_pairs(0.8)) == [("d00001", "d00000", 0.9), ("d00002", "d00001", 0.85)]
            finally:
                store.close()
    finally:
        delete_indices(es_url, alias)


# -- paging --------------------------------------------------------------------------------------

def test_knn_pages_below_and_above_num_candidates_have_no_gaps_or_doubles(new_store):
    store = new_store(es_num_candidates=20)
    vectors = unit_vectors(300, 16, seed=4)
    store.upsert(docs(vectors))
    query = vectors[0]
    seen: list[str] = []
    for offset in range(0, 120, 10):                 # k = offset + 10 passes num_candidates (20) at offset 20
        page = store.knn(query, descriptor="d", offset=offset, limit=10)
        assert len(page.hits) == 10
        seen += [h.document.id for h in page.hits]
    assert len(seen) == len(set(seen)) == 120
    exact = [f"d{i:05d}" for i in np.argsort(-(vectors @ query), kind="stable")[:120]]
    assert len(set(seen) & set(exact)) >= 114          # approximate: at least 95% of the exact top 120


def test_knn_offsets_near_the_10000_window(new_store):
    store = new_store()
    n = 10_050
    vectors = unit_vectors(n, 8, seed=5)
    for start in range(0, n, 2_000):
        store.upsert(docs(vectors[start:start + 2_000], start=start))
    assert store.count() == n
    query = vectors[0]
    last = store.knn(query, descriptor="d", offset=9_990, limit=10)
    assert len(last.hits) == 10
    assert len(store.knn(query, descriptor="d", offset=9_995, limit=10).hits) == 5   # the window ends at 10,000
    assert store.knn(query, descriptor="d", offset=10_000, limit=10).hits == []
    assert all(h.score <= 1.0 for h in last.hits)
    assert store.keyword("photo", offset=9_995, limit=10).total == n
    assert len(store.keyword("photo", offset=9_995, limit=10).hits) == 5


# -- visibility, concurrency, rebuild ------------------------------------------------------------------

def test_writes_are_visible_at_once_also_on_a_search_idle_shard(new_store):
    store = new_store()
    store.upsert(docs(unit_vectors(1, 8)))
    client, name = store._client, store.index_for("d")
    # a shard is search-idle after index.search.idle.after (30 s by default) with no search; 1 s here
    client.indices.put_settings(index=name, settings={"index.search.idle.after": "1s"})
    time.sleep(3)
    assert client.indices.stats(index=name, metric="refresh")["indices"][name]["total"]["refresh"] is not None
    store.upsert(docs(unit_vectors(5, 8, seed=7), start=100))
    assert store.count() == 6
    assert {h.document.id for h in store.keyword("photo_104").hits} == {"d00104"}
    time.sleep(3)
    assert store.delete(["d00104"]) == 1
    assert store.get("d00104") is None and store.count() == 5
    # a write of several bulk requests (sent at once, then one refresh) is searchable when it returns too
    time.sleep(3)
    assert store.upsert(docs(unit_vectors(1_200, 8, seed=8), start=1_000)) == 1_200
    assert store.count() == 1_205
    assert {h.document.id for h in store.keyword("photo_2199").hits} == {"d02199"}


def test_two_indexers_creating_the_store_at_the_same_moment(new_store):
    for attempt in range(3):
        alias = f"lookalike-test-{uuid.uuid4().hex[:8]}"
        stores = [new_store(alias) for _ in range(2)]
        barrier = threading.Barrier(2)
        errors: list[Exception] = []

        def write(k: int):
            barrier.wait()
            try:
                stores[k].upsert(docs(unit_vectors(20, 8, seed=k), start=k * 100))
            except Exception as exc:  # noqa: BLE001 -- collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert stores[0].count() == 40 and stores[1].count() == 40
        assert list(stores[0]._client.indices.get_alias(name=alias)) == [stores[0].index_for("d")]


def test_a_rebuild_promoted_while_searches_run_never_shows_an_empty_result(new_store):
    live = new_store()
    live.upsert(docs(unit_vectors(40, 8, seed=8), descriptor="old"))
    results: list[tuple[int, int]] = []
    stop = threading.Event()

    def search():
        searcher = new_store(live.alias)
        while not stop.is_set():
            results.append((searcher.count(), searcher.keyword("photo").total))

    thread = threading.Thread(target=search)
    thread.start()
    try:
        builder = new_store(live.alias)
        builder.stage("new")
        for start in range(0, 40, 10):
            builder.upsert(docs(unit_vectors(10, 8, seed=20 + start), descriptor="new", start=start))
        builder.promote()
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    assert len(results) > 10
    assert all(count == 40 and total == 40 for count, total in results), set(results)
    assert live.descriptor() == "new"
    # a searcher that remembered the old index sees the move on its next answer
    with pytest.raises(Exception, match="holds new vectors"):
        live.knn(unit_vectors(1, 8)[0], descriptor="old")


def test_target_is_read_once_not_before_every_call(new_store):
    store = new_store()
    store.upsert(docs(unit_vectors(10, 8)))
    query = unit_vectors(1, 8, seed=1)[0]
    store.knn(query, descriptor="d")
    reads = store.mapping_reads
    for _ in range(20):
        store.knn(query, descriptor="d")
        store.keyword("photo")
        store.count()
        store.get("d00001")
    store.upsert(docs(unit_vectors(2, 8), start=50))
    assert store.mapping_reads == reads       # no mapping read for 80 reads and a write


# -- faults -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def narrow_node(elastic_nodes):
    """A node of these tests' own, with one write thread and a write queue of one: parallel bulk writers
    get per-document 429 (es_rejected_execution_exception). Paused and resumed by the stall test."""
    node = elastic_nodes.start_private("8", settings={"thread_pool.write.size": 1,
                                                      "thread_pool.write.queue_size": 1})
    yield node
    node.stop()


def test_writes_rejected_for_load_are_retried_until_every_document_lands(narrow_node):
    node = narrow_node
    with Elasticsearch(node.url) as client:
        pools = client.nodes.stats(metric="thread_pool")["nodes"]
        assert next(iter(pools.values()))["thread_pool"]["write"]["threads"] <= 1
    alias = "lookalike-429"
    writers = [open_store(Settings(store=node.url, es_index=alias)) for _ in range(6)]
    writers[0].upsert(docs(unit_vectors(1, 32), start=99_999))   # the index exists before the race
    errors: list[Exception] = []

    def write(k: int):
        try:
            for batch in range(4):
                start = k * 1_000 + batch * 200
                writers[k].upsert(docs(unit_vectors(200, 32, seed=start), start=start))
        except Exception as exc:  # noqa: BLE001 -- collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert writers[0].count() == 6 * 800 + 1
    with Elasticsearch(node.url) as client:
        rejected = next(iter(client.nodes.stats(metric="thread_pool")["nodes"].values()))["thread_pool"]["write"]
    assert rejected["rejected"] > 0          # the cluster did push back: the retries were needed
    for w in writers:
        w.close()


def test_a_stalled_cluster_answers_store_unavailable_within_the_timeout_then_recovers(narrow_node):
    node = narrow_node
    vectors = unit_vectors(5, 8)
    with open_store(Settings(store=node.url, es_index="lookalike-stall")) as setup:
        setup.upsert(docs(vectors))      # creating an index may take longer than the short timeout below
    store = open_store(Settings(store=node.url, es_index="lookalike-stall", es_timeout=2.0))
    store.count()
    calls = {"count": store.count, "descriptor": store.descriptor, "get": lambda: store.get("d00001"),
             "knn": lambda: store.knn(vectors[0], descriptor="d"), "keyword": lambda: store.keyword("photo"),
             "upsert": lambda: store.upsert(docs(vectors[:1], start=10)),
             "delete": lambda: store.delete(["d00002"]), "entries": lambda: list(store.entries()),
             "find_by_hash": lambda: store.find_by_hash(["h1"]), "tag_counts": store.tag_counts,
             "stats": store.stats}
    took: dict[str, float] = {}
    node.pause()
    try:
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=f"Elasticsearch at {node.url}"):
                call()
            took[name] = time.monotonic() - started
        assert store.ping() is False
    finally:
        node.resume()
    slow = {name: round(t, 2) for name, t in took.items() if t > 2.0 + 1.0}   # one timeout and a margin
    assert slow == {}
    assert store.count() == 5 and store.ping() is True
    assert len(list(store.entries())) == 5
    store.close()


def test_an_unrelated_red_index_does_not_make_us_unready(new_store, es_url):
    store = new_store()
    store.upsert(docs(unit_vectors(2, 8)))
    red = f"unrelated-{uuid.uuid4().hex[:6]}"
    with Elasticsearch(es_url) as client:
        # a primary that can never be allocated: the cluster is red
        client.indices.create(index=red, settings={"index.routing.allocation.require._name": "nowhere",
                                                   "number_of_replicas": 0}, wait_for_active_shards="0")
        try:
            assert client.cluster.health()["status"] == "red"
            assert store.ping() is True
            again = open_store(Settings(store=es_url, es_index=store.alias, es_wait=5))   # start-up is not held
            assert again.count() == 2
            again.close()
        finally:
            client.indices.delete(index=red)


def test_the_launcher_stops_its_node_on_sigterm(tmp_path, es_url):
    """`python -m tests.es_node` (what `make es-cluster` runs) ends with its node when told to (SIGTERM), the
    node's JVM included; it once waited for ever on the node it had just stopped."""
    import os
    import signal
    import subprocess
    import sys

    from .conftest import ROOT

    launcher = subprocess.Popen([sys.executable, "-m", "tests.es_node", "--port", "0", "--home", str(tmp_path / "es")],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        first = launcher.stdout.readline() if launcher.stdout else ""
        assert first.startswith("Elasticsearch ") and " at http://127.0.0.1:" in first, first
        jvms = subprocess.run(["pgrep", "-P", str(launcher.pid), "java"], capture_output=True, text=True).stdout.split()
        assert jvms, "the node is a JVM the launcher started"
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") and
                                                  "Z" not in open(f"/proc/{pid}/stat").read().split()[2]
                                                  for pid in jvms):
            time.sleep(0.5)
        assert not any(os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]
                       for pid in jvms), "the node's JVM is still running"
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
