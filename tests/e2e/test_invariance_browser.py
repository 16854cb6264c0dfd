"""The Invariance widget in a real browser, served by Voila from a small notebook.

The widget moves the cat photo (EfficientNet-Lite0, 3 values per transformation) when its view is
ready. The test waits for the three charts to be drawn from Python's multi-series values (one
line per layer and the dashed class probability, with a legend naming them) and for the strips
of transformed photos beneath them to be decoded and not blank, then checks the status line and
that no request left the machine.
"""

from __future__ import annotations

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 240.0

CELL = """import cnnvis_widgets as cw
w = cw.Invariance(image="cat", layers="_act0, _blocks.5, _avg_pooling", steps=3)
w"""

CHARTS_JS = """root => [...root.querySelectorAll('svg[data-cv="chart"]')].map(svg => ({
    trait: svg.getAttribute('data-trait'),
    series: Number(svg.getAttribute('data-series')),
    points: Number(svg.getAttribute('data-points')),
    legend: [...svg.parentElement.querySelectorAll('[data-cv="chart-legend"] [data-series]')]
        .map(k => k.getAttribute('data-series')),
    dashed: [...svg.parentElement.querySelectorAll('[data-cv="chart-legend"] [data-series]')]
        .filter(k => k.querySelector('.cv-dashed')).map(k => k.getAttribute('data-series')),
}))"""


def test_the_three_invariance_charts_and_strips_are_drawn(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(CELL, has='svg[data-cv="chart"][data-trait="rotate_chart"]')
    charts = wait_until(
        lambda: root.evaluate(CHARTS_JS),
        lambda cs: len(cs) == 3 and all(c["series"] == 4 for c in cs),
        TIMEOUT,
        "three charts of four series",
    )
    assert [c["trait"] for c in charts] == ["translate_chart", "scale_chart", "rotate_chart"]
    for c in charts:
        assert c["points"] == 4 * 3, c  # 3 values x (3 layers + the probability)
        assert c["legend"][:3] == ["_act0", "_blocks.5", "_avg_pooling"], c
        assert c["legend"][3] == "p(class)" and c["dashed"] == ["p(class)"], c
    for trait in ("translate_images", "scale_images", "rotate_images"):
        strip = root.locator(f'img[data-cv="image"][data-cv-trait="{trait}"]')
        stats = wait_until(lambda s=strip: image_stats(s), lambda s: s["width"] > 0, 60, trait)
        assert stats["width"] > 3 * 224 and stats["range"] > 30 and stats["colors"] > 100, stats
    status = root.locator('[data-cv="status"]')
    wait_until(lambda: status.text_content() or "", lambda t: "class" in t, 60, "a done status")
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""
    root.screenshot(path=str(artifacts_dir / "invariance.png"))
    assert unexpected_requests(blocked_requests) == []
