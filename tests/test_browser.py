"""The web page in a real browser: Playwright drives Debian's Chromium against the real app.

The app runs in a thread on a free loopback port with the fast descriptor (seeded random VGG16 at 64 px)
over pictures indexed by the real Indexer, tagged by folder, on the embedded store; the main flows run once
more on a real Elasticsearch node (tests/es_node.py). Screenshots go to test-artifacts/.
Skips, saying why, when the playwright package or /usr/bin/chromium is missing.
"""
from __future__ import annotations

import base64
import io
import re
import shutil
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from backend.config import Settings
from backend.features import FeatureExtractor
from backend.ingest import Indexer
from backend.stores import open_store
from indexer.scan import scan

from .conftest import FAST_ENV, ROOT, delete_indices

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"   # Debian's package; never a downloaded browser
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                            "(pip install -r requirements-dev.txt)")
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium is not installed: apt-get install chromium (.ci/run does this)", allow_module_level=True)
expect = sync_api.expect
pytestmark = pytest.mark.browser

# Ten pictures in each of three tagged folders: 30 in all, so a search has a second page of 24 + 6.
PALETTES = {"beach": [(70, 140, 200), (230, 210, 160)], "forest": [(30, 90, 40), (120, 160, 60)],
            "city": [(90, 90, 100), (200, 190, 170)]}
PER_TAG = 10
TOTAL = PER_TAG * len(PALETTES)
MAX_UPLOAD = 600_000


def scene(tag: str, seed: int, size=(160, 120)) -> Image.Image:
    """A picture in the tag's colours: a two-tone gradient with a few shapes, different for each seed."""
    rng = np.random.default_rng(seed)
    top, bottom = (np.array(c, float) for c in PALETTES[tag])
    t = np.linspace(0, 1, size[1])[:, None, None]
    arr = (top * (1 - t) + bottom * t).repeat(size[0], axis=1) + rng.normal(0, 8, (size[1], size[0], 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        w, h = int(rng.integers(15, 40)), int(rng.integers(15, 40))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < .5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
    return img


def serve_site(root: Path, store_env: dict, serve_env: dict | None = None):
    """The real app over 30 indexed pictures, on a free 127.0.0.1 port. Yields (base url, image folder).
    serve_env: settings of the app that differ from the indexer's (weights it cannot load, say)."""
    images = root / "images"
    for n, tag in enumerate(PALETTES):
        (images / tag).mkdir(parents=True)
        for i in range(PER_TAG):
            size = (96, 144) if i % 4 == 1 else (160, 120)      # some portrait pictures, for the layout
            scene(tag, 100 * n + i, size).save(images / tag / f"{tag}_{i:02d}.jpg", quality=90)
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(root / "data"),
                                  "LOOKALIKE_MAX_IMAGE_BYTES": str(MAX_UPLOAD), **store_env})
    with open_store(settings) as store:
        summary = Indexer(store, FeatureExtractor.from_settings(settings)).run(
            scan([images], tags_from_folders=True))
    assert summary.indexed == TOTAL and not summary.failures
    if serve_env:
        settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(root / "data"),
                                      "LOOKALIKE_MAX_IMAGE_BYTES": str(MAX_UPLOAD), **store_env, **serve_env})
    with serve_app(settings) as base:
        yield base, images


@contextmanager
def serve_app(settings: Settings):
    """The real app with these settings in a thread, on a free 127.0.0.1 port: its base URL."""
    from backend import create_app

    with serve_flask(create_app(settings)) as base:
        yield base


@contextmanager
def serve_flask(app):
    """A Flask app in a thread, on a free 127.0.0.1 port: its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def embedded_site(tmp_path_factory):
    """The app on the embedded store (the default)."""
    yield from serve_site(tmp_path_factory.mktemp("browser"), {})


@pytest.fixture(scope="module")
def elasticsearch_site(tmp_path_factory, elastic_nodes):
    """The same app and pictures with LOOKALIKE_STORE set to the session's real Elasticsearch node."""
    url, alias = elastic_nodes.url("8"), f"lookalike-browser-{uuid.uuid4().hex[:8]}"
    try:
        yield from serve_site(tmp_path_factory.mktemp("browser-es"),
                              {"LOOKALIKE_STORE": url, "LOOKALIKE_ES_INDEX": alias})
    finally:
        delete_indices(url, alias)


@pytest.fixture(scope="module")
def modelless_site(tmp_path_factory):
    """The same pictures, served by an app whose model cannot load (its weights file is missing): searching
    by a picture answers 503 model_unavailable, and everything else works."""
    root = tmp_path_factory.mktemp("browser-no-model")
    yield from serve_site(root, {}, {"LOOKALIKE_VGG16_WEIGHTS": str(root / "missing-weights.h5")})


