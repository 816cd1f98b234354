"""The Duplicates view and collapsed search results in a real browser: Playwright drives Debian's Chromium
against the real app (embedded store) on a loopback port.

The pictures are real files, so thumbnails load; their vectors are made rather than computed (the app's
descriptor, written as the indexer writes them: duplicates.link, then upsert), so which pictures are near
copies, and how near, is known exactly: three groups of copies that the tests look at, eight pairs (so that
groups come in more than one page), another shot of one scene that is not a copy, and unrelated pictures.
Screenshots go to test-artifacts/. Skips, saying why, as tests/test_browser.py does.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from backend import create_app
from backend.duplicates import NEAR_MIN_SCORE
from backend.config import Settings
from backend.features import DIMS
from backend.stores import open_store
from backend.stores.base import Document, document_id

from . import test_browser
from .conftest import FAST_ENV, FAST_SPEC
from .test_browser import expect, scene, serve_flask, shot, wait_for_results
from .test_duplicates import edited512, unit, write

pytestmark = pytest.mark.browser

KEY = "dupview-write-key"
DESCRIPTOR = FAST_SPEC.descriptor_id("random", "float32")    # the app's, with FAST_ENV's settings
PAIRS = 8
UNRELATED = 12


# test_browser's Chromium and its page (which opens this module's `site`)
browser, page = test_browser.browser, test_browser.page


def base_vector(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(DIMS))


class Collection:
    """The pictures on disk and their documents, by file stem."""

    def __init__(self, root: Path):
        self.root = root
        self.docs: dict[str, Document] = {}

    def add(self, stem: str, picture: Image.Image | Path, vector: np.ndarray, *, tag: str, suffix=".jpg",
            mtime: float = 1_700_000_000.0) -> Document:
        path = self.root / tag / f"{stem}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(picture, Path):
            shutil.copyfile(picture, path)            # the same bytes
        else:
            picture.save(path, quality=90)
        os.utime(path, (mtime, mtime))
        data = path.read_bytes()
        with Image.open(path) as opened:
            width, height = opened.size
        doc = Document(id=document_id(str(path)), vector=vector, filename=path.name, path=str(path), tags=[tag],
                       width=width, height=height, bytes=len(data), content_hash=hashlib.sha256(data).hexdigest(),
                       descriptor=DESCRIPTOR, indexed_at=time.time(), modified_at=mtime)
        self.docs[stem] = doc
        return doc

    def path(self, stem: str) -> Path:
        return Path(self.docs[stem].path)

    def id(self, stem: str) -> str:
        return self.docs[stem].id


def build(root: Path) -> tuple[Collection, list[Document], list[Document]]:
    """Originals first, then their copies (the copies link to them), as two batches."""
    c = Collection(root)
    harbour, meadow, tower = (base_vector(s) for s in (1, 2, 3))
    originals = [
        c.add("harbour", scene("beach", 1, (200, 150)), harbour, tag="harbour", mtime=1_600_000_000.0),
        c.add("meadow", scene("forest", 2, (200, 150)), meadow, tag="meadow"),
        c.add("tower", scene("city", 3, (150, 200)), tower, tag="tower", suffix=".png"),
    ]
    originals += [c.add(f"pair_{i:02d}", scene("beach", 100 + i), base_vector(100 + i), tag="pairs")
                  for i in range(PAIRS)]
    originals += [c.add(f"misc_{i:02d}", scene(("beach", "forest", "city")[i % 3], 200 + i), base_vector(200 + i),
                        tag="misc") for i in range(UNRELATED)]
    big = Image.open(c.path("harbour"))
    copies = [
        c.add("harbour-copy", c.path("harbour"), harbour, tag="harbour"),           # the same bytes, newer
        c.add("harbour-small", big.resize((100, 75)), edited512(harbour, 0.99, 11), tag="harbour"),
        c.add("meadow-bright", ImageEnhance.Brightness(Image.open(c.path("meadow"))).enhance(1.3),
              edited512(meadow, 0.975, 12), tag="meadow"),
        c.add("tower-crop", Image.open(c.path("tower")).crop((6, 8, 144, 192)), edited512(tower, 0.97, 13),
              tag="tower"),
        # another shot of the tower's scene: alike, but under the near threshold
        c.add("tower-scene", scene("city", 4, (150, 200)), edited512(tower, 0.7, 14), tag="tower"),
    ]
    copies += [c.add(f"pair_{i:02d}-copy", Image.open(c.path(f"pair_{i:02d}")).resize((80, 60)),
                     edited512(c.docs[f"pair_{i:02d}"].vector, 0.975, 300 + i), tag="pairs") for i in range(PAIRS)]
    return c, originals, copies


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base url, Collection, the app's store): the real app with writes allowed (LOOKALIKE_API_KEY)."""
    # These documents have no signature, so their near score comes from their made cosine: the copies at 0.97
    # to 0.99, the other shot at 0.7, either side of the default threshold.
    assert 0.7 < NEAR_MIN_SCORE < 0.97, "the made scores must lie either side of the near threshold"
    root = tmp_path_factory.mktemp("browser-duplicates")
    collection, originals, copies = build(root / "images")
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(root / "data"), "LOOKALIKE_API_KEY": KEY})
    with open_store(settings) as store:
        write(store, originals)
        write(store, copies)
    app = create_app(settings, load_model=False)       # no search here needs the model
    engine = app.extensions["lookalike"]
    try:
        with serve_flask(app) as base:
            yield base, collection, engine.store
    finally:
        engine.close()


