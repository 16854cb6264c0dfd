"""The Dissection widget in a real browser, served by Voila from a small notebook.

The test presses Run (two passes over a small probe set on the default model), watches the
units table fill from empty, the bars appear and the status say "done", then clicks a row like a
user: the row is highlighted, Python draws that unit's top probe images (a new picture in the
image panel) and the text panel names the unit. No request may leave the machine.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until, write_notebook

pytestmark = pytest.mark.e2e

PAGE_TIMEOUT = 300.0  # Voila runs the notebook (model load included) before the page is complete
RESULT_TIMEOUT = 240.0

CELL = """import cnnvis_widgets as cw
w = cw.Dissection(
    layers=["_blocks.2", "_blocks.6"], n_images=48, image_size=112, batch_size=16, auto_run=False
)
w"""

# A coarse signature of a decoded <img>: 12x12 luminances sampled on a grid.
SIGNATURE_JS = """img => {
    if (!img.complete || !img.naturalWidth) return null;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const out = [];
    for (let j = 0; j < 12; j++) for (let i = 0; i < 12; i++) {
        const x = Math.floor((i + 0.5) * c.width / 12), y = Math.floor((j + 0.5) * c.height / 12);
        const k = 4 * (y * c.width + x);
        out.push(Math.round((d[k] * 299 + d[k + 1] * 587 + d[k + 2] * 114) / 1000));
    }
    return {w: c.width, h: c.height, sig: out};
}"""

# Records the row count of the table each time its body changes (the table fills while the IoU
# pass tallies; a short run could end between two polls).
ROWS_RECORDER_JS = """table => {
    if (table.__cvRows) return;
    const log = [];
    table.__cvRows = log;
    const snap = () => log.push(Number(table.getAttribute('data-total') || 0));
    snap();
    new MutationObserver(snap).observe(table, {attributes: true, attributeFilter: ['data-total']});
}"""


def signature(img) -> dict | None:
    return img.evaluate(SIGNATURE_JS)


def status_text(root) -> str:
    return root.locator('[data-cv="status"]').text_content() or ""


def test_table_fills_and_a_row_click_shows_that_unit(
    voila_server, page, blocked_requests, browser_log, artifacts_dir, tmp_path
):
    nb = write_notebook(tmp_path / "dissection.ipynb", [CELL])
    server = voila_server(nb)
    t0 = time.monotonic()
    page.goto(server.url, wait_until="domcontentloaded", timeout=PAGE_TIMEOUT * 1000)
    table = page.locator('table[data-cv="table"]').first
    root = page.locator(".cv-root").filter(has=table).first
    root.wait_for(state="visible", timeout=PAGE_TIMEOUT * 1000)
    table.evaluate(ROWS_RECORDER_JS)
    print(f"view visible {time.monotonic() - t0:.1f} s after the server start")

    # 1. Run: the table fills with the 80 units of _blocks.6 (the middle layer shown first).
    assert int(table.get_attribute("data-total") or 0) == 0
    root.locator('[data-cv="run"]').click()
    wait_until(
        lambda: int(table.get_attribute("data-total") or 0),
        lambda n: n == 80,
        RESULT_TIMEOUT,
        "80 rows in the units table",
    )
    wait_until(lambda: status_text(root), lambda s: "done" in s, RESULT_TIMEOUT, "the end")
    history = table.evaluate("t => t.__cvRows")
    print(f"rows over time: {history}; status {status_text(root)!r}")
    assert history[0] == 0 and history[-1] == 80
    rows = table.locator("tbody tr[data-cv-key]")
    assert rows.count() == 80
    # sorted by IoU, descending (the table's default sort)
    ious = [
        float(x)
        for x in table.evaluate(
            "t => [...t.querySelectorAll('tbody tr')].map(r => r.children[3].textContent)"
        )
    ]
    assert ious == sorted(ious, reverse=True) and ious[0] > 0.04
    assert root.locator('[data-cv="bars"]').first.is_visible()

    # 2. The selected unit's picture and text are there.
    img = root.locator('img[data-cv="image"][data-cv-trait="unit_image"]')
    text = root.locator('[data-cv="text"]').first
    first = wait_until(lambda: signature(img), bool, 60, "the unit's top images")
    stats = image_stats(img)
    assert stats["range"] > 10 and stats["colors"] > 16, stats
    before = text.text_content() or ""
    assert "_blocks.6 unit 0:" in before

    # 3. Click the best unit's row (not unit 0) like a user.
    target = rows.nth(0)
    key = target.get_attribute("data-cv-key")
    if key == "0":
        target = rows.nth(1)
        key = target.get_attribute("data-cv-key")
    concept = target.locator("td").nth(1).text_content()
    target.click()
    wait_until(
        lambda: target.get_attribute("data-selected"),
        lambda v: v == "true",
        30,
        f"row {key} highlighted",
    )
    wait_until(
        lambda: text.text_content() or "",
        lambda s: f"_blocks.6 unit {key}: {concept}" in s,
        60,
        f"the text panel naming unit {key} and its concept {concept!r}",
    )
    after = wait_until(
        lambda: signature(img),
        lambda s: bool(s) and s["sig"] != first["sig"],
        60,
        f"new top images for unit {key}",
    )
    assert after["w"] == first["w"]  # same grid of top images, other pictures
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""

    target.scroll_into_view_if_needed()
    root.screenshot(path=str(artifacts_dir / "dissection.png"))
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
