"""The Attribution widget's sanity check in a real browser, served by Voila.

The view computes the maps of the cat; the test ticks the "Sanity check" checkbox like a user and
sees the evidence panels appear and fill: the strip of maps (one tile per stage), the chart of
each method's rank correlation against the blocks randomized (one point per stage) and the
verdicts in words; no request leaves the machine.
"""

from __future__ import annotations

import pytest
from e2e_helpers import unexpected_requests, wait_until
from widget_view import signature, status_text, trait_img

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 240.0

CELL = """import cnnvis_widgets as cw
a = cw.Attribution(image="cat", sanity_blocks=2)
a"""


def chart_points(root, trait: str) -> int:
    chart = root.locator(f'[data-cv="chart"][data-trait="{trait}"]')
    if chart.count() == 0:
        return -1
    return int(chart.get_attribute("data-points") or 0)


def test_sanity_check_toggle_shows_the_strip_chart_and_verdicts(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(CELL, has='img[data-cv-trait="heatmap"]')
    wait_until(lambda: signature(trait_img(root, "heatmap")), bool, RESULT_TIMEOUT, "the map")
    wait_until(lambda: status_text(root), lambda s: "done" in s, 120, "the end of the run")
    assert trait_img(root, "sanity_strip").count() == 0  # off: no evidence panels
    assert chart_points(root, "sanity_saliency") == -1

    root.locator('input[type="checkbox"][data-cv-control="sanity_check"]').check()
    # the trained model's stage and two randomized blocks: three points per method's chart
    for trait in ("sanity_saliency", "sanity_guided_backprop"):
        wait_until(lambda t=trait: chart_points(root, t), lambda n: n == 3, RESULT_TIMEOUT, trait)
    strip = wait_until(
        lambda: signature(trait_img(root, "sanity_strip")),
        lambda s: bool(s) and s["w"] == 4 + 3 * (96 + 4),
        60,
        "the strip of the three stages",
    )
    assert strip["h"] == 2 * (18 + 96 + 30 + 4)  # a row per method
    text = root.locator('[data-cv="text"]').filter(has_text="Guided backprop")
    verdicts = wait_until(
        lambda: text.text_content() or "",
        lambda s: s.count("passes") + s.count("fails") == 2,
        60,
        "a verdict per method",
    )
    assert "Saliency" in verdicts
    wait_until(lambda: status_text(root), lambda s: "done" in s, 120, "the end of the run")
    root.screenshot(path=str(artifacts_dir / "attribution_sanity.png"))
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