@pytest.fixture
def site(served):
    """What test_browser's `page` fixture opens; after each test, whatever it removed is written back."""
    base, collection, store = served
    yield base, collection
    gone = [doc for doc in collection.docs.values() if store.get(doc.id) is None]
    if gone:
        write(store, gone)


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path) as response:
        return json.load(response)


def group_of(page, name: str):
    return page.locator(".dup-group", has=page.locator(".dup-name", has_text=re.compile(f"^{re.escape(name)}$")))


def member(page, name: str):
    return page.locator(".dup-member", has=page.locator(".dup-name", has_text=re.compile(f"^{re.escape(name)}$")))


GROUPS = 3 + PAIRS


def test_the_view_shows_groups_and_the_keeper_can_change(page, site):
    base, collection = site
    page.goto(base + "/")
    page.locator("#duplicates-link").click()
    expect(page).to_have_url(base + "/?view=duplicates")
    expect(page.locator(".skip")).to_have_attribute("href", "#dups-heading")
    expect(page.locator("#dups-heading")).to_be_visible()
    expect(page.locator("#dropzone")).to_be_hidden()                   # the search is out of the way
    expect(page.locator("#duplicates-link")).to_have_attribute("aria-current", "page")
    expect(page.locator("#dups-status")).to_have_text(
        f"{GROUPS} groups of near copies, {3 + 2 + 2 + 2 * PAIRS} pictures in all. Showing 10.")
    expect(page.locator(".dup-group")).to_have_count(10)
    expect(page.locator("#dups-min-score")).to_have_value(str(NEAR_MIN_SCORE))   # the server's default, shown

    # Largest first, the suggested keeper first: most pixels, then the largest file, then the oldest.
    harbour = page.locator(".dup-group").first
    expect(harbour.locator(".dup-name")).to_have_text(["harbour.jpg", "harbour-copy.jpg", "harbour-small.jpg"])
    expect(harbour.locator(".dup-likeness")).to_have_text(["suggested to keep", "the same bytes", "99% similar"])
    size = collection.docs["harbour"].bytes
    expect(harbour.locator(".dup-facts").first).to_have_text(f"200 × 150 · {size / 1000:.1f} kB")
    expect(harbour.locator(".dup-path")).to_have_text([str(collection.path(s)) for s in
                                                       ("harbour", "harbour-copy", "harbour-small")])
    pressed = harbour.locator('.dup-member[aria-pressed="true"]')
    expect(pressed).to_have_count(1)
    expect(pressed.locator(".dup-name")).to_have_text("harbour.jpg")
    expect(pressed.locator(".dup-badge")).to_be_visible()
    # the thumbnails load
    page.wait_for_function("[...document.querySelectorAll('.dup-frame img')].slice(0, 6)"
                           ".every((i) => i.complete && i.naturalWidth > 0)")
    assert "tower-scene.jpg" not in page.locator(".dup-name").all_inner_texts()    # another shot: not a copy

    # Another keeper, at once: by a click, and from the keyboard.
    deletes = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    member(page, "harbour-small.jpg").click()
    expect(member(page, "harbour-small.jpg")).to_have_attribute("aria-pressed", "true")
    expect(member(page, "harbour.jpg")).to_have_attribute("aria-pressed", "false")
    expect(member(page, "harbour-small.jpg").locator(".dup-badge")).to_be_visible()
    expect(harbour.locator(".dup-resolve")).to_have_text("Remove the other 2 from the index")
    expect(harbour.locator(".dup-note")).to_have_text("Keeping harbour-small.jpg.")
    member(page, "harbour-copy.jpg").focus()
    page.keyboard.press("Enter")
    expect(member(page, "harbour-copy.jpg")).to_have_attribute("aria-pressed", "true")
    shot(page, "duplicates-desktop")
    assert deletes == []                                                # choosing changes nothing on the server

    # More groups, then all are shown.
    expect(page.locator("#dups-more")).to_have_text(f"More groups ({GROUPS - 10} left)")
    page.locator("#dups-more").click()
    expect(page.locator(".dup-group")).to_have_count(GROUPS)
    expect(page.locator("#dups-more")).to_be_hidden()
    shown = {n for n in page.locator(".dup-name").all_inner_texts()}
    assert {f"pair_{i:02d}.jpg" for i in range(PAIRS)} <= shown

    # Exact copies: the same bytes only; the URL says so, and back returns to near copies.
    page.locator("#dups-level").select_option("exact")
    expect(page).to_have_url(base + "/?view=duplicates&level=exact")
    expect(page.locator(".dup-group")).to_have_count(1)
    expect(page.locator(".dup-name")).to_have_text(["harbour.jpg", "harbour-copy.jpg"])
    expect(page.locator("#dups-min-score")).to_be_disabled()
    expect(page.locator("#dups-status")).to_have_text("1 group of exact copies (the same bytes), 2 pictures in all.")
    page.go_back()
    expect(page).to_have_url(base + "/?view=duplicates")
    expect(page.locator(".dup-group")).to_have_count(10)

    # A stricter least similarity: only the harbour's copies (0.99) stay; the pairs (0.975) go.
    page.locator("#dups-min-score").fill("0.985")
    page.locator("#dups-min-score").press("Enter")
    expect(page).to_have_url(base + "/?view=duplicates&min_score=0.985")
    expect(page.locator(".dup-group")).to_have_count(1)
    expect(page.locator(".dup-name")).to_have_text(["harbour.jpg", "harbour-copy.jpg", "harbour-small.jpg"])
    page.reload()                                                       # a bookmark of the view
    expect(page.locator(".dup-group")).to_have_count(1)
    expect(page.locator("#dups-min-score")).to_have_value("0.985")

    # The brand link goes back to searching.
    page.locator(".brand").click()
    expect(page.locator("#dropzone")).to_be_visible()
    expect(page.locator("#duplicates")).to_be_hidden()


