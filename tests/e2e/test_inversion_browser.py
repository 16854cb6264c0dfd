"""The Inversion widget in a real browser, served by Voila from a small notebook.

The widget starts the regularized reconstruction of the cat photo from ``_blocks.3`` when its
view is ready. The test waits for streamed frames beside the original, then picks another layer
in the layer dropdown like a user, and checks the whole loop: the browser wrote the trait, Python
restarted the live reconstruction (a new ``data-run-id``), frames of the new run are drawn with
advancing steps, the feature-error chart restarts, the status line names the new layer, the
pictures are decoded and not blank, and no request left the machine.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, root_state, unexpected_requests, wait_until
from widget_view import install_recorder, run_summary, wait_for_new_run

pytestmark = pytest.mark.e2e

FRAMES_TIMEOUT = 180.0

CELL = """import cnnvis_widgets as cw
w = cw.Inversion(image="cat", layer="_blocks.3", size=96, steps=400)
w"""

CHART_POINTS_JS = """root => {
    const line = root.querySelector('[data-cv="chart-line"]');
    const pts = line ? (line.getAttribute('points') || '').trim() : '';
    return pts ? pts.split(/\\s+/).length : 0;
}"""


def test_changing_the_layer_restarts_the_live_reconstruction(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(CELL, has='[data-cv-control="layer"]')
    t_view = time.monotonic()

    # 1. The original is shown and the reconstruction streams frames beside it.
    original = root.locator('img[data-cv="image"][data-cv-trait="original"]')
    stats = wait_until(
        lambda: image_stats(original), lambda s: s["width"] > 0, 60, "the original picture"
    )
    assert stats["width"] == 96 and stats["range"] > 30 and stats["colors"] > 100, stats
    first = wait_until(
        lambda: root_state(root), lambda s: s["frames"] > 1, FRAMES_TIMEOUT, "the first frames"
    )
    print(f"first frames {time.monotonic() - t_view:.1f} s after the view appeared: {first}")
    recon = root.locator('img[data-cv="image"]:not([data-cv-trait])')
    stats = wait_until(lambda: image_stats(recon), lambda s: s["width"] > 0, 60, "a frame")
    assert stats["width"] == 96 and stats["range"] > 10 and stats["colors"] > 16, stats
    wait_until(lambda: root.evaluate(CHART_POINTS_JS), lambda n: n >= 2, 60, "feature-error points")
    status = root.locator('[data-cv="status"]')
    assert "_blocks.3" in (status.text_content() or "")

    # 2. Pick a deeper layer in the dropdown, as a user would.
    select = root.locator('select[data-cv-control="layer"]')
    install_recorder(root)
    before = root_state(root)
    select.select_option("_blocks.8")
    assert select.input_value() == "_blocks.8"

    # 3. Python restarted the reconstruction and frames of the new run arrive.
    wait_for_new_run(root, before["runId"], FRAMES_TIMEOUT, "changing the layer")
    assert root_state(root)["frames"] > before["frames"]

    # 4. The status line (written by Python) names the new layer; no error.
    wait_until(
        lambda: status.text_content() or "",
        lambda text: "_blocks.8" in text and "_blocks.3" not in text,
        60,
        "a status line naming _blocks.8",
    )
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""

    # 5. The new reconstruction is decoded and not blank; the original did not change.
    stats = image_stats(recon)
    assert stats["width"] == 96 and stats["range"] > 10 and stats["colors"] > 16, stats
    assert image_stats(original)["width"] == 96

    # Let the run draw a while so the screenshot (used by the README) shows structure.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and root_state(root)["step"] < 120:
        time.sleep(1)
    root.screenshot(path=str(artifacts_dir / "inversion.png"))
    print(run_summary(root, before))

    # 6. Nothing but loopback traffic (Voila's own template CSS aside, which was aborted).
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
