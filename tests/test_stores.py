"""The store contract, written once and run against every backend.

"embedded" and "embedded-snapshots" always run. "elastic" and "elastic-9" run against real single-node
Elasticsearch servers, 8.x (the docker-compose.yml version) and the newest 9.x, that the test session
starts in a JVM (tests/es_node.py; ES_URL / ES9_URL point at servers of your own instead). No fake server
stands in for them; they skip, saying why, only where Java or Maven is missing.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from backend.stores import DescriptorMismatch, Document, StoreError, StoreUnavailable
from backend.stores.base import Label
from backend.stores.filters import Filters


DESC = "test-descriptor-16d"
DIMS = 16


def unit(*values) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def doc(i: int, vector=None, tags=("animals",), filename=None, descriptor=DESC, content_hash=None) -> Document:
    name = filename or f"photo_{i}.jpg"
    return Document(id=f"id{i:03d}", vector=unit(1.0, i / 10) if vector is None else vector, filename=name,
                    path=f"/photos/{name}", tags=list(tags), width=640 + i, height=480, bytes=1000 + i,
                    content_hash=content_hash or f"hash{i}", descriptor=descriptor,
                    indexed_at=1_700_000_000.0 + i, modified_at=1_600_000_000.0 + i)


def test_empty_store(store):
    assert store.count() == 0
    assert store.descriptor() is None
    assert store.knn(unit(1), descriptor=DESC).hits == []
    assert store.keyword("anything").hits == []
    assert list(store.entries()) == []
    assert store.ping() is True
    assert store.get("nope") is None


def test_upsert_and_get_round_trip(store):
    original = doc(1, tags=["Animals", "horses"], filename="Pferd café 東京.jpg")
    assert store.upsert([original]) == 1
    got = store.get(original.id, with_vector=True)
    assert got.metadata() == {**original.metadata(), "tags": ["animals", "horses"]}
    np.testing.assert_allclose(got.vector, original.vector, rtol=1e-6)
    assert store.get(original.id).vector is None
    assert store.descriptor() == DESC
    assert store.count() == 1


def test_upsert_replaces_by_id(store):
    store.upsert([doc(1)])
    changed = doc(1, vector=unit(0, 1), tags=["dogs"])
    changed.bytes = 5
    store.upsert([changed])
    assert store.count() == 1
    got = store.get("id001", with_vector=True)
    assert got.tags == ["dogs"] and got.bytes == 5
    np.testing.assert_allclose(got.vector, unit(0, 1), atol=1e-6)
    assert store.knn(unit(0, 1), descriptor=DESC, limit=1).hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert store.keyword("dogs").total == 1 and store.keyword("animals").total == 0


def test_delete(store):
    store.upsert([doc(i) for i in range(3)])
    assert store.delete(["id001", "unknown"]) == 1
    assert store.get("id001") is None
    assert store.count() == 2
    assert "id001" not in {h.document.id for h in store.knn(unit(1), descriptor=DESC, limit=10).hits}
    assert store.keyword("photo_1").total == 0
    assert store.delete([]) == 0


def test_knn_orders_by_cosine_similarity(store):
    angles = [0.0, 0.3, 0.6, 0.9, 1.2]
    store.upsert([doc(i, vector=unit(np.cos(a), np.sin(a))) for i, a in enumerate(angles)])
    page = store.knn(unit(1, 0), descriptor=DESC, limit=5)
    assert [h.document.id for h in page.hits] == ["id000", "id001", "id002", "id003", "id004"]
    for hit, angle in zip(page.hits, angles):
        assert hit.score == pytest.approx(np.cos(angle), abs=1e-3)
        assert hit.document.vector is None
    assert page.total == 5


def test_knn_paging_matches_the_full_ranking(store):
    store.upsert([doc(i, vector=unit(1, i / 5)) for i in range(12)])
    full = [h.document.id for h in store.knn(unit(1, 0), descriptor=DESC, limit=12).hits]
    pages = [h.document.id for off in (0, 5, 10)
             for h in store.knn(unit(1, 0), descriptor=DESC, offset=off, limit=5).hits]
    assert pages == full
    assert store.knn(unit(1, 0), descriptor=DESC, offset=20, limit=5).hits == []


def test_knn_tag_filter_requires_every_tag(store):
    store.upsert([doc(0, tags=["horses", "brown"]), doc(1, tags=["horses"]), doc(2, tags=["brown"]),
                  doc(3, tags=[])])
    def ids(tags):
        return sorted(h.document.id for h in store.knn(unit(1), descriptor=DESC, tags=tags, limit=10).hits)
    assert ids(["horses"]) == ["id000", "id001"]
    assert ids(["horses", "Brown"]) == ["id000"]
    assert ids(["zebras"]) == []
    assert store.knn(unit(1), descriptor=DESC, tags=["horses"], limit=1).total >= 1


def test_knn_exclude_and_min_score(store):
    store.upsert([doc(i, vector=unit(np.cos(a), np.sin(a))) for i, a in enumerate([0.0, 0.5, 1.5])])
    hits = store.knn(unit(1, 0), descriptor=DESC, exclude=["id000"], limit=10).hits
    assert [h.document.id for h in hits] == ["id001", "id002"]
    page = store.knn(unit(1, 0), descriptor=DESC, min_score=0.5, limit=10)
    assert [h.document.id for h in page.hits] == ["id000", "id001"]
    assert all(h.score >= 0.5 for h in page.hits)


def test_descriptors_are_never_mixed(store):
    store.upsert([doc(1)])
    with pytest.raises(DescriptorMismatch):
        store.upsert([doc(2, descriptor="another-descriptor")])
    with pytest.raises(DescriptorMismatch):
        store.knn(unit(1), descriptor="another-descriptor")
    assert store.count() == 1


def test_keyword_words_prefixes_and_case(store):
    store.upsert([doc(0, filename="Horse_in_field.jpg", tags=["animals"]),
                  doc(1, filename="beach.png", tags=["Seaside", "holiday"]),
                  doc(2, filename="horses-running.jpg", tags=["animals", "horses"]),
                  doc(3, filename="IMG_2034.JPG", tags=["sunset"])])
    def ids(text, **kw):
        return sorted(h.document.id for h in store.keyword(text, **kw).hits)
    assert ids("horse") == ["id000", "id002"]          # word and prefix ("horses")
    assert ids("HORS") == ["id000", "id002"]           # prefix, case-insensitive
    assert ids("seaside") == ["id001"]                 # tags are searched
    assert ids("img 2034") == ["id003"]                # every word must match
    assert ids("horse holiday") == []
    assert ids("xylophone") == []
    assert ids("horse", tags=["horses"]) == ["id002"]  # combined with the tag filter
    assert ids("", tags=["animals"]) == ["id000", "id002"]
    page = store.keyword("horse")
    assert page.total == 2 and all(h.score > 0 for h in page.hits)


def test_keyword_words_are_the_same_on_every_backend(store):
    """One word split and fold (search_words) for both stores: underscores and dots split, accents fold,
    case folds, a tag with a space is two words, and a prefix may be longer than the prefix index (10)."""
    store.upsert([doc(0, filename="IMG_2034.JPG", tags=["Brown Coat"]),
                  doc(1, filename="Café Crème.jpg", tags=["Zürich"]),
                  doc(2, filename="photographically-interesting.png", tags=["東京"]),
                  doc(3, filename="cafeteria.jpg", tags=[])])
    def ids(text):
        return sorted(h.document.id for h in store.keyword(text).hits)
    for query in ("IMG_2034", "img", "2034", "jpg img", "IMG_2034.JPG", "i"):
        assert "id000" in ids(query), query
    assert ids("2034.jpg") == ["id000"]
    assert ids("cafe") == ["id001", "id003"] == ids("CAFÉ") == ids("Café")   # accents and case fold
    assert ids("creme") == ["id001"] == ids("crème")
    assert ids("zurich") == ["id001"] == ids("ZÜRICH")
    assert ids("brown") == ["id000"] == ids("coat") == ids("brown coat")
    assert ids("photographica") == ["id002"]          # a 13-letter prefix
    assert ids("photographically interest") == ["id002"]
    assert ids("東京") == ["id002"]
    assert ids("cafeterias") == []


def test_min_score_is_inclusive_at_the_boundary(store):
    # cos = 0.5 exactly in float32: (1, 0) against (0.5, sqrt(0.75))
    store.upsert([doc(0, vector=unit(1, 0)), doc(1, vector=unit(0.5, np.sqrt(0.75))), doc(2, vector=unit(0, 1))])
    at = store.knn(unit(1, 0), descriptor=DESC, min_score=0.5, limit=10)
    assert [h.document.id for h in at.hits] == ["id000", "id001"]
    assert at.hits[1].score == pytest.approx(0.5, abs=1e-6)
    above = store.knn(unit(1, 0), descriptor=DESC, min_score=0.5001, limit=10)
    assert [h.document.id for h in above.hits] == ["id000"]


def test_tag_filter_exclude_and_threshold_together(store):
    angles = np.linspace(0, 1.2, 12)
    store.upsert([doc(i, vector=unit(np.cos(a), np.sin(a)), tags=["even" if i % 2 == 0 else "odd"])
                  for i, a in enumerate(angles)])
    page = store.knn(unit(1, 0), descriptor=DESC, tags=["even"], exclude=["id000", "id004"],
                     min_score=float(np.cos(0.9)), limit=10)
    expected = [f"id{i:03d}" for i, a in enumerate(angles) if i % 2 == 0 and i not in (0, 4) and a <= 0.9 + 1e-6]
    assert [h.document.id for h in page.hits] == expected


@pytest.mark.parametrize("bad", [np.zeros(DIMS, np.float32), np.full(DIMS, np.nan, np.float32),
                                 np.full(DIMS, 0.5, np.float32)], ids=["zero", "nan", "not-unit"])
def test_vectors_that_are_not_unit_vectors_are_refused_whole(store, bad):
    from backend.stores import InvalidVector

    store.upsert([doc(0)])
    with pytest.raises(InvalidVector, match="/photos/photo_2.jpg"):
        store.upsert([doc(1), doc(2, vector=bad)])
    assert store.count() == 1 and store.get("id001") is None


def test_keyword_paging(store):
    store.upsert([doc(i, filename=f"tree_{i}.jpg") for i in range(7)])
    first, second = store.keyword("tree", limit=4), store.keyword("tree", offset=4, limit=4)
    assert first.total == 7 and len(first.hits) == 4 and len(second.hits) == 3
    assert {h.document.id for h in first.hits}.isdisjoint({h.document.id for h in second.hits})


def test_labels_round_trip_and_mark_unlabelled_entries(store):
    labelled = doc(0)
    labelled.labels = [Label("golden retriever", 0.75), Label("tennis ball", 0.125)]
    nothing_found, not_classified = doc(1), doc(2)
    nothing_found.labels = []
    store.upsert([labelled, nothing_found, not_classified])
    assert store.get("id000").labels == labelled.labels
    assert store.get("id001").labels == [] and store.get("id002").labels is None
    assert {e.id: e.labelled for e in store.entries()} == {"id000": True, "id001": True, "id002": False}
    assert store.get("id000").metadata()["labels"] == [{"label": "golden retriever", "confidence": 0.75},
                                                       {"label": "tennis ball", "confidence": 0.125}]
    # facets count the pictures that carry each label, within the filters
    also = doc(3, tags=["other"])
    also.labels = [Label("tennis ball", 0.5)]
    store.upsert([also])
    assert store.facets()["labels"] == [("tennis ball", 2), ("golden retriever", 1)]
    assert store.facets(Filters.of(tags=["other"]))["labels"] == [("tennis ball", 1)]


def test_keyword_finds_labels_and_broader_words_after_names_and_tags(store):
    def labelled(i, labels, **kw):
        d = doc(i, **kw)
        d.labels = [Label(name, confidence) for name, confidence in labels]
        return d
    store.upsert([labelled(0, [("golden retriever", 0.5)], tags=["pets"]),
                  labelled(1, [("tabby", 0.6), ("Labrador retriever", 0.25)], tags=["pets"]),
                  labelled(2, [("hotdog", 0.9)], tags=["lunch"]),
                  labelled(3, [("minibus", 0.7)], tags=["street"]),
                  labelled(4, [("golden retriever", 0.3)], filename="dog.jpg", tags=["pets"]),
                  doc(5, filename="dogsled.jpg")])

    def found(text, **kw):
        return [(h.document.id, h.label.name if h.label else None) for h in store.keyword(text, **kw).hits]
    # the file name first (as a word or prefix), then labels by the confidence of the label that matched
    assert found("dog") == [("id004", None), ("id005", None), ("id000", "golden retriever"),
                            ("id001", "Labrador retriever")]
    assert store.keyword("dog").total == 4
    assert [h.score for h in store.keyword("dog").hits][2:] == pytest.approx([0.5, 0.25], abs=0.01)
    assert found("Dogs") == [("id005", None), ("id000", "golden retriever"), ("id004", "golden retriever"),
                             ("id001", "Labrador retriever")]               # plurals ("dog.jpg" is no "dogs")
    assert found("vehicle") == [("id003", "minibus")]
    assert found("hot dog") == [("id002", "hotdog")] and found("hot") == []  # whole terms, not their words
    assert found("golden retriever") == [("id000", "golden retriever"), ("id004", "golden retriever")]
    assert found("dog", tags=["pets"]) == [("id004", None), ("id000", "golden retriever"),
                                           ("id001", "Labrador retriever")]
    assert found("dog", offset=1, limit=2) == [("id005", None), ("id000", "golden retriever")]
    assert found("dog", offset=3, limit=2) == [("id001", "Labrador retriever")]
    store.delete(["id000"])
    assert found("retriever") == [("id004", "golden retriever"), ("id001", "Labrador retriever")]


def test_entries_and_find_by_hash(store):
    store.upsert([doc(0, content_hash="same"), doc(1, content_hash="same"), doc(2)])
    entries = {e.id: e for e in store.entries()}
    assert set(entries) == {"id000", "id001", "id002"}
    e = entries["id002"]
    assert (e.path, e.content_hash, e.bytes, e.modified_at, e.tags) == (
        "/photos/photo_2.jpg", "hash2", 1002, 1_600_000_002.0, ("animals",))
    found = store.find_by_hash(["same", "hash2", "missing"])
    assert set(found) == {"same", "hash2"}
    np.testing.assert_allclose(found["hash2"], doc(2).vector, rtol=1e-6)


def test_vectors_by_id(store):
    assert store.vectors(["id000"]) == {}
    store.upsert([doc(i) for i in range(3)])
    found = store.vectors(["id002", "id000", "id002", "nope"])
    assert set(found) == {"id000", "id002"}
    np.testing.assert_allclose(found["id002"], doc(2).vector, rtol=1e-6)
    np.testing.assert_allclose(found["id000"], doc(0).vector, rtol=1e-6)
    store.delete(["id000"])
    assert set(store.vectors(["id000", "id001"])) == {"id001"}


def test_tag_counts_and_stats(store):
    store.upsert([doc(0, tags=["a", "b"]), doc(1, tags=["a"]), doc(2, tags=["c"])])
    assert store.tag_counts()[0] == ("a", 2)
    assert dict(store.tag_counts()) == {"a": 2, "b": 1, "c": 1}
    stats = store.stats()
    assert stats["count"] == 3 and stats["descriptor"] == DESC and stats["backend"] == store.backend
    assert stats["location"]


def test_an_emptied_store_accepts_a_new_descriptor(store):
    store.upsert([doc(1)])
    store.delete(["id001"])
    store.upsert([doc(2, descriptor="another-descriptor")])
    assert store.descriptor() == "another-descriptor"


def test_rebuild_is_a_declared_capability(store):
    """A store that supports_rebuild fills an index for another descriptor beside the live one, which
    readers keep searching until promote(); one that does not refuses stage and promote alike."""
    store.upsert([doc(1), doc(2)])
    if not store.supports_rebuild:
        with pytest.raises(StoreError, match="cannot rebuild"):
            store.stage("another-descriptor")
        with pytest.raises(StoreError, match="cannot rebuild"):
            store.promote()
        assert store.descriptor() == DESC and store.count() == 2
        return
    with pytest.raises(StoreError):
        store.promote()                  # nothing staged yet
    staged = store.stage("another-descriptor")
    assert staged
    with pytest.raises(StoreError):
        store.promote()                  # staged, but nothing written to it yet
    store.upsert([doc(3, descriptor="another-descriptor")])
    assert store.promote() == staged
    assert store.descriptor() == "another-descriptor"
    assert [h.document.id for h in store.knn(unit(1), descriptor="another-descriptor", limit=10).hits] == ["id003"]


@pytest.mark.parametrize("snapshot_min_rows", [1000, 0])
def test_the_embedded_store_raises_the_contracts_errors_only(tmp_path, snapshot_min_rows):
    """sqlite3's errors (here: the connection is closed) leave every public method as StoreUnavailable."""
    from backend.stores.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "index.sqlite3", snapshot_min_rows=snapshot_min_rows)
    store.upsert([doc(1)])
    store.close()
    for call in (store.count, store.descriptor, lambda: store.get("id001"), lambda: list(store.entries()),
                 lambda: store.knn(unit(1), descriptor=DESC), lambda: store.keyword("photo"),
                 lambda: store.upsert([doc(2)]), lambda: store.delete(["id001"]), lambda: store.vectors(["id001"]),
                 lambda: store.find_by_hash(["hash1"]), lambda: store.tag_counts(), store.warm_up, store.stats):
        with pytest.raises(StoreUnavailable):
            call()
    assert store.ping() is False


