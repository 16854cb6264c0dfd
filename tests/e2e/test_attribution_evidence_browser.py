"""The Attribution widget's sanity check in a real browser, served by Voila.

The view computes the maps of the cat; the test ticks the "Sanity check" checkbox like a user and
sees the evidence panels appear and fill: the strip of maps (one tile per stage), the chart of
each method's rank correlation against the blocks randomized (one point per stage) and a verdict
badge per method in words, updated while the stages stream in. Then it ticks
"Deletion/insertion" and sees one chart per kind with a curve per gradient map and the two
dashed baselines, growing batch by batch, and the AUC table of all seven orders; no request
leaves the machine.
"""

from __future__ import annotations

import pytest
from e2e_helpers import unexpected_requests, wait_until
from widget_view import signature, status_text, trait_img

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 240.0

CELL = """import cnnvis_widgets as cw
a = cw.Attribution(image="cat", sanity_blocks=2, curve_steps=4)
a"""


def chart_points(root, trait: str) -> int:
    chart = root.locator(f'[data-cv="chart"][data-trait="{trait}"]')
    if chart.count() == 0:
        return -1
    return int(chart.get_attribute("data-points") or 0)


# every change of the verdict text and the charts' points, as the browser shows them
STREAM_JS = """el => {
    if (el.__cvStream) return;
    const log = [];
    el.__cvStream = log;
    const attr = (sel, name) => {
        const e = el.querySelector(sel);
        return e ? Number(e.getAttribute(name) || 0) : -1;
    };
    const snap = () => {
        const v = el.querySelector('[data-cv="text"][data-trait="sanity_verdicts"]');
        const row = {
            points: attr('[data-cv="chart"][data-trait="sanity_saliency"]', 'data-points'),
            verdicts: v ? v.textContent : null,
            deletion: attr('[data-cv="chart"][data-trait="deletion_curve"]', 'data-points'),
        };
        const last = log[log.length - 1];
        if (!last || JSON.stringify(last) !== JSON.stringify(row)) log.push(row);
    };
    snap();
    new MutationObserver(snap).observe(el, {
        childList: true, characterData: true, subtree: true, attributes: true,
        attributeFilter: ['data-points'],
    });
}"""


def test_sanity_check_toggle_shows_the_strip_chart_and_verdicts(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(CELL, has='img[data-cv-trait="heatmap"]')
    wait_until(lambda: signature(trait_img(root, "heatmap")), bool, RESULT_TIMEOUT, "the map")
    wait_until(lambda: status_text(root), lambda s: "done" in s, 120, "the end of the run")
    assert trait_img(root, "sanity_strip").count() == 0  # off: no evidence panels
    assert chart_points(root, "sanity_saliency") == -1

    root.evaluate(STREAM_JS)
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
    text = root.locator('[data-cv="text"][data-trait="sanity_verdicts"]')
    verdicts = wait_until(
        lambda: text.text_content() or "",
        lambda s: s.count("passes") + s.count("fails") == 2,
        60,
        "a verdict per method",
    )
    assert "Saliency" in verdicts and "map changes with the weights (passes)" in verdicts
    wait_until(lambda: status_text(root), lambda s: "done" in s, 120, "the end of the run")
    stream = root.evaluate("el => el.__cvStream")
    # the badges were there before the last stage: first "randomizing...", then a verdict each
    early = [r["verdicts"] or "" for r in stream if 0 <= r["points"] < 3]
    assert any("randomizing the top blocks" in v for v in early), stream
    assert any(v.count("(passes)") + v.count("(fails)") == 2 for v in early), stream

    # the faithfulness curves: every gradient map and the two baselines, one chart per kind
    root.locator('input[type="checkbox"][data-cv-control="faithfulness"]').check()
    for trait in ("deletion_curve", "insertion_curve"):
        chart = root.locator(f'[data-cv="chart"][data-trait="{trait}"]')
        wait_until(lambda c=chart: int(c.get_attribute("data-series") or 0) if c.count() else 0,
                   lambda n: n == 7, RESULT_TIMEOUT, f"seven series in {trait}")  # fmt: skip
        assert chart_points(root, trait) == 7 * 5  # five points per curve (curve_steps=4)
        legend = chart.locator("xpath=..").locator('[data-cv="chart-legend"]')
        names = [k.get_attribute("data-series") for k in legend.locator(".cv-chart-key").all()]
        assert names == ["guided_backprop", "saliency", "deconvnet", "grad_cam",
                         "guided_grad_cam", "random", "centre"], names  # fmt: skip
        assert legend.locator(".cv-dashed").count() == 2  # the baselines
    table = root.locator('table[data-cv="table"][data-trait="faithfulness_rows"]')
    wait_until(lambda: int(table.get_attribute("data-rows") or 0), lambda n: n == 7, 60, "AUCs")
    grown = [r["deletion"] for r in root.evaluate("el => el.__cvStream") if r["deletion"] > 0]
    assert len(set(grown)) > 2 and grown == sorted(grown), grown  # drawn as batches finished
    wait_until(lambda: status_text(root), lambda s: "done" in s, 120, "the end of the run")
    root.screenshot(path=str(artifacts_dir / "attribution_sanity.png"))
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