class Relay:
    """A loopback TCP relay to (host, port); close() cuts it and every connection through it, so whatever
    talked through it finds that server gone."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return                                  # closed
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()                          # the upstream is down too: refuse this one
                continue
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)      # wakes the accept() above
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@pytest.fixture
def storeless_site(tmp_path_factory, elastic_nodes):
    """An app on a real Elasticsearch node (an empty index) reached through a Relay: (base url, relay). The
    test cuts the relay, and the store is gone as far as the app can tell."""
    url, alias = elastic_nodes.url("8"), f"lookalike-browser-{uuid.uuid4().hex[:8]}"
    address = urllib.parse.urlsplit(url)
    relay = Relay((address.hostname, address.port))
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(tmp_path_factory.mktemp("browser-no-store")),
                                  "LOOKALIKE_STORE": f"http://127.0.0.1:{relay.port}", "LOOKALIKE_ES_INDEX": alias})
    try:
        with serve_app(settings) as base:
            yield base, relay
    finally:
        relay.close()
        delete_indices(url, alias)


@pytest.fixture
def site(request):
    """(base url, image folder) of the app on the embedded store; tests marked ON_BOTH_STORES run once more
    against Elasticsearch."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'embedded')}_site")


# The main flows (drop, paging, keywords, refine, tag filters) also run against an Elasticsearch-backed app.
ON_BOTH_STORES = pytest.mark.parametrize("site", ["embedded", "elasticsearch"], indirect=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site, request):
    """A fresh page at desktop size; fails the test on any uncaught JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.base_url = site[0]
    store = getattr(getattr(request.node, "callspec", None), "params", {}).get("site", "embedded")
    page.shot_suffix = "" if store == "embedded" else f"-{store}"   # its own screenshots
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}{getattr(page, 'shot_suffix', '')}.png"), full_page=True)


def drop(page, path_or_bytes, name: str, mime: str, event: str = "drop") -> None:
    """A real drop (or paste) event carrying a File in a DataTransfer, as a person's drag would."""
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    page.evaluate("""([b64, name, type, event]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, {type}));
        if (event === "paste") {
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true,
                                                                 cancelable: true}));
            return;
        }
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }
    }""", [base64.b64encode(data).decode(), name, mime, event])


def choose_with_enter(page):
    """Enter on the focused drop zone opens the file chooser. Chromium now and then fails to report the
    chooser it opened (the page's click did reach the file input: microsoft/playwright#28023), so try
    up to three times before failing."""
    for attempt in range(3):
        try:
            with page.expect_file_chooser(timeout=4000) as chooser:
                page.keyboard.press("Enter")
            return chooser.value
        except sync_api.TimeoutError:
            if attempt == 2:
                raise
            page.locator("#dropzone").focus()


def names(page) -> list[str]:
    return page.locator("#grid .name").all_inner_texts()


def wait_for_results(page, count: int, url: str | None = None) -> None:
    """Wait for `count` result cards of a finished search; with `url` (a regex), of the search at that URL.

    An upload reads the picture before it searches, so right after a drop the grid can still show the
    previous search's cards: giving the new URL waits for the new search, not the old one."""
    if url:
        expect(page).to_have_url(re.compile(url))
    expect(page.locator("#grid .card")).to_have_count(count)
    expect(page.locator("#status")).to_contain_text("Showing")


@ON_BOTH_STORES
def test_drop_an_image_finds_it_first_and_loads_more(page, site):
    base, images = site
    page.goto(base + "/")
    expect(page.locator("#status")).to_contain_text(f"{TOTAL} pictures to search")
    expect(page.locator("#tag-chips .chip")).to_have_count(len(PALETTES))
    shot(page, "desktop-start")

    drop(page, images / "forest" / "forest_03.jpg", "forest_03.jpg", "image/jpeg")
    wait_for_results(page, 24, url=r"/\?image=\w+$")
    # The same picture is in the index: it comes first, with a perfect score.
    first = page.locator("#grid .card").first
    expect(first.locator(".name")).to_have_text("forest_03.jpg")
    expect(first.locator(".score")).to_have_text("100% similar")
    expect(first.locator(".card-tags")).to_have_text("forest")
    expect(page.locator("#query-preview")).to_be_visible()
    expect(page.locator("#drop-title")).to_have_text("Pictures like forest_03.jpg")
    assert page.locator("#grid img").first.get_attribute("loading") == "lazy"
    expect(page.locator("#status")).to_contain_text(f"Showing 24 of {TOTAL}")
    shot(page, "desktop-image-results")

    page.locator("#more").focus()
    page.keyboard.press("Enter")
    wait_for_results(page, TOTAL)
    expect(page.locator("#more")).to_be_hidden()
    expect(page.locator("#grid .card a").nth(24)).to_be_focused()   # keyboard users carry on from there
    assert len(set(names(page))) == TOTAL


