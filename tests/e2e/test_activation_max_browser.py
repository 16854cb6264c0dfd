"""The Activation Maximization widget in a real browser: the tour notebook served by Voila.

The widget starts a run when its view is ready; the test waits for streamed frames, moves the
unit slider like a user (focus + ArrowRight), and checks the whole loop: the browser wrote the
trait, Python restarted the run (new ``data-run-id``), frames of the new run are drawn
(``data-frames`` grows, ``data-step`` advances), the status line written by Python names the new
unit, the picture is decoded and not blank, and no request left the machine. Then it ticks
*Show importance (alpha)* (issue 17): the overlay panel appears without a restart, and after
Stop it shows the image seen through MaCo's importance map (decoded, not blank).
"""

from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import REPO, image_stats, root_state, unexpected_requests, wait_until
from widget_view import (
    install_recorder,
    open_widget,
    run_summary,
    signature,
    trait_img,
    wait_for_new_run,
)

pytestmark = pytest.mark.e2e

TOUR = REPO / "notebooks" / "00_tour.ipynb"
FRAMES_TIMEOUT = 180.0
# The notebooks run fewer optimization steps in their code cells when this is set; the widget's
# own run is not affected. Voila executes every cell before the kernel handles the view's
# "ready" message, so this shortens the wait for the first frame.
NOTEBOOK_ENV = {"CNNVIS_NOTEBOOK_STEPS": "32"}


def test_unit_slider_restarts_the_run_with_the_new_unit(
    voila_server, page, blocked_requests, browser_log, artifacts_dir
):
    if not TOUR.is_file():
        pytest.fail(f"{TOUR.relative_to(REPO)} does not exist yet")
    t0 = time.monotonic()
    server = voila_server(TOUR, env=NOTEBOOK_ENV)
    print(f"voila answered after {server.start_seconds:.1f} s")

    root = open_widget(page, server.url, has='[data-cv-control="unit"]')
    t_view = time.monotonic()
    print(f"widget view visible {t_view - t0:.1f} s after the server start")

    # 1. The automatic first run streams frames.
    first = wait_until(
        lambda: root_state(root), lambda s: s["frames"] > 0, FRAMES_TIMEOUT, "the first frame"
    )
    print(f"first frame {time.monotonic() - t_view:.1f} s after the view appeared: {first}")
    img = root.locator('img[data-cv="image"]')
    stats = wait_until(
        lambda: image_stats(img), lambda s: s["width"] > 0, 60, "a decoded picture in the <img>"
    )
    assert stats["height"] > 0
    # Not a blank/flat picture: the optimization starts from faint noise (Lucid's sd 0.01) and
    # grows texture within a few steps; on a loaded machine the first frames may still be faint.
    stats = wait_until(
        lambda: image_stats(img),
        lambda s: s["range"] > 10 and s["colors"] > 16,
        FRAMES_TIMEOUT,
        "a textured picture",
    )

    # 2. Move the unit slider one step to the right, as a user would with the keyboard.
    slider = root.locator('[data-cv-control="unit"]')
    slider.wait_for(state="visible")
    old_unit = int(slider.input_value())
    install_recorder(root)
    before = root_state(root)
    slider.focus()
    slider.press("ArrowRight")
    new_unit = old_unit + 1
    assert int(slider.input_value()) == new_unit

    # 3. Python restarted the run and frames of the new run arrive.
    new_run = wait_for_new_run(root, before["runId"], FRAMES_TIMEOUT, "moving the unit slider")
    now = root_state(root)
    assert now["frames"] > before["frames"]
    assert now["runId"] >= new_run

    # 4. The status line (written by Python) names the new unit.
    unit_re = re.compile(rf"\bunit {new_unit}\b")
    status = root.locator('[data-cv="status"]')

    wait_until(
        lambda: status.text_content() or "",
        lambda text: bool(unit_re.search(text)),
        60,
        f"a status line naming unit {new_unit}",
    )

    # 5. The picture of the new run is decoded and not blank; no error is shown.
    stats = image_stats(img)
    assert stats["width"] > 0 and stats["range"] > 10 and stats["colors"] > 16, stats
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""

    # Let the new run draw a while longer so the screenshot (used by the README) shows
    # structure; the widget is screenshotted whatever the step reached.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and root.get_attribute("data-running") == "true":
        time.sleep(1)
    slider.blur()  # no focus ring in the picture
    root.screenshot(path=str(artifacts_dir / "activation_max.png"))
    print(run_summary(root, before))

    # 6. The importance (alpha) overlay toggle: its panel appears (the run goes on, no
    # restart); Stop ends the run and the overlay shows the image through its alpha map.
    run_id = root_state(root)["runId"]
    assert trait_img(root, "alpha_image").count() == 0
    root.locator('input[type="checkbox"][data-cv-control="show_alpha"]').check()
    root.locator('figure[data-cv-trait="alpha_image"]').wait_for(state="visible", timeout=30_000)
    assert root_state(root)["runId"] == run_id
    root.locator('[data-cv="stop"]').click()
    wait_until(lambda: signature(trait_img(root, "alpha_image")), bool, 120, "the alpha overlay")
    alpha = image_stats(trait_img(root, "alpha_image"))
    assert alpha["width"] > 0 and alpha["range"] > 10 and alpha["colors"] > 16, alpha

    # 7. Nothing but loopback traffic (Voila's own template CSS aside, which was aborted).
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
