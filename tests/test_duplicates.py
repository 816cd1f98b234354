"""Duplicates on every backend (the `store` fixture: embedded, embedded with snapshots, Elasticsearch 8 and 9):
links made when pictures are written, reports that stay true through removal, re-indexing and re-tagging,
one group for 300 identical copies, the keeper rule, filters and paging; and moving the other copies aside."""
from __future__ import annotations

import time

import numpy as np
import pytest

from backend import duplicates, near_duplicates
from backend.duplicates import EXACT, NEAR, BadRequest, find_groups, group_of, move_aside
from backend.stores.base import Document, document_id

DESC = "test-descriptor-16d"
DIMS = 16


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def base_vector(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(DIMS))


def made_cosine(score: float) -> float:
    """The vectors' cosine that duplicates.cosine_score turns into `score` (these documents have no signature)."""
    return 1.0 - (1.0 - score) / duplicates.UNSIGNED_SLOPE


def edited(vector: np.ndarray, score: float, seed: int) -> np.ndarray:
    """A unit vector whose near score with `vector` is exactly `score` (an edited copy of the same picture)."""
    cosine = made_cosine(score)
    noise = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
    noise -= (noise @ vector) * vector
    noise = unit(noise)
    return unit(cosine * vector + np.sqrt(1 - cosine ** 2) * noise)


def doc(name: str, vector, *, content: str | None = None, size=(640, 480), nbytes=1000, mtime=1.0,
        tags=("photos",), folder="/photos") -> Document:
    return Document(id=document_id(f"{folder}/{name}.jpg"), vector=vector, filename=f"{name}.jpg",
                    path=f"{folder}/{name}.jpg", tags=list(tags), width=size[0], height=size[1], bytes=nbytes,
                    content_hash=content or f"hash-{name}", descriptor=DESC, indexed_at=time.time(),
                    modified_at=mtime)


def write(store, docs) -> None:
    """What the indexer does with a batch: link it, then write it."""
    duplicates.link(store, docs)
    store.upsert(docs)


def names(group) -> list[str]:
    return [m.document.filename[:-4] for m in group.members]


def report_names(store, **options) -> list[list[str]]:
    """The groups' names; near at 0.9 unless asked otherwise (these synthetic documents have no signature, so
    their near score comes from their vectors' cosine, which the collection below is built around)."""
    if options.get("level", NEAR) == NEAR:
        options.setdefault("min_score", 0.9)
    return [names(g) for g in find_groups(store, **options).groups]


@pytest.fixture
def collection(store):
    """An original with two edited copies and a byte-identical copy; an unrelated pair of near copies;
    pictures that resemble each other only loosely (other shots of a scene); and unrelated ones."""
    a, b = base_vector(1), base_vector(2)
    write(store, [doc("a", a, size=(1000, 800), nbytes=5000, mtime=5.0),
                  doc("b", b, size=(800, 600))])
    write(store, [doc("a-small", edited(a, 0.97, 3), size=(500, 400), nbytes=900),
                  doc("a-copy", a, content="hash-a", size=(1000, 800), nbytes=5000, mtime=2.0),   # same bytes, older
                  doc("a-crop", edited(a, 0.93, 4), size=(950, 760), nbytes=4000)])
    write(store, [doc("b-jpeg", edited(b, 0.95, 5), size=(800, 600), nbytes=700),
                  doc("a-scene", edited(a, 0.85, 6)),      # another shot of the scene: above the floor, below 0.90
                  doc("other", base_vector(7))])
    return store


def test_near_groups_keeper_first_and_scores(collection):
    report = find_groups(collection, level=NEAR, min_score=0.9)
    assert [names(g) for g in report.groups] == [["a-copy", "a", "a-small", "a-crop"], ["b", "b-jpeg"]]
    assert report.total == 2 and report.pictures == 6
    first = report.groups[0]
    # most pixels, then the largest file, then the oldest: a-copy and a tie on both, a-copy is older
    assert first.keeper.document.filename == "a-copy.jpg" and first.keeper.score == 1.0
    scores = [m.score for m in first.members]
    assert scores[:2] == [1.0, 1.0] and scores[2:] == pytest.approx([0.97, 0.93], abs=1e-4)


def test_exact_is_the_same_bytes(collection):
    assert report_names(collection, level=EXACT) == [["a-copy", "a"]]


def test_min_score_overrides_the_default_and_the_floor_is_kept(collection):
    assert report_names(collection, level=NEAR, min_score=0.94) == [["a-copy", "a", "a-small"], ["b", "b-jpeg"]]
    assert report_names(collection, level=NEAR, min_score=0.82) == [["a-copy", "a", "a-small", "a-crop", "a-scene"],
                                                                      ["b", "b-jpeg"]]
    with pytest.raises(BadRequest, match="from 0.6 to 1"):
        find_groups(collection, level=NEAR, min_score=0.3)
    with pytest.raises(BadRequest, match="level must be one of"):
        find_groups(collection, level="similar")


