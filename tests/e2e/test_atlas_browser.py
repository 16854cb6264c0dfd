"""The Atlas in a real browser (Voila): network view -> click a layer row -> click a unit cell.

A small notebook builds the atlas of a tiny network with tiny settings; the view's automatic first
run fills the network table; the test clicks the row of ``relu2`` like a user, waits for the
layer grid to fill (the status and the text panel, written by Python), clicks the cell of unit 1
in the grid picture, and checks the unit card (its pictures decoded, its text naming the unit).
No request may leave the machine.
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until, write_notebook

pytestmark = pytest.mark.e2e

PAGE_TIMEOUT = 300.0
RESULT_TIMEOUT = 180.0

CELL = """import torch
torch.set_num_threads(1)
from tests.conftest import make_tiny
import cnnvis_widgets as cw
handle = cw.load_model(make_tiny(), device="cpu", input_size=32)
atlas = cw.Atlas(handle, steps=8, size=32, batch=8, probe_images=16, inversion_steps=8,
                 n_images=16, variants=2)
atlas"""


def _text(root) -> str:
    return " ".join(root.locator('[data-cv="text"]').all_text_contents())


def test_click_from_network_into_layer_and_unit(
    voila_server, page, blocked_requests, browser_log, artifacts_dir, tmp_path
):
    nb = write_notebook(tmp_path / "atlas.ipynb", [CELL])
    server = voila_server(nb, env={"CNNVIS_CACHE_DIR": str(tmp_path / "cache")})
    t0 = time.monotonic()
    page.goto(server.url, wait_until="domcontentloaded", timeout=PAGE_TIMEOUT * 1000)
    table = page.locator('table[data-cv="table"]').first
    root = page.locator(".cv-root").first  # the notebook's only widget (its panels change)
    table.wait_for(state="visible", timeout=PAGE_TIMEOUT * 1000)
    print(f"view visible {time.monotonic() - t0:.1f} s after the server start")

    # 1. network view: one row per layer, filled by the automatic first run
    row = table.locator('tbody tr[data-cv-key="relu2"]')
    row.wait_for(state="visible", timeout=RESULT_TIMEOUT * 1000)
    assert table.locator("tbody tr[data-cv-key]").count() == 2
    strips = root.locator('img[data-cv="image"][data-cv-trait="strips"]')
    wait_until(lambda: image_stats(strips), lambda s: s["width"] > 0, 60, "the layer strips")

    # 2. click the row of relu2: the layer view opens and its grid fills
    row.click()
    grid = root.locator('img[data-cv="image"][data-cv-trait="grid_image"]')
    grid.wait_for(state="visible", timeout=RESULT_TIMEOUT * 1000)
    wait_until(
        lambda: _text(root),
        lambda s: "relu2: 16/16 units done" in s,
        RESULT_TIMEOUT,
        "the filled grid",
    )
    stats = wait_until(lambda: image_stats(grid), lambda s: s["width"] > 0, 60, "the grid image")
    assert stats["range"] > 10 and stats["colors"] > 16, stats
    assert root.locator('[data-grid="4x4"]').count() == 1  # the click grid of the panel

    # 3. click the cell of unit 1 (row 0, column 1 of the 4x4 grid sorted by unit)
    box = grid.bounding_box()
    assert box is not None
    grid.click(position={"x": box["width"] * 1.5 / 4, "y": box["height"] * 0.5 / 4})
    card = root.locator('img[data-cv="image"][data-cv-trait="card_am"]')
    card.wait_for(state="visible", timeout=RESULT_TIMEOUT * 1000)
    wait_until(
        lambda: _text(root),
        lambda s: "relu2 unit 1" in s and "feeds most" in s,
        RESULT_TIMEOUT,
        "the unit card of relu2 unit 1",
    )
    for trait in ("card_am", "card_patches", "card_projections"):
        img = root.locator(f'img[data-cv="image"][data-cv-trait="{trait}"]')
        s = wait_until(lambda img=img: image_stats(img), lambda s: s["width"] > 0, 60, trait)
        assert s["range"] > 10, (trait, s)
    assert root.locator('[data-cv="bars"]').first.is_visible()
    assert (root.locator('[data-cv="error"]').text_content() or "").strip() == ""

    root.screenshot(path=str(artifacts_dir / "atlas.png"))

    # 4. open the unit in the Activation Maximization widget: it appears below the atlas
    roots = page.locator(".cv-root")
    assert roots.count() == 1
    root.locator('button[data-cv-action="open_am"]').click()
    wait_until(lambda: roots.count(), lambda n: n == 2, RESULT_TIMEOUT, "the opened widget")
    opened = roots.nth(1)
    assert opened.locator('[data-cv="title"]').inner_text() == "Activation maximization"
    assert opened.locator('[data-cv-control="unit"]').count() == 1
    wait_until(
        lambda: opened.locator('[data-cv="status"]').inner_text(),
        lambda s: "relu2 unit 1" in s,
        RESULT_TIMEOUT,
        "the opened widget on relu2 unit 1",
    )
    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
