"""The front end in a real JupyterLab 4 (issue 13): keys, typed values, waiting for the kernel.

Keys inside a widget stay inside it.
JupyterLab's notebook shortcuts listen on the document: with focus on a slider inside an output,
ArrowUp/ArrowDown used to move the active cell instead of the slider, and Enter in a number box
did not apply the typed value. The test runs a notebook with an Activation Maximization widget
(``auto_run=False``: nothing to compute), focuses the unit slider, presses ArrowRight and
ArrowUp, and checks that the slider moved and the active cell did not; then types a seed and
presses Enter, and checks that the kernel got it (a later cell prints it).

Waiting for the kernel: during "Run All" the kernel handles a widget's ``ready`` only after the
last cell; a view that would otherwise sit blank says "waiting for the kernel…" until the
kernel answers, then streams frames.
"""

from __future__ import annotations

import pytest
from e2e_helpers import unexpected_requests, wait_until, write_notebook

pytestmark = pytest.mark.e2e

CELLS = [
    "import cnnvis_widgets as cw\n"
    "w = cw.ActivationMaximization(layer='_blocks.8', auto_run=False)\n"
    "w",
    "print('seed is', w.seed, 'unit is', w.unit)",
]

ACTIVE_CELL_JS = """() => {
    const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
    const cells = [...nb.querySelectorAll('.jp-Cell')];
    return cells.findIndex(c => c.classList.contains('jp-mod-active'));
}"""


def _open_and_run_all(page, lab_server, folder, name: str, cells: list[str]):
    """Write ``cells`` to ``folder/name``, open it in JupyterLab, wait for the idle kernel and
    press Run > Run All Cells; return the notebook panel."""
    write_notebook(folder / name, cells)
    server = lab_server(folder, open_path=name)
    page.goto(server.url, wait_until="domcontentloaded")
    page.locator(".jp-Notebook").first.wait_for(state="visible")
    page.locator("#jp-main-statusbar", has_text="Idle").wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def test_arrow_keys_move_the_slider_not_the_cell_and_enter_applies(
    lab_server, page, blocked_requests, tmp_path
):
    nb = _open_and_run_all(page, lab_server, tmp_path, "keys.ipynb", CELLS)
    slider = nb.locator('input[data-cv-control="unit"]')
    slider.wait_for(state="visible", timeout=180_000)
    nb.locator(".jp-OutputArea-output", has_text="seed is").wait_for(timeout=180_000)

    slider.click()  # focus (the click also moves the thumb; `start` is where it went)
    start = int(slider.input_value())
    cell_before = page.evaluate(ACTIVE_CELL_JS)
    slider.press("ArrowRight")
    slider.press("ArrowUp")
    slider.press("ArrowUp")
    assert int(slider.input_value()) == start + 3
    assert page.evaluate(ACTIVE_CELL_JS) == cell_before, "the active cell moved"
    assert slider.evaluate("e => e === document.activeElement")

    seed = nb.locator('input[data-cv-control="seed"]')
    seed.click()
    seed.fill("7")
    seed.press("Enter")
    assert page.evaluate(ACTIVE_CELL_JS) == cell_before
    # The kernel has the typed seed and the new unit: re-run the printing cell.
    out = nb.locator(".jp-OutputArea-output", has_text="seed is")
    out.click()
    page.keyboard.press("Shift+Enter")
    wait_until(
        lambda: out.first.text_content() or "",
        lambda s: f"seed is 7 unit is {start + 3}" in s,
        60,
        "the kernel's seed and unit",
    )
    assert unexpected_requests(blocked_requests) == []


WAIT_CELLS = [
    "import time\n"
    "import cnnvis_widgets as cw\n"
    "w = cw.ActivationMaximization(layer='_blocks.8', size=64, steps=400)\n"
    "w",
    # a slow cell after the widget: the kernel stays busy until the test releases it (no fixed
    # wait; five minutes at most)
    "import pathlib\n"
    "t0 = time.monotonic()\n"
    "while not pathlib.Path('release').exists() and time.monotonic() - t0 < 300:\n"
    "    time.sleep(0.05)",
    "print('cells done')",
]


def test_a_view_says_it_waits_for_the_kernel_during_run_all(
    lab_server, page, blocked_requests, tmp_path
):
    nb = _open_and_run_all(page, lab_server, tmp_path, "wait.ipynb", WAIT_CELLS)
    root = nb.locator(".cv-root").first
    root.wait_for(state="visible", timeout=180_000)
    waiting = root.locator('[data-cv="waiting"]')
    # While the slow cell runs, the view says why nothing is shown.
    assert nb.locator(".jp-OutputArea-output", has_text="cells done").count() == 0
    assert root.get_attribute("data-waiting") == "true"
    assert waiting.is_visible() and "waiting for the kernel" in (waiting.text_content() or "")
    assert "waiting for the kernel" in (root.locator(".cv-empty").first.text_content() or "")
    (tmp_path / "release").touch()  # the slow cell ends
    # Once the cells are done, the kernel starts the run: the note goes, frames arrive.
    nb.locator(".jp-OutputArea-output", has_text="cells done").wait_for(timeout=180_000)
    wait_until(
        lambda: int(root.get_attribute("data-frames") or 0),
        lambda n: n > 0,
        180,
        "the first frame",
    )
    assert root.get_attribute("data-waiting") == "false"
    assert waiting.is_hidden()
    assert unexpected_requests(blocked_requests) == []