def test_removing_reindexing_and_retagging_keep_the_report_true(collection):
    ids = {d.filename[:-4]: d.id for d in collection.documents([e.id for e in collection.entries()]).values()}
    collection.delete([ids["a-small"]])
    assert report_names(collection) == [["a-copy", "a", "a-crop"], ["b", "b-jpeg"]]
    # b is re-indexed with new content (the file was replaced by another picture): its pair goes
    write(collection, [doc("b", base_vector(8), content="hash-b-new", size=(800, 600))])
    assert report_names(collection) == [["a-copy", "a", "a-crop"]]
    # re-tagging rewrites the document from what is stored, links included
    crop = collection.get(ids["a-crop"], with_vector=True)
    crop.tags = ["kept"]
    collection.upsert([crop])
    assert report_names(collection) == [["a-copy", "a", "a-crop"]]
    assert report_names(collection, tags=["kept"]) == []          # one member with the tag is no group


def test_filters_and_paging(collection):
    assert report_names(collection, limit=1) == [["a-copy", "a", "a-small", "a-crop"]]
    page = find_groups(collection, offset=1, limit=1, min_score=0.9)
    assert [names(g) for g in page.groups] == [["b", "b-jpeg"]] and page.total == 2
    assert report_names(collection, under=["/photos/b"]) == []
    assert report_names(collection, under=["/elsewhere"]) == []
    assert report_names(collection, tags=["photos"]) == report_names(collection)


def test_the_group_of_one_picture(collection):
    by_name = {d.filename[:-4]: d for d in collection.documents([e.id for e in collection.entries()]).values()}
    group = group_of(collection, by_name["a-crop"].id, min_score=0.9)
    assert names(group) == ["a-copy", "a", "a-small", "a-crop"]
    assert names(group_of(collection, by_name["a"].id, level=EXACT)) == ["a-copy", "a"]
    assert group_of(collection, by_name["other"].id) is None
    assert group_of(collection, by_name["a-crop"].id, level=EXACT) is None
    assert group_of(collection, "0" * 20) is None


def test_300_identical_copies_are_one_group_without_quadratic_links(store):
    vector = base_vector(11)
    copies = [doc(f"copy{i:03d}", vector, content="hash-same", mtime=float(i)) for i in range(300)]
    for start in range(0, 300, 16):
        write(store, copies[start:start + 16])
    links = sum(len(d.near or ()) for d in store.documents([c.id for c in copies]).values())
    assert links <= 300 * duplicates.LINKS_PER_PICTURE
    for level in (EXACT, NEAR):
        report = find_groups(store, level=level)
        assert report.total == 1 and len(report.groups[0].members) == 300
        assert report.groups[0].keeper.document.filename == "copy000.jpg"     # the oldest of equals
    assert len(group_of(store, copies[150].id).members) == 300


def test_documents_written_before_links_have_none_until_linked(store):
    old = doc("old", base_vector(12))
    store.upsert([old])                               # written without links, as before this feature
    assert store.get(old.id).near is None
    assert [e.linked for e in store.entries()] == [False]
    write(store, [doc("new", edited(base_vector(12), 0.96, 13))])
    assert report_names(store) == [["new", "old"]]      # equal in all but the path


def test_move_aside_keeps_the_relative_path_and_never_overwrites(tmp_path):
    root, aside = tmp_path / "photos", tmp_path / "aside"
    (root / "2019").mkdir(parents=True)
    first, second = root / "2019" / "x.jpg", root / "x.jpg"
    first.write_bytes(b"first")
    second.write_bytes(b"second")
    (aside / "2019").mkdir(parents=True)
    (aside / "2019" / "x.jpg").write_bytes(b"already there")
    moved = move_aside(first, aside, root)
    assert moved == aside / "2019" / "x (2).jpg" and moved.read_bytes() == b"first" and not first.exists()
    assert (aside / "2019" / "x.jpg").read_bytes() == b"already there"
    elsewhere = move_aside(second, aside, None)        # no root holds it: its whole path is kept
    assert elsewhere == aside / second.relative_to("/") and elsewhere.read_bytes() == b"second"


# -- through the indexer and the command line ----------------------------------------------------------