def test_the_embedded_store_reports_an_unreadable_file_as_unavailable(tmp_path):
    from backend.stores.embedded import EmbeddedStore

    (tmp_path / "index.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreUnavailable, match="index.sqlite3"):
        EmbeddedStore(tmp_path / "index.sqlite3")


def test_the_embedded_store_works_in_a_process_that_loaded_the_model_first(tmp_path):
    """TensorFlow bundles a SQLite without FTS5: the model's import binds the system one first."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from backend.features import _import_tensorflow\n"
              "_import_tensorflow()\n"
              "from backend.stores.embedded import EmbeddedStore\n"
              "print(EmbeddedStore(sys.argv[1]).keyword('photo').total)\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "index.sqlite3")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"


# -- embedded store: several processes, crashes ------------------------------------------------

@pytest.mark.parametrize("snapshot_min_rows", [1000, 0])
def test_embedded_reader_sees_other_writers_without_restart(tmp_path, snapshot_min_rows):
    from backend.stores.embedded import EmbeddedStore
    reader = EmbeddedStore(tmp_path / "index.sqlite3", snapshot_min_rows=snapshot_min_rows)
    writer = EmbeddedStore(tmp_path / "index.sqlite3", snapshot_min_rows=snapshot_min_rows)
    writer.upsert([doc(i) for i in range(3)])
    assert len(reader.knn(unit(1), descriptor=DESC, limit=10).hits) == 3
    writer.upsert([doc(3, vector=unit(0, 1))])
    writer.delete(["id000"])
    hits = reader.knn(unit(0, 1), descriptor=DESC, limit=10).hits
    assert hits[0].document.id == "id003"
    assert {h.document.id for h in hits} == {"id001", "id002", "id003"}
    writer.delete(["id003"])
    writer.upsert([doc(3, vector=unit(0, 1))])     # deleted and added back
    assert reader.knn(unit(0, 1), descriptor=DESC, limit=1).hits[0].document.id == "id003"
    reader.close(), writer.close()


WRITER = """
import sys
from backend.stores.embedded import EmbeddedStore
from tests.test_stores import doc
store = EmbeddedStore(sys.argv[1])
for batch in range(10_000):
    store.upsert([doc(batch * 10 + i) for i in range(10)])
    print(batch, flush=True)
"""


def test_embedded_kill_9_mid_write_loses_nothing_committed(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path / "index.sqlite3"
    # run from the checkout, so that `python -c` finds the tests package on its path
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, text=True)
    committed = -1
    deadline = time.time() + 60
    while committed < 20 and time.time() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from backend.stores.embedded import EmbeddedStore
    store = EmbeddedStore(db)
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # every batch it reported is there, and no batch is there in part (the writer may have committed
    # more batches than the test had read from its pipe when the kill landed)
    assert store.count() >= (committed + 1) * 10
    assert store.count() % 10 == 0
    assert len(store.knn(unit(1), descriptor=DESC, limit=5).hits) == 5
    store.close()


OPENER = """
import sys, time
from pathlib import Path
from backend.stores.embedded import EmbeddedStore
from tests.test_stores import doc
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
with EmbeddedStore(sys.argv[1]) as store:
    store.upsert([doc(int(sys.argv[3]))])
"""


def test_embedded_processes_that_open_a_new_file_at_once_all_open_it(tmp_path):
    """Gunicorn's workers, or an indexer and the server started together, open a file that does not exist
    yet at the same moment: each must find it made once (its journal mode, its schema, its columns)."""
    import subprocess
    import sys
    from pathlib import Path

    from backend.stores.embedded import EmbeddedStore
    for round_ in range(5):
        db, go = tmp_path / f"round{round_}" / "index.sqlite3", tmp_path / f"go{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(db), str(go), str(i)],
                                  cwd=Path(__file__).parent.parent, stderr=subprocess.PIPE, text=True)
                 for i in range(4)]
        time.sleep(0.5)   # all four waiting (a late one still has to open the file made by the others)
        go.touch()
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, "\n".join(errors)[-3000:]
        with EmbeddedStore(db) as store:
            assert store.count() == 4


@pytest.mark.parametrize("snapshot_min_rows", [1000, 0])
def test_embedded_concurrent_threads_read_while_writing(tmp_path, snapshot_min_rows):
    from concurrent.futures import ThreadPoolExecutor

    from backend.stores.embedded import EmbeddedStore
    store = EmbeddedStore(tmp_path / "index.sqlite3", snapshot_min_rows=snapshot_min_rows)
    store.upsert([doc(i) for i in range(50)])

    def search(_):
        return len(store.knn(unit(1), descriptor=DESC, limit=10).hits) + len(store.keyword("photo").hits)

    def write(i):
        store.upsert([doc(100 + i)])
        return 0

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: write(i) if i % 5 == 0 else search(i), range(200)))
    assert all(r == 20 for i, r in enumerate(results) if i % 5)
    assert store.count() == 90
    store.close()