def test_file_picker_and_paste_search_by_image(page, site):
    base, images = site
    page.goto(base + "/")
    expect(page.locator("#status")).to_contain_text("pictures to search")  # the page has started
    # Keyboard: the drop zone is the first stop after the skip link, the home link and the Duplicates link;
    # Enter opens the picker.
    for _ in range(4):
        page.keyboard.press("Tab")
    expect(page.locator("#dropzone")).to_be_focused()
    choose_with_enter(page).set_files(str(images / "city" / "city_07.jpg"))
    wait_for_results(page, 24)
    expect(page.locator("#grid .name").first).to_have_text("city_07.jpg")

    page.locator("#file-input").set_input_files(str(images / "forest" / "forest_00.jpg"))
    wait_for_results(page, 24)
    expect(page.locator("#grid .name").first).to_have_text("forest_00.jpg")

    drop(page, images / "beach" / "beach_01.jpg", "beach_01.jpg", "image/jpeg", event="paste")
    wait_for_results(page, 24)
    expect(page.locator("#grid .name").first).to_have_text("beach_01.jpg")


@ON_BOTH_STORES
def test_keyword_refine_trail_back_and_forward(page, site):
    base, _ = site
    page.goto(base + "/")
    page.locator("#keyword").fill("beach")
    page.locator("#keyword").press("Enter")
    wait_for_results(page, PER_TAG)
    assert page.url.endswith("/?q=beach")
    expect(page).to_have_title("“beach” · lookalike")
    keyword_results = names(page)
    assert all(name.startswith("beach_") for name in keyword_results)
    expect(page.locator("#grid .score")).to_have_count(0)   # a BM25 number means nothing to a person
    shot(page, "desktop-keyword")
    expect(page.locator("#trail")).to_be_hidden()

    # Click a result: "more like this" becomes the query, with its own URL and a trail back.
    page.locator("#grid .card", has_text="beach_04.jpg").click()
    expect(page.locator("#drop-title")).to_have_text("Pictures like beach_04.jpg")
    wait_for_results(page, 24)
    similar_id = re.search(r"/\?similar=(\w+)$", page.url).group(1)
    assert "beach_04.jpg" not in names(page)   # the picture itself is left out
    expect(page.locator("#trail a")).to_have_text(["“beach”"])
    expect(page.locator("#trail [aria-current]")).to_have_text("Like beach_04.jpg")
    refined = names(page)
    shot(page, "desktop-refined")

    # Enter on a focused result refines again; the trail grows.
    second = page.locator("#grid .card a").nth(1)
    second_name = second.locator(".name").inner_text()
    second.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#drop-title")).to_have_text(f"Pictures like {second_name}")
    wait_for_results(page, 24)
    expect(page.locator("#trail a")).to_have_count(2)

    page.go_back()
    expect(page.locator("#drop-title")).to_have_text("Pictures like beach_04.jpg")
    wait_for_results(page, 24)
    assert page.url.endswith(f"/?similar={similar_id}")
    assert names(page) == refined

    page.go_back()
    wait_for_results(page, PER_TAG)
    assert page.url.endswith("/?q=beach")
    expect(page.locator("#keyword")).to_have_value("beach")
    assert names(page) == keyword_results

    page.go_forward()
    wait_for_results(page, 24)
    assert names(page) == refined

    # A crumb takes you back to that query.
    page.locator("#trail a", has_text="beach").click()
    wait_for_results(page, PER_TAG)
    assert page.url.endswith("/?q=beach")

    # The refine URL is a bookmark: opened afresh it shows the same results and names the picture.
    page.goto(f"{base}/?similar={similar_id}")
    expect(page.locator("#drop-title")).to_have_text("Pictures like beach_04.jpg")
    wait_for_results(page, 24)
    assert names(page) == refined