def test_the_indexer_links_new_pictures_and_documents_indexed_before_links(tmp_path, fast_extractor):
    from backend.imaging import Limits
    from backend.ingest import Indexer
    from backend.stores.embedded import EmbeddedStore
    from indexer.scan import scan

    from .conftest import picture

    root = tmp_path / "photos"
    root.mkdir()
    picture(1).save(root / "one.png")
    (root / "copy.png").write_bytes((root / "one.png").read_bytes())
    picture(2).save(root / "two.png")
    with EmbeddedStore(tmp_path / "index.sqlite3") as store:
        indexer = Indexer(store, fast_extractor, Limits(), batch_size=2)
        indexer.run(scan([root]))
        assert report_names(store, level=EXACT) == [["one", "copy"]]      # the older file first
        # as a store written before links were kept: every document unlinked
        store.upsert([Document(**{**vars(d), "near": None}) for d in
                      (store.get(e.id, with_vector=True) for e in store.entries())])
        assert store.near_pairs(duplicates.LINK_FLOOR) == [] and not any(e.linked for e in store.entries())
        summary = indexer.run(scan([root]))
        assert (summary.linked, summary.indexed, summary.skipped) == (3, 0, 3)
        assert report_names(store, level=NEAR, min_score=0.99) == [["one", "copy"]]
        assert indexer.run(scan([root])).linked == 0

        # as a store written by the version with 40 x 40 signatures: the next run reads the files again for
        # the current signature and links them again (keeping their vectors)
        store.upsert([Document(**{**vars(d), "signature": bytes(1600), "meta_version": 1}) for d in
                      (store.get(e.id, with_vector=True) for e in store.entries())])
        summary = indexer.run(scan([root]))
        assert (summary.indexed, summary.reused) == (3, 3)
        docs = store.documents([e.id for e in store.entries()])
        assert all(near_duplicates.is_current(d.signature) and d.near is not None for d in docs.values())
        assert report_names(store, level=NEAR, min_score=0.99) == [["one", "copy"]]


def test_the_command_line_reports_and_moves_the_other_copies_aside(tmp_path, fast_env):
    from .conftest import picture
    from .test_indexer import cli, last_json

    root, aside = tmp_path / "photos", tmp_path / "aside"
    (root / "2019").mkdir(parents=True)
    picture(1, size=(200, 150)).save(root / "big.png")
    picture(1, size=(100, 75)).save(root / "2019" / "small.png")    # the same picture, smaller
    (root / "2019" / "same.png").write_bytes((root / "big.png").read_bytes())
    picture(2).save(root / "other.png")
    (aside / "2019").mkdir(parents=True)
    (aside / "2019" / "same.png").write_bytes(b"a file of the user's that must stay")
    assert cli(fast_env, "index", str(root)).returncode == 0

    exact = cli(fast_env, "duplicates", "--level", "exact", "--json")
    assert exact.returncode == 0, exact.stderr
    report = last_json(exact.stdout)
    assert [[m["path"] for m in g["members"]] for g in report["groups"]] == \
        [[str(root / "big.png"), str(root / "2019" / "same.png")]]
    assert report["groups"][0]["members"][0]["keeper"] is True
    assert {"id", "path", "width", "height", "bytes", "score"} <= report["groups"][0]["members"][0].keys()

    refused = cli(fast_env, "duplicates", "--min-score", "0.2")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: min_score")

    moved = cli(fast_env, "duplicates", "--level", "exact", "--under", str(root), "--move-to", str(aside), "--json")
    assert moved.returncode == 0, moved.stderr
    assert [m["to"] for m in last_json(moved.stdout)["moved"]] == [str(aside / "2019" / "same (2).png")]
    assert (aside / "2019" / "same.png").read_bytes() == b"a file of the user's that must stay"
    assert (aside / "2019" / "same (2).png").read_bytes() == (root / "big.png").read_bytes()
    assert sorted(p.name for p in root.rglob("*.png")) == ["big.png", "other.png", "small.png"]
    after = last_json(cli(fast_env, "duplicates", "--level", "exact", "--json").stdout)
    assert after["groups"] == [] and last_json(cli(fast_env, "stats", "--json").stdout)["count"] == 3


# -- the API --------------------------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path, fast_extractor):
    """The API over twelve unrelated pictures (stored vectors of the app's descriptor) and copies of two of
    them: photo_0 with two edited copies, photo_1 with a byte-identical one."""
    from backend import create_app
    from backend.stores import open_store

    from .test_api import make_settings

    settings = make_settings(tmp_path)
    rng = np.random.default_rng(21)
    vectors = [unit(rng.standard_normal(512)) for _ in range(12)]

    def picture_doc(name, vector, content=None, tags=("photos",), size=(1000, 800)):
        d = doc(name, vector, content=content, tags=tags, size=size)
        d.descriptor, d.filename = fast_extractor.descriptor_id, d.filename.replace(".jpg", ".png")
        return d

    with open_store(settings) as store:
        write(store, [picture_doc(f"photo_{i}", v) for i, v in enumerate(vectors)])
        write(store, [picture_doc("photo_0 copy", edited512(vectors[0], 0.985, 22), tags=(), size=(500, 400)),
                      picture_doc("photo_0 again", edited512(vectors[0], 0.975, 23), tags=(), size=(500, 400)),
                      picture_doc("photo_1 copy", vectors[1], content="hash-photo_1", tags=())])
    app = create_app(settings, load_model=False, extractor=fast_extractor)
    return app.test_client()


