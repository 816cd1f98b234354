"""Refining from marked images (POST /api/search/refine), region search (crop) and query expansion
(expand), through Flask's test client on a real embedded store indexed by the real indexer with the fast
descriptor. Expected rankings are computed here from the stored vectors with numpy."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from backend.feedback import GAMMA

from .test_api import app, assert_error, client, ids_by_name, indexed, jpeg_bytes, upload  # noqa: F401

REFINE = "/api/search/refine"


def unit(v):
    return v / np.linalg.norm(v)


def store_of(client):
    return client.application.extensions["lookalike"].store


def ranking(client, vector, exclude=(), limit=100) -> list[str]:
    store = store_of(client)
    return [h.document.id for h in store.knn(vector, descriptor=store.descriptor(), limit=limit,
                                             exclude=list(exclude)).hits]


def png_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- refine ------------------------------------------------------------------------------------------

def test_refine_ranks_by_the_rocchio_vector_and_leaves_out_every_marked_image(client):
    ids = [r["id"] for r in ids_by_name(client).values()]
    positive, negative = ids[:3], ids[3:5]
    body = client.post(REFINE, json={"positive": positive, "negative": negative, "limit": 100}).get_json()
    got = [r["id"] for r in body["results"]]
    assert body["total"] == 12 - 5 and len(got) == 7 and not set(got) & set(positive + negative)
    vectors = store_of(client).vectors(ids)
    expected_vector = unit(np.mean([vectors[i] for i in positive], axis=0)
                           - GAMMA * np.mean([vectors[i] for i in negative], axis=0))
    assert got == ranking(client, expected_vector, positive + negative)
    scores = [r["score"] for r in body["results"]]
    np.testing.assert_allclose(scores[0], float(vectors[got[0]] @ expected_vector), atol=1e-5)
    assert body["query"] == {"type": "refine", "positive": positive, "negative": negative, "image": False,
                             "tags": [], "limit": 100, "offset": 0, "min_score": None, "crop": None, "expand": 0,
                             "collapse": None}
    # the negatives push results away: the same positives alone rank otherwise
    alone = [r["id"] for r in client.post(REFINE, json={"positive": positive, "limit": 100}).get_json()["results"]]
    assert len(alone) == 9 and set(negative) <= set(alone)


def test_refine_pages_filters_and_min_score(client):
    ids = [r["id"] for r in ids_by_name(client).values()]
    request = {"positive": ids[:2], "negative": ids[2:3]}
    full = [r["id"] for r in client.post(REFINE, json={**request, "limit": 100}).get_json()["results"]]
    pages = [r["id"] for offset in (0, 3, 6)
             for r in client.post(REFINE, json={**request, "limit": 3, "offset": offset}).get_json()["results"]]
    assert pages == full
    cats = client.post(REFINE + "?tags=cats", json=request).get_json()
    assert cats["results"] and all(r["tags"] == ["cats"] for r in cats["results"])
    high = client.post(REFINE, json={**request, "min_score": 0.99}).get_json()
    assert all(r["score"] >= 0.99 for r in high["results"]) and high["total"] < len(full)


def test_an_uploaded_picture_counts_as_a_positive(client, image_folder):
    data = (image_folder / "cats" / "photo_1.jpg").read_bytes()
    by_image = client.post("/api/search/image?limit=100", data=upload(data)).get_json()["results"]
    refined = client.post(REFINE, json={"image_base64": b64(data), "limit": 100}).get_json()
    assert [r["id"] for r in refined["results"]] == [r["id"] for r in by_image]
    assert refined["query"]["image"] is True and refined["query"]["positive"] == []
    # with a negative beside it, that image is gone from the results
    negative = by_image[1]["id"]
    refined = client.post(REFINE, json={"image_base64": b64(data), "negative": [negative], "limit": 100}).get_json()
    assert negative not in {r["id"] for r in refined["results"]} and refined["total"] == 11


def test_refine_refusals(client):
    ids = [r["id"] for r in ids_by_name(client).values()]
    unknown = ["0123456789abcdef0123", "not-an-id"]
    body = assert_error(client.post(REFINE, json={"positive": [ids[0], *unknown], "negative": [ids[1]]}), 404,
                        "not_found")
    assert body["unknown_ids"] == unknown and all(u in body["error"]["message"] for u in unknown)
    assert_error(client.post(REFINE, json={"negative": ids[:2]}), 400, "missing_positive")
    assert_error(client.post(REFINE, json={}), 400, "missing_positive")
    many = [f"{i:020x}" for i in range(51)]
    assert "at most 50" in assert_error(client.post(REFINE, json={"positive": many}), 400)["error"]["message"]
    assert "at most 50" in assert_error(client.post(REFINE, json={"positive": many[:30], "negative": many[30:]}),
                                        400)["error"]["message"]
    assert "both" in assert_error(client.post(REFINE, json={"positive": ids[:2], "negative": ids[1:3]}),
                                  400)["error"]["message"]
    for bad in ({"positive": ids[0]}, {"positive": [1]}, {"positive": None}, {"positive": ids[:1], "negative": {}}):
        assert_error(client.post(REFINE, json=bad), 400, "bad_parameter")
    assert_error(client.post(REFINE, json={"positive": ids[:1], "limt": 5}), 400, "bad_parameter")
    assert_error(client.post(REFINE, json={"positive": ids[:1], "limit": "5"}), 400, "bad_parameter")
    assert_error(client.post(REFINE, json={"positive": ids[:1], "expand": 11}), 400, "bad_parameter")
    assert_error(client.post(REFINE, json={"positive": ids[:1], "crop": [0, 0, 1, 1]}), 400, "bad_parameter")
    assert_error(client.post(REFINE, json={"image_base64": "%%%"}), 400, "bad_base64")
    assert_error(client.post(REFINE, json={"image_base64": b64(b"not a picture")}), 415, "unsupported_image")
    assert_error(client.post(REFINE, data="[1, 2]", content_type="application/json"), 400, "bad_json")
    assert_error(client.post(REFINE, data={"positive": ids[0]}), 415, "unsupported_media_type")
    assert_error(client.post(REFINE + "?positive=x", json={"positive": ids[:1]}), 400, "bad_parameter")
    assert_error(client.get(REFINE), 405)


# -- query expansion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3])
def test_expand_adds_the_top_k_to_the_query(client, k):
    store = store_of(client)
    photo = ids_by_name(client)["photo_4.jpg"]["id"]
    vector = store.vectors([photo])[photo]
    top = ranking(client, vector, [photo], limit=k)
    found = store.vectors(top)
    expanded = unit(vector + sum(found[i] for i in top))
    body = client.get(f"/api/images/{photo}/similar?limit=100&expand={k}").get_json()
    assert [r["id"] for r in body["results"]] == ranking(client, expanded, [photo])
    assert body["query"]["expand"] == k
    plain = client.get(f"/api/images/{photo}/similar?limit=100&expand=0").get_json()
    assert [r["id"] for r in plain["results"]] == ranking(client, vector, [photo])


def test_expand_is_checked(client, image_folder):
    photo = ids_by_name(client)["photo_4.jpg"]["id"]
    for value in ("-1", "11", "two", "1.5"):
        assert_error(client.get(f"/api/images/{photo}/similar?expand={value}"), 400, "bad_parameter")
    data = (image_folder / "cats" / "photo_1.jpg").read_bytes()
    body = client.post("/api/search/image?expand=2", data=upload(data)).get_json()
    assert body["query"]["expand"] == 2 and body["results"]


# -- region search (crop) ----------------------------------------------------------------------------

def test_a_crop_searches_by_that_region_alone(client):
    data = jpeg_bytes(7, (96, 64))
    left = png_bytes(Image.open(io.BytesIO(data)).convert("RGB").crop((0, 0, 48, 64)))
    cropped = client.post("/api/search/image?limit=100&crop=0,0,0.5,1", data=upload(data)).get_json()
    expected = client.post("/api/search/image?limit=100", data=upload(left, "left.png")).get_json()
    whole = client.post("/api/search/image?limit=100", data=upload(data)).get_json()
    assert [r["id"] for r in cropped["results"]] == [r["id"] for r in expected["results"]]
    np.testing.assert_allclose([r["score"] for r in cropped["results"]],
                               [r["score"] for r in expected["results"]], atol=2e-3)
    assert [r["score"] for r in cropped["results"]] != [r["score"] for r in whole["results"]]
    assert cropped["query"]["crop"] == [0, 0, 0.5, 1]
    # the same as a JSON array, and as a form field
    as_json = client.post("/api/search/image?limit=100", json={"image_base64": b64(data), "crop": [0, 0, 0.5, 1]})
    assert [r["id"] for r in as_json.get_json()["results"]] == [r["id"] for r in expected["results"]]
    as_form = client.post("/api/search/image?limit=100", data=upload(data, crop="0,0,0.5,1"))
    assert [r["id"] for r in as_form.get_json()["results"]] == [r["id"] for r in expected["results"]]


def test_the_crop_is_applied_after_exif_rotation(client):
    upright = Image.open(io.BytesIO(jpeg_bytes(9, (64, 96)))).convert("RGB")     # portrait, as seen
    stored = upright.transpose(Image.Transpose.ROTATE_90)                          # landscape on disk
    exif = Image.Exif()
    exif[0x0112] = 6                                                               # "rotate 90 clockwise to view"
    out = io.BytesIO()
    stored.save(out, "PNG", exif=exif)
    top = png_bytes(upright.crop((0, 0, 64, 48)))
    cropped = client.post("/api/search/image?limit=100&crop=0,0,1,0.5", data=upload(out.getvalue(), "r.png"))
    expected = client.post("/api/search/image?limit=100", data=upload(top, "top.png"))
    np.testing.assert_allclose([r["score"] for r in cropped.get_json()["results"]],
                               [r["score"] for r in expected.get_json()["results"]], atol=1e-4)


def test_similar_with_a_crop_reads_the_indexed_file(client, image_folder):
    photo = ids_by_name(client)["photo_4.jpg"]["id"]
    whole = client.get(f"/api/images/{photo}/similar?limit=100").get_json()
    full_crop = client.get(f"/api/images/{photo}/similar?limit=100&crop=0,0,1,1").get_json()
    assert [r["id"] for r in full_crop["results"]] == [r["id"] for r in whole["results"]]
    np.testing.assert_allclose([r["score"] for r in full_crop["results"]], [r["score"] for r in whole["results"]],
                               atol=1e-4)
    part = client.get(f"/api/images/{photo}/similar?limit=100&crop=0.5,0.25,0.5,0.5").get_json()
    assert photo not in {r["id"] for r in part["results"]} and part["total"] == 11
    assert [r["score"] for r in part["results"]] != [r["score"] for r in whole["results"]]
    (image_folder / "dogs" / "photo_4.jpg").unlink()
    assert_error(client.get(f"/api/images/{photo}/similar?crop=0,0,0.5,0.5"), 404, "file_missing")


@pytest.mark.parametrize("crop", ["0.5,0.5,0.6,0.1", "0,0,0,1", "0,0,1", "0,0,1,1,1", "a,b,c,d", "-0.1,0,0.5,0.5",
                                  "nan,0,1,1", "0,0,inf,1", ""])
def test_bad_crops_are_400(client, crop):
    photo = ids_by_name(client)["photo_4.jpg"]["id"]
    body = assert_error(client.get(f"/api/images/{photo}/similar?crop={crop}"), 400, "bad_parameter")
    assert "crop must be x,y,w,h" in body["error"]["message"]


def test_bad_json_crops_are_400(client):
    data = b64(jpeg_bytes(3))
    for crop in ([0, 0, 2, 1], [0, 0, 1], [0, 0, True, 1], ["0", 0, 1, 1], True, None, {"x": 0}, [0, 0, 1e308, 1]):
        assert_error(client.post("/api/search/image", json={"image_base64": data, "crop": crop}), 400,
                     "bad_parameter")


# -- on every store --------------------------------------------------------------------------------

def test_refine_on_every_store(store):
    """SearchService.refine through the store contract alone (knn and vectors), on the embedded store and
    on real Elasticsearch servers: the Rocchio ranking, marked images left out, paging, and the re-ranking
    methods reading candidate vectors."""
    from backend.search import NotFound, SearchService

    from .test_stores import DESC, DIMS, doc

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((40, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.upsert([doc(i, vector=vectors[i]) for i in range(40)])
    service = SearchService(store, lambda: None)
    ids = [f"id{i:03d}" for i in range(40)]
    positive, negative = ids[:3], ids[3:5]
    expected = unit(vectors[:3].mean(axis=0) - GAMMA * vectors[3:5].mean(axis=0))
    order = [ids[i] for i in np.argsort(-(vectors @ expected)) if i >= 5]
    page = service.refine(positive, negative, limit=10)
    assert [h.document.id for h in page.hits] == order[:10]
    assert page.total == 35
    assert [h.document.id for h in service.refine(positive, negative, offset=10, limit=10).hits] == order[10:20]
    for method in ("fusion", "classifier"):
        hits = service.refine(positive, negative, limit=35, method=method).hits
        assert sorted(h.document.id for h in hits) == sorted(order) and hits[0].document.id in order[:12]
    with pytest.raises(NotFound) as missing:
        service.refine([ids[0], "nope"], ["gone"])
    assert missing.value.args == ("nope", "gone")
    assert store.descriptor() == DESC
