"""Content labels on the page, in a real browser: Playwright drives Debian's Chromium against the real app.

Nine Corel photos (three elephants, three buses, three horses) in one folder without tags, indexed by the
product's engine with labels on: the real classifier (EfficientNet-Lite0 from its wheel), beside the fast
tests' seeded 64 px VGG16, which labels do not read. A picture opened ("more like this") shows its labels,
each offered as a tag; with the server's write key a suggestion becomes a tag that a keyword search then
finds; a server without a key says writes are off. Screenshots go to test-artifacts/. Skips, saying why,
as tests/test_browser.py does, and without the shared photo sets.
"""
from __future__ import annotations

import json
import re
import shutil
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend.config import Settings
from backend.factory import open_engine
from indexer.scan import scan

from . import test_browser
from .conftest import FAST_ENV, NO_DATA, sample_data
from .test_browser import PHONE_WIDTH, expect, phone_page, serve_app, shot, wait_for_results

pytestmark = pytest.mark.browser

KEY = "labels-write-key"
PHOTOS = {"elephants": 500, "buses": 300, "horses": 700}   # Corel-1k's folder and first file of each class
PER_CLASS = 3
TOTAL = PER_CLASS * len(PHOTOS)
WRITES_OFF = "This server does not accept changes from the page (no API key is set on it)."
KEY_REFUSED = "That API key was not accepted. Try again with the server's LOOKALIKE_API_KEY."

# test_browser's Chromium and its page (which opens this module's `site`)
browser, page = test_browser.browser, test_browser.page


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, fast_extractor) -> Path:
    """The data folder of the nine photos indexed with labels, without tags (copied for each server)."""
    data = sample_data()
    if data is None or not (data / "corel1k").is_dir():
        pytest.skip(NO_DATA)
    root = tmp_path_factory.mktemp("browser-labels")
    photos = root / "photos"
    photos.mkdir()
    for folder, first in PHOTOS.items():
        for number in range(first, first + PER_CLASS):
            shutil.copyfile(data / "corel1k" / folder / f"{number}.jpg", photos / f"{number}.jpg")
    with open_engine(settings(root / "data"), extractor=fast_extractor) as engine:
        summary = engine.indexer.run(scan([photos]))
    assert summary.indexed == TOTAL and not summary.failures
    return root / "data"


def settings(data_dir: Path, **env) -> Settings:
    return Settings.from_env({**FAST_ENV, "LOOKALIKE_LABELS": "true", "LOOKALIKE_DATA_DIR": str(data_dir), **env})


@contextmanager
def serve(labelled: Path, copy: Path, **env):
    """The app over a copy of the labelled data folder (a test's tags stay its own): its base URL."""
    shutil.copytree(labelled, copy)
    with serve_app(settings(copy, **env)) as base:
        yield base


@pytest.fixture
def keyed_site(labelled, tmp_path):
    """(base url, None): writes allowed with KEY."""
    with serve(labelled, tmp_path / "data", LOOKALIKE_API_KEY=KEY) as base:
        yield base, None


@pytest.fixture
def keyless_site(labelled, tmp_path):
    """(base url, None): no LOOKALIKE_API_KEY, so writes are off."""
    with serve(labelled, tmp_path / "data") as base:
        yield base, None


@pytest.fixture
def site(request):
    return request.getfixturevalue(f"{request.param}_site")


class Prompts:
    """Answers the page's key prompts in turn (None: dismissed), and keeps what each asked."""

    def __init__(self, page):
        self.answers: list[str | None] = []
        self.asked: list[str] = []
        page.on("dialog", self._answer)

    def _answer(self, dialog) -> None:
        self.asked.append(dialog.message)
        answer = self.answers.pop(0) if self.answers else None
        dialog.accept(answer) if answer is not None else dialog.dismiss()


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path) as response:
        return json.load(response)


def open_picture(page, base: str, number: int) -> dict:
    """Search "elephant" (found by labels alone: the files are named by number), open result `number`.jpg
    ("more like this") and wait for its labels. Its document, from the API."""
    page.goto(f"{base}/?q=elephant")
    wait_for_results(page, PER_CLASS)
    card = page.locator("#grid .card", has_text=f"{number}.jpg")
    expect(card.locator(".card-label")).to_have_text(re.compile(r"elephant \d+%", re.IGNORECASE))
    doc_id = card.get_attribute("data-id")
    card.locator("a").click()
    wait_for_results(page, TOTAL - 1, url=rf"similar={doc_id}$")
    expect(page.locator("#labels-box")).to_be_visible()
    return get(base, f"/api/images/{doc_id}")


def label_items(page):
    return page.locator("#labels-list li")


