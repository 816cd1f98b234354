"""Filters on every search, browsing and facets through the API (Flask's test client, a real embedded store
indexed by the real Indexer with the fast VGG16, pictures carrying EXIF written by benchmarks.exif_photos)."""
from __future__ import annotations

import base64
import io

import pytest

from backend import create_app
from backend.config import Settings
from backend.ingest import Indexer
from backend.stores import open_store
from benchmarks.exif_photos import exif_bytes
from indexer.scan import scan

from .conftest import FAST_ENV, picture

# (folder, camera make, model, date taken) of twelve pictures
CAMERAS = [("Canon", "Canon EOS 5D"), ("NIKON CORPORATION", "NIKON D750"), (None, None)]


def jpeg(i: int) -> bytes:
    make, model = CAMERAS[i % 3]
    taken = None if i == 11 else f"20{19 + i % 3}:0{1 + i % 9}:1{i % 10} 12:00:00"
    out = io.BytesIO()
    picture(i, (96 - 4 * i, 64)).save(out, "JPEG", quality=90, exif=exif_bytes(make, model, taken))
    return out.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory, fast_extractor):
    root = tmp_path_factory.mktemp("browse")
    for i in range(12):
        folder = root / "photos" / ("trips/alps" if i % 4 == 0 else "trips" if i % 4 == 1 else "home")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:02d}.jpg").write_bytes(jpeg(i))
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(root / "data")})
    with open_store(settings) as store:
        assert Indexer(store, fast_extractor).run(scan([root / "photos"], tags_from_folders=True)).indexed == 12
    app = create_app(settings, extractor=fast_extractor)
    yield app.test_client()
    app.extensions["lookalike"].store.close()


def names(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [r["filename"] for r in response.get_json()["results"]]


def test_browse_lists_every_image_newest_taken_first_and_pages(client):
    body = client.get("/api/images?limit=100").get_json()
    assert body["total"] == 12 and body["query"]["sort"] == "taken"
    taken = [r["taken"] for r in body["results"]]
    assert taken[-1] is None and taken[:-1] == sorted(taken[:-1], reverse=True)
    first = body["results"][0]
    assert {"taken", "camera", "camera_make", "camera_model", "type", "folder"} <= first.keys()
    paged = names(client.get("/api/images?limit=5")) + names(client.get("/api/images?limit=5&offset=5")) + \
        names(client.get("/api/images?limit=5&offset=10"))
    assert paged == [r["filename"] for r in body["results"]]
    assert names(client.get("/api/images?sort=name&limit=3")) == ["p00.jpg", "p01.jpg", "p02.jpg"]


def test_an_image_shows_its_metadata(client):
    listed = client.get("/api/images?camera=canon&folder=trips/alps&limit=1").get_json()["results"][0]
    meta = client.get(f"/api/images/{listed['id']}").get_json()
    assert (meta["filename"], meta["taken"], meta["camera"], meta["type"], meta["folder"]) == (
        "p00.jpg", "2019-01-10T12:00:00", "Canon EOS 5D", "jpeg", "trips/alps")


def test_every_search_takes_the_filters(client):
    every = client.get("/api/images?limit=100").get_json()["results"]
    wanted = {r["filename"] for r in every if r["taken"] and "2020-01-01" <= r["taken"][:10] <= "2020-12-31"
              and (r["folder"] == "trips" or r["folder"].startswith("trips/"))}
    assert wanted   # the case is not empty
    query = "taken_from=2020-01-01&taken_to=2020-12-31&folder=trips"
    some = every[0]["id"]
    upload = {"image": (io.BytesIO(jpeg(3)), "q.jpg")}
    assert set(names(client.post(f"/api/search/image?{query}&limit=100", data=upload))) == wanted
    assert set(names(client.get(f"/api/images/{some}/similar?{query}&limit=100"))) == wanted - {every[0]["filename"]}
    assert set(names(client.get(f"/api/search?q=p&{query}&limit=100"))) == wanted
    assert set(names(client.get(f"/api/search?{query}&limit=100"))) == wanted        # filters alone
    refine = client.post("/api/search/refine?limit=100", json={
        "positive": [some], "taken_from": "2020-01-01", "taken_to": "2020-12-31", "folder": ["trips"]})
    assert set(names(refine)) == wanted - {every[0]["filename"]}
    as_json = client.post("/api/search/image", json={"image_base64": base64.b64encode(jpeg(3)).decode(),
                                                     "camera": ["NIKON D750"], "type": "jpeg", "limit": 100})
    assert set(names(as_json)) == {r["filename"] for r in every if r["camera"] == "NIKON D750"}
    assert as_json.get_json()["query"]["camera"] == ["nikon d750"]


def test_unknown_values_match_nothing(client):
    for query in ("camera=Leica", "folder=nowhere", "type=tiff", "taken_from=2999-01-01", "min_width=100000",
                  "tags=unicorns"):
        body = client.get(f"/api/images?{query}").get_json()
        assert (body["total"], body["results"]) == (0, []), query


@pytest.mark.parametrize("query, names_it", [
    ("taken_from=2021-13-01", "taken_from"), ("taken_to=yesterday", "taken_to"), ("taken_from=2021-1-1", "taken_from"),
    ("taken_from=2021-05-01&taken_to=2021-04-01", "taken_from"), ("min_width=-1", "min_width"),
    ("min_height=wide", "min_height"), ("sort=size", "sort"), ("camera=" + "x" * 201, "camera"),
    ("&".join(["folder=a"] * 21), "folder"), ("type=%00", "type"), ("kamera=Canon", "kamera"),
])
def test_malformed_filters_are_400s_that_name_the_parameter(client, query, names_it):
    for path in ("/api/images", "/api/facets", "/api/search?q=p"):
        response = client.get(f"{path}{'&' if '?' in path else '?'}{query}")
        if names_it == "sort" and path != "/api/images":
            names_it_here = "sort"          # only browsing takes sort: elsewhere it is unknown
        else:
            names_it_here = names_it
        assert response.status_code == 400, (path, query)
        assert names_it_here in response.get_json()["error"]["message"]


def test_facets_count_for_the_current_filters(client):
    facets = client.get("/api/facets").get_json()
    assert facets["camera"] == [{"value": "Canon EOS 5D", "count": 4}, {"value": "NIKON D750", "count": 4}]
    assert {f["value"]: f["count"] for f in facets["folder"]} == {"trips/alps": 3, "trips": 3, "home": 6}
    assert sum(f["count"] for f in facets["year"]) == 11
    assert {f["value"] for f in facets["tags"]} == {"trips", "alps", "home"}
    narrowed = client.get("/api/facets?camera=canon&folder=home").get_json()
    assert narrowed["camera"] == [{"value": "Canon EOS 5D", "count": 2}]
    assert narrowed["filters"]["camera"] == ["canon"]