def test_back_to_an_uploaded_picture_runs_it_again(page, site):
    base, images = site
    page.goto(base + "/")
    drop(page, images / "city" / "city_02.jpg", "city_02.jpg", "image/jpeg")
    wait_for_results(page, 24)
    uploaded = names(page)
    page.locator("#grid .card").nth(3).click()
    expect(page).to_have_url(re.compile(r"similar="))
    wait_for_results(page, 24)
    expect(page.locator("#trail a")).to_have_text(["Your picture (city_02.jpg)"])
    page.go_back()
    # the title changes with the grid (popstate may come after go_back returns): wait for it first
    expect(page.locator("#drop-title")).to_have_text("Pictures like city_02.jpg")
    wait_for_results(page, 24)
    assert names(page) == uploaded

    # After a reload the picture itself is gone; its earlier results are still shown.
    page.reload()
    expect(page.locator("#grid .card")).to_have_count(24)
    expect(page.locator("#status")).to_contain_text("earlier results for your picture")
    assert names(page) == uploaded

    # Shared elsewhere, such a link cannot carry the picture: the page says so.
    page.goto(base + "/?image=abc123")
    expect(page.locator("#status")).to_contain_text("pictures are not kept in links")
    expect(page.locator("#grid .card")).to_have_count(0)


@ON_BOTH_STORES
def test_tag_chips_filter_words_and_pictures(page, site):
    base, images = site
    page.goto(base + "/")
    page.locator("#tag-chips .chip", has_text="city").click()
    wait_for_results(page, PER_TAG)
    assert page.url.endswith("/?tags=city")
    expect(page.locator("#tag-chips .chip", has_text="city")).to_have_attribute("aria-pressed", "true")

    drop(page, images / "forest" / "forest_05.jpg", "forest_05.jpg", "image/jpeg")
    # The tag stays: only city pictures, even for a forest picture.
    wait_for_results(page, PER_TAG, url=r"/\?image=\w+&tags=city$")
    assert all(tags == "city" for tags in page.locator("#grid .card-tags").all_inner_texts())

    page.locator("#tag-chips .chip", has_text="forest").click()
    expect(page.locator("#status")).to_contain_text("No pictures found like this one with the tags city and forest")
    expect(page.locator("#grid .card")).to_have_count(0)