def label_item(page, label: str):
    return label_items(page).filter(has=page.locator(".label-name", has_text=re.compile(f"^{re.escape(label)}$")))


def add_button(page, label: str):
    return label_item(page, label).locator("button.add-tag")


@pytest.mark.parametrize("site", ["keyed"], indirect=True)
def test_labels_are_shown_and_a_suggestion_becomes_a_tag_with_the_key(page, site):
    base, _ = site
    prompts = Prompts(page)
    doc = open_picture(page, base, 500)
    labels = doc["labels"]
    assert labels and doc["tags"] == []
    # every label the API gives, most confident first, with its confidence and a button to add it
    expect(label_items(page).locator(".label-name")).to_have_text([label["label"] for label in labels])
    expect(label_items(page).locator(".label-confidence")).to_have_text(
        [f"{round(label['confidence'] * 100)}%" for label in labels])
    expect(page.locator("#labels-list button.add-tag")).to_have_count(len(labels))
    top = labels[0]["label"]
    assert "elephant" in top.lower()
    shot(page, "labels-desktop")

    # No key given: nothing is sent. A wrong key: refused in words, not kept, the suggestion still offered.
    puts = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    add_button(page, top).click()
    prompts.answers.append("not-the-key")
    add_button(page, top).click()
    expect(page.locator("#labels-note")).to_have_text(KEY_REFUSED)
    expect(add_button(page, top)).to_be_visible()
    assert len(puts) == 1 and get(base, f"/api/images/{doc['id']}")["tags"] == []

    # Asked for the key again; with the right one the label becomes a tag.
    prompts.answers.append(KEY)
    with page.expect_response(f"**/api/images/{doc['id']}/tags") as answer:
        add_button(page, top).click()
    assert answer.value.status == 200
    assert len(prompts.asked) == 3 and all("API key" in message for message in prompts.asked)
    tag = top.lower()
    expect(page.locator("#labels-note")).to_have_text(f"Tagged “{tag}”.")
    expect(label_item(page, top).locator(".label-tagged")).to_have_text("tag")
    expect(label_item(page, top).locator("button")).to_have_count(0)
    assert get(base, f"/api/images/{doc['id']}")["tags"] == [tag]
    shot(page, "labels-desktop-tagged")

    # The key is kept for the tab: another suggestion is added without asking.
    if len(labels) > 1:
        second = labels[1]["label"]
        add_button(page, second).click()
        expect(page.locator("#labels-note")).to_have_text(f"Tagged “{second.lower()}”.")
        assert get(base, f"/api/images/{doc['id']}")["tags"] == [tag, second.lower()]
        assert len(prompts.asked) == 3

    # A keyword search by the tag finds the picture first, by its tag (no label line on its card).
    page.locator("#keyword").fill(tag)
    page.locator("#keyword").press("Enter")
    expect(page).to_have_url(re.compile(r"\?q="))
    expect(page.locator("#status")).to_contain_text("Showing")
    first = page.locator("#grid .card").first
    expect(first.locator(".name")).to_have_text("500.jpg")
    expect(first.locator(".card-tags")).to_contain_text(tag)
    expect(first.locator(".card-label")).to_have_count(0)
    expect(page.locator("#labels-box")).to_be_hidden()      # a keyword search has no picture of its own
    found = get(base, "/api/search?" + urllib.parse.urlencode({"q": tag}))["results"][0]
    assert (found["id"], found["matched"]) == (doc["id"], "text")
    shot(page, "labels-desktop-tag-search")


@pytest.mark.parametrize("site", ["keyless"], indirect=True)
def test_without_a_key_on_the_server_the_page_says_writes_are_off(page, site):
    base, _ = site
    prompts = Prompts(page)
    doc = open_picture(page, base, 501)
    top = doc["labels"][0]["label"]
    prompts.answers.append("any-key")
    with page.expect_response(f"**/api/images/{doc['id']}/tags") as answer:
        add_button(page, top).click()
    assert answer.value.status == 403
    expect(page.locator("#labels-note")).to_have_text(WRITES_OFF)
    expect(add_button(page, top)).to_be_visible()
    assert get(base, f"/api/images/{doc['id']}")["tags"] == []
    shot(page, "labels-desktop-writes-off")


@pytest.mark.parametrize("site", ["keyed"], indirect=True)
def test_labels_at_phone_width(browser, site):
    base, _ = site
    with phone_page(browser) as page:
        doc = open_picture(page, base, 502)
        expect(label_items(page)).to_have_count(len(doc["labels"]))
        # the labels wrap inside the page: nothing sticks out sideways, every button is on screen
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
        for button in page.locator("#labels-list button.add-tag").all():
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_WIDTH
        shot(page, "labels-phone")
