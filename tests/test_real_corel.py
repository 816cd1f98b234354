"""With the real ImageNet weights on Corel-1k (skipped, saying why, without them)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from backend.factory import open_engine
from backend.stores import open_store

from .conftest import ROOT

pytestmark = [pytest.mark.real_weights, pytest.mark.real_data]


def test_all_1000_images_indexed_with_their_class_as_tag(corel_index):
    assert (corel_index.first_run["indexed"], corel_index.first_run["failed"]) == (1000, 0)
    with open_store(corel_index.settings) as store:
        assert store.count() == 1000
        counts = dict(store.tag_counts())
    assert len(counts) == 10 and set(counts.values()) == {100}


def test_a_second_run_indexes_nothing(corel_index):
    result = subprocess.run([sys.executable, "-m", "indexer", "index", str(corel_index.root), "--tags-from-folders",
                             "--json"], env=corel_index.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["indexed"], summary["skipped"], summary["failed"]) == (0, 1000, 0)


def test_top_10_of_an_uploaded_photo_are_mostly_its_own_class(corel_index):
    with open(corel_index.root / "labels.csv", newline="") as f:
        labels = {row["path"]: row["label"] for row in csv.DictReader(f)}
    queries = sorted(labels)[::20]                                    # 50 photos, 5 of each class
    assert len(queries) == 50
    with open_engine(corel_index.settings) as engine:
        service = engine.service
        same_class = []
        for rel in queries:
            path = corel_index.root / rel
            page = service.by_image(path.read_bytes(), limit=11, source=rel)
            hits = [h for h in page.hits if h.document.path != str(path.resolve())][:10]
            same_class.append(sum(labels[rel] in h.document.tags for h in hits))
    mean = sum(same_class) / len(same_class)
    print(f"mean same-class images in the top 10 over 50 queries: {mean:.2f}")
    assert mean >= 8.0


def test_keyword_search_finds_a_class_by_its_tag(corel_index):
    with open_store(corel_index.settings) as store:
        page = store.keyword("horses", limit=100)
        assert page.total == 100 and all("horses" in h.document.tags for h in page.hits)


def test_refine_from_horse_marks_finds_at_least_as_many_horses(corel_index):
    """A horse query, 5 horses marked "more like this" and 5 other pictures "not like this": the refined top
    24 holds at least as many horses as the plain similar search, and none of the marked images."""
    from backend import create_app

    app = create_app(corel_index.settings, load_model=False)
    client = app.test_client()
    try:
        query = client.get("/api/search?q=700&tags=horses").get_json()["results"][0]
        assert query["filename"] == "700.jpg"
        similar = [r for offset in (0, 100, 200) for r in
                   client.get(f"/api/images/{query['id']}/similar?limit=100&offset={offset}").get_json()["results"]]
        horses = sum("horses" in r["tags"] for r in similar[:24])
        positive = [r["id"] for r in similar if "horses" in r["tags"]][:5]
        negative = [r["id"] for r in similar if "horses" not in r["tags"]][:5]     # the first non-horses shown
        assert len(positive) == len(negative) == 5
        body = client.post("/api/search/refine", json={"positive": [query["id"], *positive],
                                                        "negative": negative}).get_json()
        top = body["results"]
        assert len(top) == 24 and not {r["id"] for r in top} & {query["id"], *positive, *negative}
        refined = sum("horses" in r["tags"] for r in top)
        print(f"horses in the top 24: similar {horses}, refined {refined}")
        assert refined >= horses
    finally:
        app.extensions["lookalike"].store.close()
