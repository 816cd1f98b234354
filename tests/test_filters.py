"""Filters, browsing and facets: the store contract, run against every backend (the `store` fixture of
tests/conftest.py: embedded, embedded with snapshots, Elasticsearch 8 and 9).

Each filter's result is checked against a plain Python reading of what it means, over a small collection
in which every field takes several values (and is missing on some documents)."""
from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from backend.stores import Document
from backend.stores.filters import Filters

from .test_stores import DESC, unit

N = 12


def photo(i: int) -> Document:
    taken = None if i % 4 == 3 else f"20{18 + i % 3}-0{1 + i % 9}-15T10:00:00" + ("+02:00" if i % 2 else "")
    make, model = [("Canon", "Canon EOS 5D"), ("NIKON CORPORATION", "NIKON D750"), (None, None)][i // 4]
    folder = None if i == N - 1 else ["trips/2019", "trips/2019/alps", "home"][i % 3]
    return Document(id=f"id{i:03d}", vector=unit(1.0, i / 10), filename=f"photo_{i}.jpg", path=f"/p/photo_{i}.jpg",
                    tags=["even" if i % 2 == 0 else "odd"], width=600 + 100 * i, height=480 + 50 * (i % 2), bytes=1000,
                    content_hash=f"hash{i}", descriptor=DESC, indexed_at=1_700_000_000.0 + i,
                    modified_at=1_600_000_000.0, taken=taken, camera_make=make, camera_model=model,
                    file_type="jpeg" if i % 2 == 0 else "png", folder=folder, meta_version=1)


DOCS = [photo(i) for i in range(N)]


def meets(doc: Document, f: Filters) -> bool:
    """What the filters mean, in plain Python."""
    day = date.fromisoformat(doc.taken[:10]) if doc.taken else None
    camera = (doc.camera or "").lower()
    return (all(t in doc.tags for t in f.tags)
            and (f.taken_from is None or (day is not None and day >= f.taken_from))
            and (f.taken_to is None or (day is not None and day <= f.taken_to))
            and (not f.cameras or camera in f.cameras or (doc.camera_make or "").lower() in f.cameras)
            and (not f.folders or (doc.folder is not None and any(
                folder == "" or doc.folder == folder or doc.folder.startswith(folder + "/") for folder in f.folders)))
            and (not f.types or doc.file_type in f.types)
            and (not f.min_width or doc.width >= f.min_width) and (not f.min_height or doc.height >= f.min_height))


CASES = [
    Filters.of(taken_from=date(2019, 1, 1)),
    Filters.of(taken_to=date(2018, 5, 15)),                                  # inclusive: the 15th counts
    Filters.of(taken_from=date(2019, 3, 15), taken_to=date(2019, 3, 15)),
    Filters.of(cameras=["canon eos 5d"]),
    Filters.of(cameras=["NIKON  Corporation"]),                              # a make, any case and spacing
    Filters.of(cameras=["Canon EOS 5D", "nikon d750"]),
    Filters.of(folders=["trips/2019"]),                                      # and everything under it
    Filters.of(folders=["trips/2019/alps", "home"]),
    Filters.of(folders=["/trips/"]),
    Filters.of(folders=[""]),                                                # every folder, not uploads
    Filters.of(types=["png"]),
    Filters.of(min_width=1200, min_height=500),
    Filters.of(tags=["even"], folders=["trips"], taken_from=date(2018, 1, 1), cameras=["canon"]),
    Filters.of(cameras=["leica"]),                                           # unknown values: nothing
    Filters.of(folders=["trips/201"]),                                       # a prefix of a name is not a folder
    Filters.of(types=["tiff"]),
]


def test_every_search_and_listing_keeps_exactly_the_documents_that_meet_the_filters(store):
    store.upsert(DOCS)
    for f in CASES:
        expected = {d.id for d in DOCS if meets(d, f)}
        knn = store.knn(unit(1.0), descriptor=DESC, filters=f, limit=50)
        assert {h.document.id for h in knn.hits} == expected, f
        assert knn.total == len(expected), f
        words = store.keyword("photo", filters=f, limit=50)
        assert {h.document.id for h in words.hits} == expected, f
        assert words.total == len(expected), f
        listed = store.browse(f, limit=50)
        assert {h.document.id for h in listed.hits} == expected, f
        assert listed.total == len(expected), f


def test_a_filtered_page_is_full_when_enough_documents_match(store):
    """The filter applies inside the kNN: the matching documents are not crowded out by nearer ones."""
    many = [Document(**{**photo(0).__dict__, "id": f"n{i:03d}", "path": f"/n/{i}.jpg", "content_hash": f"n{i}",
                        "folder": "rare" if i % 25 == 0 else "common",
                        "vector": unit(1.0, 0.01 * (i % 25 != 0) + i / 1000)}) for i in range(200)]
    store.upsert(many)
    page = store.knn(unit(1.0), descriptor=DESC, filters=Filters.of(folders=["rare"]), limit=5)
    assert len(page.hits) == 5 and page.total == 8
    assert all(h.document.folder == "rare" for h in page.hits)
    scores = [h.score for h in page.hits]
    assert scores == sorted(scores, reverse=True)


def test_documents_carry_their_metadata_through_the_store(store):
    store.upsert(DOCS)
    got = store.get("id001")
    assert (got.taken, got.camera, got.file_type, got.folder, got.meta_version) == (
        "2019-02-15T10:00:00+02:00", "Canon EOS 5D", "png", "trips/2019/alps", 1)
    assert store.get("id004").camera == "NIKON D750"
    hit = store.knn(unit(1.0, 0.1), descriptor=DESC, limit=1).hits[0]
    assert hit.document.photo() == DOCS[1].photo()
    entries = {e.id: e for e in store.entries()}
    assert entries["id001"].meta_version == 1


def test_browse_orders_and_pages(store):
    store.upsert(DOCS)
    by_taken = [h.document.id for h in store.browse(sort="taken", limit=50).hits]
    dated = sorted((d for d in DOCS if d.taken), key=lambda d: (d.taken, d.indexed_at), reverse=True)
    undated = sorted((d for d in DOCS if not d.taken), key=lambda d: d.indexed_at, reverse=True)
    assert by_taken == [d.id for d in dated + undated]
    assert [h.document.id for h in store.browse(sort="indexed", limit=50).hits] == [f"id{i:03d}" for i in
                                                                                    reversed(range(N))]
    by_name = [h.document.filename for h in store.browse(sort="name", limit=50).hits]
    assert by_name == sorted(by_name)
    pages = [h.document.id for offset in range(0, N, 5) for h in store.browse(offset=offset, limit=5).hits]
    assert pages == by_taken
    with pytest.raises(ValueError):
        store.browse(sort="size")


def test_facets_count_what_the_filters_leave(store):
    store.upsert(DOCS)
    facets = store.facets()
    assert facets["camera"] == [("Canon EOS 5D", 4), ("NIKON D750", 4)]
    assert facets["folder"] == [("trips/2019", 4), ("trips/2019/alps", 4), ("home", 3)]
    assert facets["tags"] == [("even", 6), ("odd", 6)]
    years = {d.taken[:4] for d in DOCS if d.taken}
    assert facets["year"] == sorted(((y, sum(1 for d in DOCS if d.taken and d.taken[:4] == y)) for y in years),
                                    key=lambda yc: (-yc[1], yc[0]))
    narrowed = store.facets(Filters.of(cameras=["canon"]), limit=1)
    assert narrowed["camera"] == [("Canon EOS 5D", 4)]
    assert len(narrowed["folder"]) == 1
    assert store.facets(Filters.of(cameras=["leica"])) == {"tags": [], "camera": [], "folder": [], "year": [],
                                                             "labels": []}


def test_documents_written_before_metadata_have_none_and_match_no_metadata_filter(store):
    old = Document(**{**photo(0).__dict__, "taken": None, "camera_make": None, "camera_model": None,
                      "file_type": None, "folder": None, "meta_version": 0})
    store.upsert([old])
    assert store.get(old.id).meta_version == 0
    assert store.knn(unit(1.0), descriptor=DESC, filters=Filters.of(folders=[""])).hits == []
    assert [h.document.id for h in store.knn(np.asarray(unit(1.0)), descriptor=DESC).hits] == [old.id]


def test_filters_read_in_python_agree_with_the_plain_reading():
    """Filters.matches (the duplicates report filters the members it has read) means what the stores do."""
    for f in CASES:
        assert [d.id for d in DOCS if f.matches(d)] == [d.id for d in DOCS if meets(d, f)], f
