"""The Training widget in a real browser, served by Voila from a one-cell notebook.

The view starts a short training run (300 digits, 2 epochs); the test watches the loss and
accuracy chart grow while it trains (every change of the chart's point count is recorded in the
page, so a short run cannot slip between two polls), waits for the end of the run, then moves the
checkpoint slider one step left like a user (focus + ArrowLeft) and checks that Python answered
with the first-layer filters of that earlier epoch (a different picture, the details naming the
epoch), and that no request left the machine.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until
from widget_view import signature, status_text, trait_img

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 240.0

CELL = """import cnnvis_widgets as cw
from cnnvis_widgets.core.training import digits_data
w = cw.Training(data=digits_data(train_per_class=30, test_per_class=10), epochs=2,
                batch_size=20, am_steps=8, n_units=2)
w"""

# records every value of the chart's data-points attribute into svg.__cvPoints
RECORD_POINTS_JS = """svg => {
    svg.__cvPoints = [Number(svg.getAttribute('data-points'))];
    new MutationObserver(() => svg.__cvPoints.push(Number(svg.getAttribute('data-points'))))
        .observe(svg, {attributes: true, attributeFilter: ['data-points']});
}"""


def test_training_chart_grows_and_the_checkpoint_slider_scrubs_the_filters(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(CELL, has='img[data-cv-trait="filters"]')
    t_view = time.monotonic()
    chart = root.locator('svg[data-cv="chart"][data-trait="curves"]')
    chart.evaluate(RECORD_POINTS_JS)

    # 1. The run trains: the chart grows, the status ends with "done".
    wait_until(lambda: status_text(root), lambda s: "done" in s, RUN_TIMEOUT, "the end of the run")
    print(f"trained {time.monotonic() - t_view:.1f} s after the view; {status_text(root)!r}")
    seen = chart.evaluate("svg => svg.__cvPoints")
    grew = sorted(set(seen))
    assert len(grew) >= 3 and grew[-1] >= 30, seen  # 30 steps x 2 series + 3 test points
    assert chart.get_attribute("data-series") == "3"
    legend = root.locator('[data-cv="chart-legend"] [data-series]')
    assert legend.count() == 3

    # 2. The slider is at the last checkpoint; its filters are shown.
    slider = root.locator('[data-cv-control="checkpoint"]')
    assert slider.input_value() == "2"
    filters = trait_img(root, "filters")
    last = wait_until(lambda: signature(filters), bool, 60, "the filters picture")
    assert image_stats(filters)["range"] > 10
    details = root.locator('[data-cv="text"][data-trait="details"]')
    assert (details.text_content() or "").startswith("epoch 2")
    wait_until(lambda: signature(trait_img(root, "top_patches")), bool, 120, "the top-9 patches")

    # 3. Scrub one epoch back: Python draws epoch 1's filters.
    slider.focus()
    slider.press("ArrowLeft")
    assert slider.input_value() == "1"
    earlier = wait_until(
        lambda: signature(filters),
        lambda s: bool(s) and s["sig"] != last["sig"],
        60,
        "the filters of epoch 1",
    )
    assert (earlier["w"], earlier["h"]) == (last["w"], last["h"])
    wait_until(
        lambda: details.text_content() or "", lambda t: t.startswith("epoch 1"), 30, "details"
    )
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""

    slider.blur()
    root.screenshot(path=str(artifacts_dir / "training.png"))
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