def edited512(vector: np.ndarray, score: float, seed: int) -> np.ndarray:
    cosine = made_cosine(score)
    noise = np.random.default_rng(seed).standard_normal(len(vector)).astype(np.float32)
    noise = unit(noise - (noise @ vector) * vector)
    return unit(cosine * vector + np.sqrt(1 - cosine ** 2) * noise)


def test_api_reports_groups_largest_first_with_the_keeper_first(api):
    body = api.get("/api/duplicates").get_json()
    assert body["total"] == 2 and body["pictures"] == 5 and body["query"]["min_score"] == duplicates.NEAR_MIN_SCORE
    assert [g["size"] for g in body["groups"]] == [3, 2]
    first = body["groups"][0]["members"]
    assert [m["keeper"] for m in first] == [True, False, False]
    assert [m["filename"] for m in first] == ["photo_0.png", "photo_0 copy.png", "photo_0 again.png"]
    assert [m["score"] for m in first] == pytest.approx([1.0, 0.985, 0.975], abs=1e-4)
    assert {"id", "path", "width", "height", "bytes", "score", "thumbnail_url", "content_hash"} <= first[0].keys()
    second = api.get("/api/duplicates?limit=1&offset=1").get_json()
    assert [m["filename"] for m in second["groups"][0]["members"]] == ["photo_1 copy.png", "photo_1.png"]
    assert second["total"] == 2
    exact = api.get("/api/duplicates?level=exact").get_json()
    assert [g["size"] for g in exact["groups"]] == [2] and exact["query"]["min_score"] is None
    assert api.get("/api/duplicates?tags=photos").get_json()["total"] == 0      # the copies have no tags


@pytest.mark.parametrize("query, message", [
    ("min_score=0.3", "from 0.6 to 1"), ("level=similar", "level must be"), ("level=exact&min_score=0.9", "near only"),
    ("limit=0", "limit"), ("sort=size", "unknown query parameter"), ("min_score=x", "min_score")])
def test_api_refuses_what_it_cannot_answer(api, query, message):
    response = api.get(f"/api/duplicates?{query}")
    assert response.status_code == 400 and message in response.get_json()["error"]["message"]


def test_api_group_of_one_image(api):
    members = api.get("/api/duplicates").get_json()["groups"][0]["members"]
    group = api.get(f"/api/images/{members[2]['id']}/duplicates").get_json()["group"]
    assert [m["id"] for m in group["members"]] == [m["id"] for m in members]
    alone = document_id("/photos/photo_5.jpg")
    assert api.get(f"/api/images/{alone}/duplicates").get_json()["group"] is None
    assert api.get(f"/api/images/{'0' * 20}/duplicates").status_code == 404
    assert api.get(f"/api/images/{alone}/duplicates?level=near&min_score=2").status_code == 400


def test_collapse_folds_copies_into_the_best_ranked_result(api):
    copy = document_id("/photos/photo_0 copy.jpg")
    plain = api.get(f"/api/images/{copy}/similar?limit=14").get_json()["results"]
    names = [r["filename"] for r in plain]
    assert names[:2] == ["photo_0.png", "photo_0 again.png"] and "copies" not in plain[0]
    folded = api.get(f"/api/images/{copy}/similar?limit=14&collapse=near").get_json()
    assert folded["query"]["collapse"] == "near"
    results = folded["results"]
    shown = [r["filename"] for r in results]
    # the image itself is left out of "similar"; its original and other copy fold into one result
    assert len(shown) == 12 and shown[0] == "photo_0.png"
    assert [c["filename"] for c in results[0]["copies"]] == ["photo_0 again.png"]
    ones = [r for r in results if r["filename"] in ("photo_1.png", "photo_1 copy.png")]
    assert len(ones) == 1 and len(ones[0]["copies"]) == 1
    # paging counts folded results: the pages join up to the whole folded list
    pages = [api.get(f"/api/images/{copy}/similar?limit=5&offset={o}&collapse=near").get_json()["results"]
             for o in (0, 5, 10)]
    assert [r["filename"] for p in pages for r in p] == shown
    assert len(api.get("/api/search?q=photo&collapse=near&limit=50").get_json()["results"]) == 12
    assert len(api.get("/api/search?q=photo&limit=50").get_json()["results"]) == 15
    assert api.get("/api/search?q=photo&collapse=all").status_code == 400
