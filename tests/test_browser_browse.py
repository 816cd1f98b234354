"""The page shows the collection on arrival and narrows it by camera, year, folder and dates; every card keeps
its controls and its text at phone width. Chromium through Playwright (tests/test_browser.py's set-up), the
real app on the embedded store, over pictures that carry EXIF (benchmarks.exif_photos.exif_bytes), some of
them tall and narrow. Screenshots go to test-artifacts/."""
from __future__ import annotations

import json
import re
import urllib.request

import pytest

from backend.config import Settings
from backend.features import FeatureExtractor
from backend.ingest import Indexer
from backend.stores import open_store
from benchmarks.exif_photos import exif_bytes
from indexer.scan import scan

from .conftest import FAST_ENV
from . import test_browser
from .test_browser import drop, expect, scene, serve_app, shot

browser, page = test_browser.browser, test_browser.page   # its fixtures: Chromium, and a desktop page on `site`

CAMERAS = [("Canon", "Canon EOS 5D"), ("Apple", "iPhone 12"), (None, None)]
COUNT = 40


@pytest.fixture(scope="module")
def exif_site(tmp_path_factory):
    """40 pictures in trips/alps, trips and home; cameras and years 2019-2021 by turns; every third tall."""
    root = tmp_path_factory.mktemp("browser-exif")
    tags = ["beach", "forest", "city"]
    for i in range(COUNT):
        folder = root / "images" / ["trips/alps", "trips", "home"][i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        make, model = CAMERAS[i % 3 if i % 7 else 2]
        size = (60, 160) if i % 3 == 1 else (160, 110)
        scene(tags[i % 3], 500 + i, size).save(
            folder / f"pic_{i:02d}.jpg", quality=90,
            exif=exif_bytes(make, model, f"{2019 + i // 3 % 3}:0{1 + i % 9}:1{i % 10} 10:00:00" if i % 5 else None))
    settings = Settings.from_env({**FAST_ENV, "LOOKALIKE_DATA_DIR": str(root / "data")})
    with open_store(settings) as store:
        assert Indexer(store, FeatureExtractor.from_settings(settings)).run(scan([root / "images"])).indexed == COUNT
    with serve_app(settings) as base:
        yield base


def get(url: str) -> dict:
    with urllib.request.urlopen(url) as response:
        return json.load(response)


@pytest.fixture
def site(exif_site):
    """What test_browser's `page` fixture opens: this module's app (base url, no image folder)."""
    return exif_site, None


def test_the_collection_shows_on_arrival_narrows_by_camera_year_and_dates_and_the_url_keeps_it(page, exif_site):
    base = exif_site
    page.goto(base + "/")
    expect(page.locator("#status")).to_contain_text(f"Showing 24 of {COUNT} pictures to search")
    expect(page.locator("#grid .card")).to_have_count(24)
    first = get(base + "/api/images?limit=1")["results"][0]
    expect(page.locator("#grid .name").first).to_have_text(first["filename"])        # newest taken first
    expect(page.locator("#grid .score").first).to_have_text(first["taken"][:10])
    shot(page, "browse-desktop-arrival")
    # more on scroll, without a click
    page.locator("#more").scroll_into_view_if_needed()
    expect(page.locator("#grid .card")).to_have_count(COUNT)

    canon = page.locator('.chip[data-facet="camera"][data-value="Canon EOS 5D"]')
    expected = int(canon.locator(".count").inner_text())
    canon.click()
    expect(page).to_have_url(re.compile(r"/\?camera=Canon\+EOS\+5D$"))
    expect(page.locator("#grid .card")).to_have_count(expected)
    expect(canon).to_have_attribute("aria-pressed", "true")
    year = page.locator('.chip[data-facet="year"][data-value="2020"]')
    in_year = int(year.locator(".count").inner_text())
    year.click()
    expect(page).to_have_url(re.compile(r"taken_from=2020-01-01&taken_to=2020-12-31"))
    expect(page.locator("#grid .card")).to_have_count(in_year)
    expect(page.locator("#taken-from")).to_have_value("2020-01-01")
    shot(page, "browse-desktop-narrowed")
    wanted = {r["id"] for r in get(base + "/api/images?camera=Canon+EOS+5D&taken_from=2020-01-01"
                                          "&taken_to=2020-12-31&limit=100")["results"]}
    assert len(wanted) == in_year

    # a picture clicked: more like it, among the pictures the filters leave
    page.locator("#grid .card a").first.click()
    expect(page).to_have_url(re.compile(r"similar=\w+.*camera=Canon"))
    expect(page.locator("#status")).to_contain_text("Showing")
    shown = page.locator("#grid .card").evaluate_all("(cards) => cards.map((c) => c.dataset.id)")
    assert shown and set(shown) <= wanted

    # the date range, typed; then a reload keeps every filter
    page.go_back()
    page.locator("#taken-from").fill("2019-03-01")
    page.locator("#taken-to").fill("2021-12-31")
    page.locator("#dates button").click()
    expect(page).to_have_url(re.compile(r"taken_from=2019-03-01&taken_to=2021-12-31"))
    count = get(base + "/api/images?camera=Canon+EOS+5D&taken_from=2019-03-01&taken_to=2021-12-31")["total"]
    expect(page.locator("#grid .card")).to_have_count(count)
    page.reload()
    expect(page.locator("#grid .card")).to_have_count(count)
    expect(page.locator('.chip[data-facet="camera"][data-value="Canon EOS 5D"]')).to_have_attribute(
        "aria-pressed", "true")


@pytest.mark.parametrize("width", [390, 320, 1280])
def test_every_card_keeps_its_buttons_name_and_score_at_every_width(browser, exif_site, width):
    context = browser.new_context(viewport={"width": width, "height": 800}, device_scale_factor=2,
                                  is_mobile=width < 600, has_touch=width < 600)
    page = context.new_page()
    try:
        tall = get(exif_site + "/api/images?limit=100&sort=name")["results"][1]          # pic_01: 60 x 160
        assert tall["height"] > 2 * tall["width"]
        page.goto(f"{exif_site}/?similar={tall['id']}")
        expect(page.locator("#grid .card")).to_have_count(24)
        page.evaluate("document.querySelectorAll('#grid img').forEach((img) => { img.loading = 'eager'; })")
        cards = page.evaluate("""() => [...document.querySelectorAll("#grid .card")].map((card) => {
            const box = card.getBoundingClientRect();
            const [plus, minus] = [...card.querySelectorAll(".mark")].map((b) => b.getBoundingClientRect());
            const text = (cls) => { const e = card.querySelector(cls); return {full: e.scrollWidth <= e.clientWidth,
                                                                                 width: e.clientWidth}; };
            return {width: box.width, left: box.left, right: box.right, plus: [plus.left, plus.right],
                    minus: [minus.left, minus.right], score: text(".score"), name: text(".name")};
        })""")
        for card in cards:
            assert card["width"] >= 112, card
            assert card["left"] <= card["plus"][0] and card["plus"][1] <= card["minus"][0] \
                and card["minus"][1] <= card["right"], card                           # both inside, apart
            assert card["score"]["full"], card                                          # "78% similar", whole
            assert card["name"]["width"] >= 60, card                                    # a name, not "p…"
        wide = page.evaluate("""(width) => [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > width + 1 && !e.closest(".chips"))
            .map((e) => `${e.tagName}.${e.className}#${e.id} ${e.scrollWidth}`).slice(-8)""", width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, wide     # nothing sticks out
        shot(page, f"browse-similar-tall-{width}")
    finally:
        context.close()


def test_what_arrives_late_never_overwrites_what_a_person_did_since(page, exif_site):
    """The collection and its facets load while a person already acts: a dropped file that isn't a picture keeps
    its message when the grid arrives, and dates typed before the chips arrive stay typed. Each answer is held
    back here until the person has acted, so the order that once lost their input happens every time."""
    held = []
    page.route(re.compile(r"/api/(images|facets)\?"), lambda route: held.append(route))
    page.goto(f"{exif_site}/?camera=Canon+EOS+5D")
    expect(page.locator("#status")).to_contain_text("Searching")
    for _ in range(500):                                   # both requests reach the route (at most 10 s)
        if len(held) == 2:
            break
        page.wait_for_timeout(20)
    assert len(held) == 2, [route.request.url for route in held]

    drop(page, b"just some notes\n", "notes.txt", "text/plain")
    page.locator("#taken-from").fill("2019-03-01")
    for route in held:
        route.continue_()
    expect(page.locator("#grid .card")).not_to_have_count(0)
    expect(page.locator('.chip[data-facet="camera"]').first).to_be_visible()
    expect(page.locator("#status")).to_contain_text("“notes.txt” isn't a picture")
    expect(page.locator("#taken-from")).to_have_value("2019-03-01")
    expect(page.locator("#taken-to")).to_have_value("")