def test_bad_files_and_failures_are_explained(page, site):
    base, images = site
    page.goto(base + "/")
    drop(page, b"just some notes\n", "notes.txt", "text/plain")
    expect(page.locator("#status")).to_have_text("“notes.txt” isn't a picture. Drop a JPEG, PNG, GIF, WebP, "
                                                 "BMP, TIFF, HEIC or AVIF image.")
    expect(page.locator("#status")).to_have_attribute("role", "alert")
    shot(page, "desktop-not-a-picture")

    # Named and typed as a JPEG, but not one: the server says so, and the page says it in words.
    drop(page, b"this is not really a jpeg" * 10, "fake.jpg", "image/jpeg")
    expect(page.locator("#status")).to_contain_text("That file isn't a picture this search can read")

    # Over the server's size limit.
    noise = np.random.default_rng(0).integers(0, 255, (500, 500, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    assert buffer.tell() > MAX_UPLOAD
    drop(page, buffer.getvalue(), "huge.png", "image/png")
    expect(page.locator("#status")).to_contain_text("That picture is too large")

    # A picture id that is not in the index.
    page.goto(base + "/?similar=0123456789abcdef0123")
    expect(page.locator("#status")).to_contain_text("no longer in the collection")

    # The server cannot be reached: the request fails at the network level.
    page.goto(base + "/")
    page.route("**/api/search?*", lambda route: route.abort())
    page.locator("#keyword").fill("city")
    page.locator("#keyword").press("Enter")
    expect(page.locator("#status")).to_contain_text("Can't reach the search service")
    page.unroute("**/api/search?*")
    page.locator("#status button", has_text="Try again").click()
    wait_for_results(page, PER_TAG)

    page.locator("#keyword").fill("zebra")
    page.locator("#keyword").press("Enter")
    expect(page.locator("#status")).to_have_text("No pictures found for “zebra”. Try other or fewer words.")


PHONE_WIDTH = 375


@contextmanager
def phone_page(browser):
    """A page in a phone's context (narrow, touch, twice the pixels), closed afterwards."""
    context = browser.new_context(viewport={"width": PHONE_WIDTH, "height": 800}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_phone_width(browser, site):
    base, images = site
    with phone_page(browser) as page:
        page.goto(base + "/")
        expect(page.locator("#tag-chips .chip")).to_have_count(len(PALETTES))
        expect(page.locator("#drop-title")).to_have_text("Tap to choose a picture")  # no drag or paste key here
        shot(page, "phone-start")
        page.locator("#file-input").set_input_files(str(images / "beach" / "beach_08.jpg"))
        wait_for_results(page, 24)
        page.locator("#grid .card").nth(1).click()
        wait_for_results(page, 24)
        # Nothing sticks out sideways, and the results fill justified rows.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
        assert_justified(page)
        # marking works with a tap too
        page.locator("#grid .card").nth(2).locator(".mark-pos").tap()
        expect(page.locator("#refine")).to_have_text("Refine (1)")
        shot(page, "phone-refined")


def assert_justified(page) -> None:
    """Every picture whole (its box has the picture's aspect), rows that fill the grid's width exactly
    (but the last), and no blank space in a card (the picture and the text fill it)."""
    # Lazy pictures below the fold: load them all, to compare each box with its picture's own aspect.
    page.evaluate("document.querySelectorAll('#grid img').forEach((img) => { img.loading = 'eager'; })")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every((i) => i.complete && i.naturalWidth)")
    info = page.evaluate("""() => {
        const grid = document.getElementById("grid").getBoundingClientRect();
        return {width: grid.width, left: grid.left, cards: [...document.querySelectorAll("#grid .card")].map((c) => {
            const box = c.getBoundingClientRect(), frame = c.querySelector(".frame");
            const img = c.querySelector(".frame img");
            const hit = c.querySelector(".hit").getBoundingClientRect();
            const meta = c.querySelector(".meta").getBoundingClientRect();
            return {left: box.left, right: box.right, top: Math.round(box.top), height: box.height,
                    narrow: c.classList.contains("narrow"), width: box.width,
                    frame: frame.getBoundingClientRect().height, ratio: img.naturalWidth / img.naturalHeight,
                    boxRatio: box.width / frame.getBoundingClientRect().height, hit: hit.height,
                    filled: frame.getBoundingClientRect().height + meta.height};
        })};
    }""")
    rows: dict[int, list[dict]] = {}
    for card in info["cards"]:
        rows.setdefault(card["top"], []).append(card)
        if card["narrow"]:     # a card held at its least width: the picture whole inside a wider frame
            assert card["boxRatio"] > card["ratio"] and card["width"] >= 112, card
        else:
            assert card["ratio"] == pytest.approx(card["boxRatio"], rel=0.04), card  # the picture is whole
        assert card["hit"] == pytest.approx(card["filled"], abs=1.5), card           # no blank card space
    tops = sorted(rows)
    assert len(tops) >= 2
    for top in tops[:-1]:
        row = rows[top]
        assert min(c["left"] for c in row) == pytest.approx(info["left"], abs=1)
        assert max(c["right"] for c in row) == pytest.approx(info["left"] + info["width"], abs=1.5)
        assert len({round(c["frame"]) for c in row}) == 1                           # one height per row
    assert max(c["right"] for c in rows[tops[-1]]) <= info["left"] + info["width"] + 1


def marked(page) -> tuple[list[str], list[str]]:
    url = page.url
    get = lambda key: (re.search(rf"[?&]{key}=([\w,]+)", url) or [None, ""])[1].split(",")  # noqa: E731
    return [i for i in get("more") if i], [i for i in get("less") if i]


def test_mark_refine_back_reload_and_a_shared_link(page, site):
    base, _ = site
    page.goto(base + "/?q=beach")
    wait_for_results(page, PER_TAG)
    page.locator("#grid .card", has_text="beach_02.jpg").click()
    wait_for_results(page, 24, url=r"similar=\w+$")
    similar_url = page.url
    assert_justified(page)
    shot(page, "desktop-similar-justified")
    before = names(page)
    cards = page.locator("#grid .card")
    ids = [cards.nth(i).get_attribute("data-id") for i in range(6)]

    # Mark with a click, with the keyboard (Space, Enter), and change one's mind.
    expect(page.locator("#marks")).to_be_hidden()
    cards.nth(0).locator(".mark-pos").click()
    cards.nth(1).locator(".mark-pos").focus()
    page.keyboard.press("Space")
    cards.nth(4).locator(".mark-neg").focus()
    page.keyboard.press("Enter")
    cards.nth(5).locator(".mark-neg").click()
    cards.nth(5).locator(".mark-pos").click()          # from "not like this" to "more like this"
    expect(cards.nth(0).locator(".mark-pos")).to_have_attribute("aria-pressed", "true")
    expect(cards.nth(5).locator(".mark-neg")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#marks-text")).to_have_text("3 more like this, 1 not like this")
    expect(page.locator("#refine")).to_have_text("Refine (4)")
    assert marked(page) == ([ids[0], ids[1], ids[5]], [ids[4]])
    shot(page, "desktop-marked")

    # Reload keeps the marks (they are in the URL and the history entry).
    page.reload()
    wait_for_results(page, 24)
    expect(page.locator("#refine")).to_have_text("Refine (4)")
    expect(page.locator("#grid .card.marked-neg")).to_have_count(1)

    # Refine: the marked pictures are left out, the trail shows the step, the URL carries the ids.
    with page.expect_request("**/api/search/refine") as request:
        page.locator("#refine").click()
    sent = request.value.post_data_json
    assert sent["positive"][0] == similar_url.split("similar=")[1] and set(sent["positive"][1:]) == {
        ids[0], ids[1], ids[5]} and sent["negative"] == [ids[4]]
    wait_for_results(page, 24, url=r"\?pos=[\w,]+&neg=\w+$")
    refined = names(page)
    assert refined != before
    shown_ids = {cards.nth(i).get_attribute("data-id") for i in range(24)}
    assert not shown_ids & {ids[0], ids[1], ids[4], ids[5]}
    expect(page.locator("#trail a")).to_have_text(["“beach”", "Like beach_02.jpg"])
    expect(page.locator("#trail [aria-current]")).to_have_text("More like 4 pictures, less like 1")
    expect(page.locator("#marks")).to_be_hidden()
    refine_url = page.url
    assert_justified(page)
    shot(page, "desktop-after-refine")

    # Back: the similar search with its marks; forward: the refined results.
    page.go_back()
    expect(page).to_have_url(re.compile(r"similar=\w+&more="))
    wait_for_results(page, 24)
    assert names(page) == before
    expect(page.locator("#refine")).to_have_text("Refine (4)")
    page.locator("#clear-marks").click()
    expect(page.locator("#marks")).to_be_hidden()
    assert page.url == similar_url and marked(page) == ([], [])
    page.go_forward()
    wait_for_results(page, 24, url=r"pos=")
    assert names(page) == refined

    # A shared link, opened in a fresh page, shows the same refined results.
    other = page.context.new_page()
    other.goto(refine_url)
    expect(other.locator("#grid .card")).to_have_count(24)
    expect(other.locator("#status")).to_contain_text("Showing")
    assert other.locator("#grid .name").all_inner_texts() == refined
    expect(other.locator("#drop-title")).to_have_text("More like 4 pictures, less like 1")
    # ... and refines further from new marks.
    other.locator("#grid .card").nth(0).locator(".mark-neg").click()
    with other.expect_request("**/api/search/refine") as request:
        other.locator("#refine").click()
    assert len(request.value.post_data_json["negative"]) == 2
    expect(other.locator("#grid .card")).to_have_count(24)
    other.close()


def test_drag_a_box_on_the_query_picture_searches_that_region(page, site):
    base, images = site
    page.goto(base + "/")
    drop(page, images / "city" / "city_04.jpg", "city_04.jpg", "image/jpeg")
    wait_for_results(page, 24, url=r"/\?image=\w+$")
    whole = [(c, s) for c, s in zip(names(page), page.locator("#grid .score").all_inner_texts())]
    page.locator("#crop-open").click()
    stage = page.locator("#crop-image")
    expect(stage).to_be_visible()
    box = stage.bounding_box()
    with page.expect_request(re.compile(r"/api/search/image\?.*crop=")) as request:
        page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4, steps=4)
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.7, steps=4)
        shot(page, "desktop-crop-drag")
        page.mouse.up()
    crop = [float(v) for v in re.search(r"crop=([\d.,%C]+)", request.value.url).group(1).replace("%2C", ",").split(",")]
    assert crop == pytest.approx([0.1, 0.2, 0.5, 0.5], abs=0.02)
    wait_for_results(page, 24, url=r"crop=")
    expect(page.locator("#drop-title")).to_have_text("Pictures like part of city_04.jpg")
    part = [(c, s) for c, s in zip(names(page), page.locator("#grid .score").all_inner_texts())]
    assert part != whole
    expect(page.locator("#trail a")).to_have_text(["Your picture (city_04.jpg)"])

    # The same on a picture of the collection, with a touch-free keyboard way back to the whole one.
    page.locator("#grid .card").nth(0).locator("a").click()
    wait_for_results(page, 24, url=r"similar=\w+$")
    page.locator("#crop-open").click()
    box = page.locator("#crop-image").bounding_box()
    expect(page.locator("#crop-image")).to_have_js_property("complete", True)
    box = page.locator("#crop-image").bounding_box()
    with page.expect_request(re.compile(r"/similar\?.*crop=")):
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
    wait_for_results(page, 24, url=r"similar=\w+&crop=")
    page.reload()
    wait_for_results(page, 24)
    expect(page.locator("#drop-title")).to_contain_text("Pictures like part of")
    page.locator("#crop-whole").click()
    wait_for_results(page, 24, url=r"similar=\w+$")


# The old script's top-level names: the page's modules keep their state and functions to themselves.
OLD_GLOBALS = ["PAGE", "IMAGE_TYPES", "$", "el", "MAX_MARKED", "uploads", "current", "shown", "total", "run",
               "inflight", "ids", "cropText", "pasteKey", "touch", "statusVersion", "dragStart", "dragDepth",
               "layoutFrame", "clamp01", "carriesFiles", "initial", "ApiError", "noMarks", "urlFor", "stateFromUrl",
               "apiParams", "explain", "base64Of", "api", "fetchPage", "go", "show", "search", "describeSimilar",
               "renderQuery", "thumbUrl", "describe", "renderTrail", "renderResults", "markButtons", "layout",
               "formatScore", "summarise", "clearResults", "intro", "setStatus", "loadTags", "renderChipsSelection",
               "toggleTag", "currentTags", "refine", "baseOf", "refineQuery", "toggleMark", "setMarks",
               "renderMarks", "openCropper", "closeCropper", "relative", "dragRect", "drawBox", "useFile",
               "tinyPreview", "plainClick", "span", "li", "img"]


def test_the_page_is_modules_that_leak_no_globals(page, site):
    base, _ = site
    blank = page.context.new_page()
    blank.goto(base + "/api/health")
    before = set(blank.evaluate("Object.keys(window)"))
    blank.close()
    page.goto(base + "/?q=beach")
    wait_for_results(page, PER_TAG)
    page.locator("#grid .card").nth(0).locator(".mark-pos").click()
    expect(page.locator("#refine")).to_have_text("Refine (1)")
    assert set(page.evaluate("Object.keys(window)")) - before == set()
    # Not as window properties, and not as global bindings either (a classic script's let and const); a
    # name may only be an element's id (the button #refine is window.refine).
    leaked = page.evaluate("""(names) => names.filter((name) => {
        const value = (0, eval)(`typeof ${name} === "undefined" ? undefined : ${name}`);
        return value !== undefined && value !== document.getElementById(name);
    })""", OLD_GLOBALS)
    assert leaked == []
    scripts = page.locator("script").evaluate_all("(all) => all.map((s) => [s.type, s.getAttribute('src')])")
    assert scripts == [["module", "/static/app.js"]]


def test_every_module_is_loaded_with_a_javascript_type_and_revalidated(page, site):
    base, _ = site
    loaded = []
    page.on("response", lambda r: loaded.append(r.url.rsplit("/", 1)[1]) if "/static/" in r.url and
            r.url.endswith(".js") else None)
    page.goto(base + "/")
    expect(page.locator("#status")).to_contain_text("pictures to search")
    modules = sorted(p.name for p in (ROOT / "frontend").glob("*.js"))
    assert sorted(loaded) == modules          # each once, all through app.js's imports
    for name in modules:
        with urllib.request.urlopen(f"{base}/static/{name}") as response:
            assert response.headers["Content-Type"].split(";")[0] in ("text/javascript", "application/javascript")
            # Asked again every time (a 304 when unchanged): a browser never runs a module from before an upgrade.
            assert "no-cache" in response.headers["Cache-Control"]
            etag = response.headers["ETag"]
        again = urllib.request.Request(f"{base}/static/{name}", headers={"If-None-Match": etag})
        with pytest.raises(urllib.error.HTTPError) as unchanged:
            urllib.request.urlopen(again)
        assert unchanged.value.code == 304


# Counts the object URLs made and not yet revoked, as window.liveObjectUrls (not enumerable: not a global).
COUNT_OBJECT_URLS = """(() => {
    const live = new Set(), create = URL.createObjectURL, revoke = URL.revokeObjectURL;
    URL.createObjectURL = (blob) => { const url = create.call(URL, blob); live.add(url); return url; };
    URL.revokeObjectURL = (url) => { live.delete(url); revoke.call(URL, url); };
    Object.defineProperty(window, "liveObjectUrls", {get: () => live.size});
})();"""


def test_object_urls_live_only_while_their_picture_is_shown(page, site):
    base, images = site
    page.add_init_script(COUNT_OBJECT_URLS)
    page.goto(base + "/")
    live = lambda: page.evaluate("window.liveObjectUrls")  # noqa: E731
    assert live() == 0
    drop(page, images / "forest" / "forest_03.jpg", "forest_03.jpg", "image/jpeg")
    expect(page.locator("#drop-title")).to_have_text("Pictures like forest_03.jpg")
    wait_for_results(page, 24)
    assert page.locator("#query-preview").get_attribute("src").startswith("blob:") and live() == 1
    drop(page, images / "city" / "city_02.jpg", "city_02.jpg", "image/jpeg")
    expect(page.locator("#drop-title")).to_have_text("Pictures like city_02.jpg")
    assert live() == 1                                  # the first picture's preview URL is gone
    drop(page, images / "beach" / "beach_01.jpg", "beach_01.jpg", "image/jpeg", event="paste")
    expect(page.locator("#drop-title")).to_have_text("Pictures like beach_01.jpg")
    wait_for_results(page, 24)
    assert live() == 1

    # The cropper shows the picture too, while it is open.
    page.locator("#crop-open").click()
    expect(page.locator("#crop-image")).to_be_visible()
    assert live() == 2
    page.locator("#crop-cancel").click()
    assert live() == 1
    page.locator("#crop-open").click()
    expect(page.locator("#crop-image")).to_have_js_property("complete", True)
    box = page.locator("#crop-image").bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    expect(page.locator("#drop-title")).to_have_text("Pictures like part of beach_01.jpg")
    wait_for_results(page, 24, url=r"image=\w+&crop=")
    assert live() == 1                                  # the cropper is closed; the query picture is shown

    # A query of the collection shows no uploaded picture: nothing is left alive.
    page.locator("#grid .card").nth(0).locator("a").click()
    wait_for_results(page, 24, url=r"similar=\w+$")
    assert live() == 0
    page.locator("#keyword").fill("forest")
    page.locator("#keyword").press("Enter")
    wait_for_results(page, PER_TAG, url=r"q=forest$")
    assert live() == 0
    expect(page.locator("#query-preview")).to_be_hidden()

    # Back to the uploaded picture: shown again, through one new URL.
    page.go_back()
    page.go_back()
    expect(page.locator("#drop-title")).to_have_text("Pictures like part of beach_01.jpg")
    wait_for_results(page, 24)
    assert live() == 1


MODEL_UNAVAILABLE = ("Searching by picture isn't available right now: the server could not load its model. "
                     "Searching by words and tags still works.")


@pytest.mark.parametrize("site", ["modelless"], indirect=True)
def test_a_server_without_its_model_says_so_and_words_still_work(page, site):
    base, images = site
    page.goto(base + "/")
    expect(page.locator("#status")).to_contain_text(f"{TOTAL} pictures to search")
    with page.expect_response("**/api/search/image?*") as answer:
        drop(page, images / "beach" / "beach_01.jpg", "beach_01.jpg", "image/jpeg")
    assert answer.value.status == 503 and answer.value.json()["error"]["code"] == "model_unavailable"
    expect(page.locator("#status")).to_contain_text(MODEL_UNAVAILABLE)
    expect(page.locator("#status")).to_have_attribute("role", "alert")
    shot(page, "desktop-no-model")

    # Words, tags and "more like this" (stored vectors) need no model.
    page.locator("#keyword").fill("beach")
    page.locator("#keyword").press("Enter")
    wait_for_results(page, PER_TAG)
    page.locator("#grid .card", has_text="beach_04.jpg").click()
    wait_for_results(page, 24, url=r"similar=\w+$")

    # A region of it does: the model describes the region.
    page.locator("#crop-open").click()
    expect(page.locator("#crop-image")).to_have_js_property("complete", True)
    box = page.locator("#crop-image").bounding_box()
    with page.expect_response(re.compile(r"/similar\?.*crop=")) as answer:
        page.mouse.move(box["x"] + 2, box["y"] + 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
    assert answer.value.status == 503 and answer.value.json()["error"]["code"] == "model_unavailable"
    expect(page.locator("#status")).to_contain_text(MODEL_UNAVAILABLE)


@pytest.mark.parametrize("site", ["storeless"], indirect=True)
def test_a_store_that_went_away_is_named_as_such(page, site):
    base, relay = site
    page.goto(base + "/")
    expect(page.locator("#status")).to_contain_text("The collection is empty")
    relay.close()
    with page.expect_response("**/api/search?*") as answer:
        page.locator("#keyword").fill("beach")
        page.locator("#keyword").press("Enter")
    assert answer.value.status == 503 and answer.value.json()["error"]["code"] == "store_unavailable"
    expect(page.locator("#status")).to_contain_text("The picture collection can't be reached right now. "
                                                    "Try again in a moment.")
    expect(page.locator("#status button", has_text="Try again")).to_be_visible()