def test_remove_the_others_needs_the_key_and_keeps_the_keeper(page, site):
    base, collection = site
    page.goto(base + "/?view=duplicates")
    page.locator("#dups-more").click()
    expect(page.locator(".dup-group")).to_have_count(GROUPS)
    tower = group_of(page, "tower.png")
    expect(tower.locator(".dup-name")).to_have_text(["tower.png", "tower-crop.jpg"])
    expect(page.locator("#key-note")).to_contain_text("kept for this tab only")
    deletes = []
    page.on("request", lambda r: deletes.append(r) if r.method == "DELETE" else None)

    # Without a key, the button asks for it.
    tower.locator(".dup-resolve").click()
    expect(tower.locator(".dup-note")).to_have_text(
        "Removing pictures from the index needs the server's API key: enter it above.")
    expect(page.locator("#key-input")).to_be_focused()
    assert deletes == []

    # A wrong key is refused, said so, and forgotten.
    page.locator("#key-input").fill("not-the-key")
    page.locator("#key-input").press("Enter")
    expect(page.locator("#key-held")).to_be_visible()
    expect(page.locator("#key-form")).to_be_hidden()
    with page.expect_response(re.compile(r"/api/images/\w+$")) as answer:
        tower.locator(".dup-resolve").click()
    assert answer.value.status == 401 and answer.value.json()["error"]["code"] == "unauthorized"
    expect(tower.locator(".dup-note")).to_have_text(
        "That API key was not accepted. Try again with the server's LOOKALIKE_API_KEY.")
    expect(page.locator("#key-form")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert api(base, f"/api/images/{collection.id('tower')}")["id"] == collection.id("tower")

    # The right key; keep the crop rather than the suggested original.
    page.locator("#key-input").fill(KEY)
    page.locator("#key-form button").click()
    member(page, "tower-crop.jpg").click()
    expect(tower.locator(".dup-resolve")).to_have_attribute(
        "aria-label", "Keep tower-crop.jpg and remove the other 1 from the index")
    with page.expect_response(re.compile(r"/api/images/\w+$")) as answer:
        tower.locator(".dup-resolve").click()
    assert answer.value.status == 200
    assert answer.value.request.headers["authorization"] == f"Bearer {KEY}"
    expect(tower).to_have_count(0)                                      # the group is gone
    expect(page.locator("#dups-status")).to_have_text(
        f"Kept tower-crop.jpg and removed 1 other from the index. {GROUPS - 1} groups of near copies, "
        f"{3 + 2 + 2 * PAIRS} pictures in all.")
    expect(page.locator(".dup-group")).to_have_count(GROUPS - 1)
    # focus goes on to the next group's keeper
    assert page.evaluate("document.activeElement.matches('.dup-group .dup-member[aria-pressed=\"true\"]')")
    # the refused try would have removed the crop (then the keeper); the second removed the original
    assert [r.url.rsplit("/", 1)[1] for r in deletes] == [collection.id("tower-crop"), collection.id("tower")]

    # The store lacks the other, keeps the keeper; the file stays on disk.
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(base, f"/api/images/{collection.id('tower')}")
    assert gone.value.code == 404
    assert api(base, f"/api/images/{collection.id('tower-crop')}")["filename"] == "tower-crop.jpg"
    assert collection.path("tower").is_file()
    assert api(base, "/api/duplicates")["total"] == GROUPS - 1

    # The key: in sessionStorage only (kept through a reload), never in the URL, localStorage or a cookie.
    assert page.evaluate("sessionStorage.getItem('lookalike-api-key')") == KEY
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    assert KEY not in page.url
    page.reload()
    expect(page.locator("#key-held")).to_be_visible()
    expect(page.locator(".dup-group")).to_have_count(10)
    expect(group_of(page, "tower-crop.jpg")).to_have_count(0)

    # A group of three: the suggested keeper stays, both others go.
    harbour = group_of(page, "harbour.jpg")
    harbour.locator(".dup-resolve").click()
    expect(harbour).to_have_count(0)
    assert api(base, f"/api/images/{collection.id('harbour')}")["id"] == collection.id("harbour")
    assert api(base, "/api/duplicates?level=exact")["total"] == 0
    page.locator("#key-forget").click()
    expect(page.locator("#key-input")).to_be_focused()
    assert page.evaluate("sessionStorage.length") == 0


def test_search_results_fold_near_copies_and_expand_in_place(page, site):
    base, collection = site
    page.goto(base + "/")
    with page.expect_request(re.compile(r"/api/search\?.*collapse=near")):
        page.locator("#keyword").fill("harbour")
        page.locator("#keyword").press("Enter")
    wait_for_results(page, 1)
    expect(page.locator("#status")).to_contain_text("Showing 3 of 3")
    card = page.locator("#grid .card").first
    toggle = card.locator(".copies")
    expect(toggle).to_have_text("+2 copies")
    expect(toggle).to_have_attribute("aria-expanded", "false")

    # Keyboard: Tab from the card's marks reaches the button; Enter shows the copies right after the card.
    card.locator(".mark-neg").focus()
    page.keyboard.press("Tab")
    expect(toggle).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#grid .card")).to_have_count(3)
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(toggle).to_have_attribute("aria-label", "Hide the 2 near copies of harbour.jpg")
    expect(page.locator("#grid .card.copy")).to_have_count(2)
    ids = page.locator("#grid .card").evaluate_all("(cards) => cards.map((c) => c.dataset.id)")
    assert set(ids) == {collection.id(s) for s in ("harbour", "harbour-copy", "harbour-small")}
    shot(page, "collapsed-expanded")
    page.keyboard.press("Enter")
    expect(page.locator("#grid .card")).to_have_count(1)

    # More like a pair's original: one card per picture, never two copies of one on the page.
    page.locator("#keyword").fill("pair_03")
    page.locator("#keyword").press("Enter")
    expect(page.locator("#grid .card").first).to_be_visible()
    page.locator("#grid .card .hit").first.click()
    expect(page).to_have_url(re.compile(r"similar=\w+$"))
    expect(page.locator("#status")).to_contain_text("Showing")
    total = len(collection.docs) - 1                                  # all but the picture searched with
    expect(page.locator("#status")).to_contain_text(f"Showing {total} of {total}")
    shown = page.locator("#grid .card").evaluate_all("(cards) => cards.map((c) => c.dataset.id)")
    for group in api(base, "/api/duplicates?limit=100")["groups"]:
        assert len(set(shown) & {m["id"] for m in group["members"]}) <= 1, group
    copies = page.locator("#grid .copies")
    assert copies.count() == PAIRS - 1 + 3               # every pair but the searched one's, harbour, meadow, tower
    shot(page, "collapsed-similar")


def test_phone_width(browser, site):
    base, _ = site
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(base + "/?view=duplicates")
        expect(page.locator(".dup-group")).to_have_count(10)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        first = page.locator(".dup-group").first
        boxes = [first.locator(".dup-member").nth(i).bounding_box() for i in range(3)]
        assert boxes[0]["y"] == boxes[1]["y"] < boxes[2]["y"]             # two to a row
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes)
        first.locator(".dup-member").nth(2).tap()
        expect(first.locator(".dup-member").nth(2)).to_have_attribute("aria-pressed", "true")
        resolve = first.locator(".dup-resolve").bounding_box()
        assert resolve["x"] + resolve["width"] <= 390 and resolve["height"] >= 32      # a finger's target
        shot(page, "duplicates-phone")

        page.goto(base + "/?q=harbour")
        wait_for_results(page, 1)
        page.locator("#grid .copies").tap()
        expect(page.locator("#grid .card")).to_have_count(3)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "collapsed-phone")
    finally:
        context.close()
