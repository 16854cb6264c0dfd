"""The static atlas in Chromium, from file:// and from a static HTTP server on 127.0.0.1: the
network view -> a layer -> a unit card, the search by concept and by class, a hostile label shown
as text, and not one request that leaves the machine (every request is recorded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e_helpers import static_server

from cnnvis_widgets.site import export_site
from tests.site_helpers import write_tiny_atlas

pytestmark = pytest.mark.e2e

# a label that would run script if it reached the page as HTML
LABEL = "<img src=x onerror=alert(1)> stripes"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("atlas-site")
    return export_site(write_tiny_atlas(root / "atlas", label=LABEL), root / "site").parent


@pytest.fixture(scope="module")
def http_base(site: Path):
    with static_server(site) as base:
        yield base


def _browse(browser, base: str, artifacts_dir: Path, tag: str) -> list[str]:
    """Click through the site at ``base``; return every request the pages made."""
    requests: list[str] = []
    problems: list[str] = []
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, service_workers="block")
    local = ("file://", base) if base.startswith("http") else ("file://",)

    def guard(route) -> None:  # hermetic: anything else is aborted (and fails the test below)
        if route.request.url.startswith(local):
            route.continue_()
        else:
            route.abort("blockedbyclient")

    ctx.route("**/*", guard)
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
    page.on("websocket", lambda ws: problems.append(f"websocket {ws.url}"))
    page.on("pageerror", lambda e: problems.append(f"page error {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))

    def images_loaded(selector: str) -> None:
        # loading="lazy" images need not be there at the load event: wait (a broken one never is)
        try:
            page.wait_for_function(
                "s => { const els = Array.from(document.querySelectorAll(s));"
                " return els.length > 0 && els.every(i => i.complete && i.naturalWidth > 0); }",
                arg=selector,
                timeout=15_000,
            )
        except Exception as exc:  # noqa: BLE001 - reported with the page and the selector
            raise AssertionError(f"{tag}: images {selector} did not load on {page.url}") from exc

    try:
        page.goto(base + "index.html")
        assert page.locator("h1").inner_text() == "tiny: the network"
        images_loaded("section.layer-row:first-of-type img")
        # network -> layer (a click)
        page.locator("h3 a", has_text="conv.1").click()
        page.wait_for_url(re.compile(r"layers/000-conv\.1/index\.html$"))
        assert page.locator("h1").inner_text() == "Layer conv.1"
        assert page.locator("ul.units > li").count() == 3
        images_loaded("ul.units img")
        # layer -> unit (from the keyboard)
        page.locator('ul.units a[href$="units/0.html"]').focus()
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"units/0\.html$"))
        assert page.locator("h1").inner_text() == "Unit 0 of layer conv.1"
        dissection = page.locator("dl.facts").first.inner_text()
        assert LABEL in dissection and "0.21" in dissection  # the label as text, with its IoU
        assert page.get_by_role("heading", name="What ablating it does").count() == 1
        images_loaded(".figures img, .patches img")
        page.screenshot(path=str(artifacts_dir / f"atlas-site-unit-{tag}.png"), full_page=True)
        # the concept's link -> the search, run from the URL's query
        page.locator("dl.facts a").first.click()
        page.wait_for_url(re.compile(r"search\.html\?by=concept"))
        results = page.locator("#results > li")
        results.first.wait_for()
        assert results.count() == 1 and "unit 0 of layer conv.1" in results.inner_text()
        assert LABEL in results.inner_text()
        # by class, typed in
        page.select_option("#by", "class")
        page.fill("#q", "tabby")
        page.wait_for_function("document.querySelectorAll('#results > li').length === 2")
        texts = results.all_inner_texts()
        assert "unit 0 of layer conv.1" in texts[0] and "weight 0.8" in texts[0]  # strongest first
        assert "unit 2 of layer conv.1" in texts[1]
        # a best match below the IoU threshold is found, and said to be no label
        page.select_option("#by", "concept")
        page.fill("#q", "grass")
        page.wait_for_function("document.querySelectorAll('#results > li').length === 1")
        assert "below the IoU threshold: grass" in results.inner_text()
        page.fill("#q", "no such thing")
        page.wait_for_function("document.querySelectorAll('#results > li').length === 0")
        assert "No unit matches" in page.locator("#results-status").inner_text()
        # the header's search form on any page, then a result -> its card
        page.goto(base + "layers/001-head_2/index.html")
        page.fill("#quick-q", "sky")
        page.press("#quick-q", "Enter")
        page.wait_for_url(re.compile(r"search\.html\?q=sky"))
        results.first.wait_for()
        assert results.count() == 1
        results.first.locator("a").click()
        page.wait_for_url(re.compile(r"layers/000-conv\.1/units/2\.html$"))
        assert page.locator("h1").inner_text() == "Unit 2 of layer conv.1"
    finally:
        ctx.close()
    assert problems == [], problems
    return requests


def test_atlas_site_offline_from_file_and_http(browser, site, http_base, artifacts_dir) -> None:
    for tag, base in (("file", site.resolve().as_uri() + "/"), ("http", http_base)):
        requests = _browse(browser, base, artifacts_dir, tag)
        off_machine = [u for u in requests if not u.startswith(("file://", "http://127.0.0.1:"))]
        assert off_machine == [], f"{tag}: requests off the machine: {off_machine}"
        # the recorder saw the site's own files (so an empty list above means something)
        for name in ("static/site.css", "static/site.js", "search-index.js", "am/0.png"):
            assert any(u.startswith(base) and u.split("?")[0].endswith(name) for u in requests), (
                tag,
                name,
            )
