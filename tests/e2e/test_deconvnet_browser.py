"""The DeconvNet and Attribution widgets in a real browser, served by Voila from small notebooks.

DeconvNet: the view starts the dataset pass; the test waits for the 3x3 grids of patches and
projections, moves the unit slider like a user (focus + ArrowRight) and checks that Python
answered with a *new* 3x3 grid for the new unit (no new dataset pass), that clicking a patch
shows its whole image, and that no request left the machine.

Attribution: the view computes the maps of the cat; the test checks the top-5 bars, switches the
method with the select like a user (the map changes, no recomputation needed), uploads a picture
through the file input (the photo panel shows it) and again checks the network.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until
from PIL import Image
from widget_view import signature, status_text, trait_img

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 240.0

DECONV_CELL = """import cnnvis_widgets as cw
w = cw.DeconvNet(layer="_blocks.4", unit=7, n_images=32)
w"""

ATTR_CELL = """import cnnvis_widgets as cw
a = cw.Attribution(image="cat", method="guided_backprop")
a"""


def bars(root) -> list:
    return root.evaluate(
        """root => [...root.querySelectorAll('[data-cv="bars"] [data-cv-bar-row]')]
            .map(row => row.getAttribute('data-label'))"""
    )


def test_unit_slider_shows_a_new_3x3_grid(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir
):
    root = voila_widget(DECONV_CELL, has='img[data-cv-trait="patches"]')
    t_view = time.monotonic()

    # 1. The first run (dataset pass + projections) fills both grids.
    patches, projections = trait_img(root, "patches"), trait_img(root, "projections")
    first = wait_until(lambda: signature(patches), bool, RESULT_TIMEOUT, "the patch grid")
    first_proj = wait_until(lambda: signature(projections), bool, 60, "the projection grid")
    wait_until(lambda: status_text(root), lambda s: "done" in s, 60, "the end of the run")
    print(f"first grids {time.monotonic() - t_view:.1f} s after the view; {status_text(root)!r}")
    assert (first["w"], first["h"]) == (288, 288) and (first_proj["w"], first_proj["h"]) == (
        288,
        288,
    )
    for panel in ("patches", "projections"):
        fig = root.locator(f'figure[data-cv-trait="{panel}"]')
        assert fig.get_attribute("data-grid") == "3x3"
    assert "unit 7" in status_text(root)
    assert image_stats(patches)["range"] > 10  # real photos, not a blank grid

    # 2. Move the unit slider one step right, as a user would.
    slider = root.locator('[data-cv-control="unit"]')
    slider.focus()
    slider.press("ArrowRight")
    assert int(slider.input_value()) == 8

    # 3. A new 3x3 grid for unit 8, from the cached pass (no "dataset pass" in the status).
    seen_status: list[str] = []

    def new_grid():
        seen_status.append(status_text(root))
        return signature(patches)

    after = wait_until(
        new_grid,
        lambda s: bool(s) and s["sig"] != first["sig"],
        RESULT_TIMEOUT,
        "a new patch grid after moving the unit slider",
    )
    assert (after["w"], after["h"]) == (288, 288)
    wait_until(
        lambda: status_text(root),
        lambda s: bool(re.search(r"\bunit 8\b.*done", s)),
        120,
        "the status of the unit-8 run",
    )
    assert not any("dataset pass" in s for s in seen_status), seen_status
    proj_after = wait_until(
        lambda: signature(projections),
        lambda s: bool(s) and s["sig"] != first_proj["sig"],
        60,
        "new projections",
    )
    assert (proj_after["w"], proj_after["h"]) == (288, 288)
    details = root.locator('[data-cv="text"][data-trait="details"]').text_content() or ""
    assert details.startswith("_blocks.4 unit 8: top 9 of 32 images")

    # 4. Clicking a patch (middle cell = rank 5) shows its whole image with the projection.
    box = patches.bounding_box()
    assert box is not None
    patches.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    detail = trait_img(root, "detail")
    shown = wait_until(lambda: signature(detail), bool, 60, "the clicked image")
    assert (shown["w"], shown["h"]) == (224, 224)
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""

    slider.blur()
    root.screenshot(path=str(artifacts_dir / "deconvnet.png"))
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors


def test_attribution_method_select_and_upload(
    voila_widget, page, blocked_requests, browser_log, artifacts_dir, tmp_path
):
    root = voila_widget(ATTR_CELL, has='img[data-cv-trait="heatmap"]')

    # 1. The maps of the cat and its top-5 predictions.
    heat = trait_img(root, "heatmap")
    first = wait_until(lambda: signature(heat), bool, RESULT_TIMEOUT, "the guided map")
    labels = wait_until(lambda: bars(root), lambda b: len(b) == 5, 60, "five prediction bars")
    assert any("cat" in label for label in labels[:3]), labels
    wait_until(lambda: status_text(root), lambda s: "done" in s, 120, "the end of the run")
    assert "top-1" in status_text(root)
    wait_until(lambda: signature(trait_img(root, "all_maps")), bool, 30, "all five maps")

    # 2. Grad-CAM from the select: the map changes (re-composited, no recomputation).
    root.locator('select[data-cv-control="method"]').select_option("grad_cam")
    gradcam = wait_until(
        lambda: signature(heat),
        lambda s: bool(s) and s["sig"] != first["sig"],
        60,
        "the Grad-CAM map",
    )
    assert gradcam["w"] == 224
    assert root.locator('[data-cv-control="cam_layer"]').is_visible()
    root.screenshot(path=str(artifacts_dir / "attribution.png"))  # the cat, for the README

    # 3. Upload a picture through the file input: the photo panel shows it.
    photo = trait_img(root, "original")
    before = signature(photo)
    stripes = np.zeros((120, 160, 3), np.uint8)
    stripes[:, ::16] = 255
    path = tmp_path / "stripes.png"
    Image.fromarray(stripes).save(path)
    root.locator('input[type="file"][data-cv-control="upload"]').set_input_files(str(path))
    after = wait_until(
        lambda: signature(photo),
        lambda s: bool(s) and s["sig"] != before["sig"],
        RESULT_TIMEOUT,
        "the uploaded picture",
    )
    assert after["w"] == 224
    wait_until(lambda: status_text(root), lambda s: "upload" in s and "done" in s, 120, "run")
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
