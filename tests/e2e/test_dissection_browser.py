"""The Dissection widget in a real browser, served by Voila from a small notebook.

The test presses Run (two passes over a small probe set on the default model), watches the
units table fill from empty, the bars appear and the status say "done", then clicks a row like a
user: the row is highlighted, Python draws that unit's top probe images (a new picture in the
image panel) and the text panel names the unit. No request may leave the machine.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until
from widget_view import signature, status_text

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 240.0

CELL = """import cnnvis_widgets as cw
w = cw.Dissection(
    layers=["_blocks.2", "_blocks.6"], n_images=48, image_size=112, batch_size=16, auto_run=False
)
w"""

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


def test_table_fills_and_a_row_click_shows_that_unit(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    t0 = time.monotonic()
    root = voila_widget(CELL, has='table[data-cv="table"]')
    table = root.locator('table[data-cv="table"]').first
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
