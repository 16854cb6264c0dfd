"""The Adversarial widget in a real browser, served by Voila from a small notebook.

The widget attacks the cat photo when its view is ready. The test waits for the first result
(prediction bars, adversarial image, summary), moves the epsilon slider one grey level like a user
(focus + ArrowRight), and checks the whole loop: the browser wrote the trait, Python restarted the
attack, and the prediction bars and the summary in the page changed to the new epsilon; the
pictures are decoded and not blank, the units panel fills in, and no request left the machine.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 180.0

CELL = """import cnnvis_widgets as cw
w = cw.Adversarial(image="cat", method="pgd-linf", epsilon=4 / 255, steps=5, am_steps=24,
                   n_units=6)
w"""

BARS_JS = """root => [...root.querySelectorAll('[data-cv="bars"] [data-cv-bar-row]')].map(row => [
    row.getAttribute('data-label'),
    ...[...row.querySelectorAll('[data-cv="bar"]')].map(
        b => [b.getAttribute('data-series'), b.getAttribute('data-value')]),
])"""


def _bars(root) -> list:
    return root.evaluate(BARS_JS)


def _text(root, trait: str) -> str:
    return root.locator(f'[data-cv="text"][data-trait="{trait}"]').text_content() or ""


def _decoded(img) -> bool:
    s = image_stats(img)
    return s["width"] > 0 and s["range"] > 10


def test_moving_epsilon_updates_the_prediction(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(CELL, has='[data-cv-control="epsilon"]')
    t_view = time.monotonic()
    handle = root.element_handle()

    # 1. The first attack (started by the view) fills the bars, the pictures and the summary.
    wait_until(
        lambda: _text(root, "details"), lambda s: "4/255" in s, RESULT_TIMEOUT, "the summary"
    )
    first_bars = wait_until(lambda: _bars(handle), bool, 30, "prediction bars")
    print(f"first result {time.monotonic() - t_view:.1f} s after the view appeared")
    series = {s for row in first_bars for s, _ in row[1:]}
    assert series == {"clean", "adversarial"}, first_bars
    maps = [f"attribution_{i}_{c}" for i in ("clean", "adversarial") for c in ("original", "new")]
    for trait in ("original", "perturbation", "adversarial", *maps):
        img = root.locator(f'img[data-cv="image"][data-cv-trait="{trait}"]')
        wait_until(lambda img=img: _decoded(img), bool, 30, f"a decoded {trait} picture")
    first_details = _text(root, "details")
    assert "clean:" in first_details and "adversarial:" in first_details

    # 2. Move the epsilon slider one grey level to the right, as a user would.
    slider = root.locator('[data-cv-control="epsilon"]')
    slider.focus()
    slider.press("ArrowRight")
    assert abs(float(slider.input_value()) - 5 / 255) < 1e-6

    # 3. Python re-ran the attack: the summary and the prediction bars follow the new epsilon.
    details = wait_until(
        lambda: _text(root, "details"),
        lambda s: "5/255" in s,
        RESULT_TIMEOUT,
        "a summary for epsilon 5/255",
    )
    new_bars = _bars(handle)
    assert new_bars and new_bars != first_bars, (first_bars, new_bars)
    status = root.locator('[data-cv="status"]')
    wait_until(lambda: status.text_content() or "", lambda s: "5/255" in s, 60, "the status line")
    print(f"after the move: {details.splitlines()[2]!r}")

    # 4. The units panel fills in (activation maximization after the attack), no error shown.
    units = root.locator('img[data-cv="image"][data-cv-trait="units_image"]')
    wait_until(lambda: _decoded(units), bool, RESULT_TIMEOUT, "the unit pictures")
    rows = root.locator('table[data-cv="table"] tbody tr')
    assert rows.count() == 6
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""
    wait_until(
        lambda: root.get_attribute("data-running"), lambda v: v == "false", 120, "the run's end"
    )
    slider.blur()
    # the widget is taller than the window: enlarge it so the screenshot holds every panel
    box = root.bounding_box()
    page.set_viewport_size({"width": 1280, "height": int(box["y"] + box["height"]) + 40})
    root.screenshot(path=str(artifacts_dir / "adversarial.png"))

    # 5. Nothing but loopback traffic (Voila's own template CSS aside, which was aborted).
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
