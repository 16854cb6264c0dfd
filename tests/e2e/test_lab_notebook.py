"""The Activation Maximization widget in a real JupyterLab 4, as a teacher uses it.

The server is started like ``cnnvis lab`` / ``make lab`` starts it (the package's Lab settings:
widget state saved into notebooks, no news toast). A notebook of two cells (a markdown cell, then
the widget on the embedded EfficientNet-Lite0 at 64 px) is opened; the tests wait for the kernel's
"Idle" in the status bar and run the cell with Shift+Enter, as a user does.

* ``test_lab_live_widget_mouse_keyboard_and_refused_value``: frames arrive (``data-frames``
  grows); dragging the unit slider with the mouse restarts the run (new ``data-run-id``);
  ArrowRight/ArrowUp on the focused slider change its value and leave the active cell where it
  is (JupyterLab's notebook shortcuts must not get them); a refused seed (-5) typed into the
  number input and applied with Enter shows the kernel's message in the widget's error line and
  the input goes back to the kernel's value.
* ``test_lab_reopened_notebook_shows_the_last_picture``: the fresh notebook is not marked
  modified on opening and no news toast appears; after a run, Ctrl+S saves the widget state into
  the file; the kernel is shut down and the notebook opened again: the widget shows its last
  picture, not "Error displaying widget: model not found".
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from e2e_helpers import image_stats, root_state, unexpected_requests, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KERNEL_TIMEOUT = 180.0
FRAMES_TIMEOUT = 180.0
WIDGET_CODE = (
    "import cnnvis_widgets as cw\n"
    'am = cw.ActivationMaximization("efficientnet_lite0", layer="_blocks.2", unit=3, size=64, '
    "steps={steps})\n"
    "am"
)


def _notebook_metadata() -> dict:
    """The metadata the generator gives the teaching notebooks (scripts/make_notebooks.py)."""
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", REPO / "scripts" / "make_notebooks.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.notebook_metadata()


def write_widget_notebook(path: Path, steps: int) -> Path:
    nb = nbformat.v4.new_notebook(metadata=_notebook_metadata())
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A unit of EfficientNet-Lite0\n\nRun the cell below."),
        nbformat.v4.new_code_cell(WIDGET_CODE.format(steps=steps)),
    ]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nbformat.write(nb, str(path))
    return path


# ------------------------------------------------------------------------------------ helpers
def notebook_panel(page):
    """The visible notebook (JupyterLab keeps hidden panels in the DOM)."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first


def wait_kernel_idle(page, timeout: float = KERNEL_TIMEOUT) -> None:
    page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).first.wait_for(
        state="visible", timeout=timeout * 1000
    )


def notebook_tab(page, name: str):
    return page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=name).first


def is_dirty(page, name: str) -> bool:
    return "jp-mod-dirty" in (notebook_tab(page, name).get_attribute("class") or "")


def active_cell_index(page) -> int:
    return notebook_panel(page).evaluate(
        """panel => [...panel.querySelectorAll('.jp-Notebook .jp-Cell')]
            .findIndex(c => c.classList.contains('jp-mod-active'))"""
    )


def run_cell(page, index: int) -> None:
    """Select cell ``index`` by clicking its input, then Shift+Enter (run and advance)."""
    cell = notebook_panel(page).locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def widget_root(page):
    return (
        notebook_panel(page)
        .locator(".cv-root")
        .filter(has=page.locator('[data-cv-control="unit"]'))
    )


def reveal(root, control) -> None:
    """Open the control's group if a collapsed group hides it (advanced groups start closed)."""
    if control.is_visible():
        return
    group = root.locator("[data-cv-group]").filter(has=control).first
    for title in ("summary", "legend", "[data-cv='group-toggle']", "button"):
        head = group.locator(title).first
        if head.count() and head.is_visible():
            head.click()
            if control.is_visible():
                return
    control.scroll_into_view_if_needed()


def drag_range(page, slider, to_fraction: float) -> None:
    """Press the mouse on the slider's thumb, move it to ``to_fraction`` of the track, release."""
    box = slider.bounding_box()
    assert box is not None, "the slider is not visible"
    lo, hi = float(slider.get_attribute("min") or 0), float(slider.get_attribute("max") or 100)
    value = float(slider.input_value())
    frac = (value - lo) / (hi - lo) if hi > lo else 0.0
    y = box["y"] + box["height"] / 2
    thumb = 8  # about half the thumb: the track usable for the thumb's centre is inset
    x0 = box["x"] + thumb + frac * (box["width"] - 2 * thumb)
    x1 = box["x"] + thumb + to_fraction * (box["width"] - 2 * thumb)
    page.mouse.move(x0, y)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * i / 10, y)
        time.sleep(0.03)
    page.mouse.up()


def api(server, method: str, path: str) -> object:
    req = urllib.request.Request(
        server.base_url + path, method=method, headers={"Authorization": f"token {server.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def open_and_run_widget(page, server, name: str):
    page.goto(server.url, wait_until="domcontentloaded")
    t0 = time.monotonic()
    wait_kernel_idle(page)
    print(f"kernel idle {time.monotonic() - t0:.1f} s after opening {name}")
    run_cell(page, 1)
    root = widget_root(page)
    root.wait_for(state="visible", timeout=KERNEL_TIMEOUT * 1000)
    first = wait_until(
        lambda: root_state(root), lambda s: s["frames"] > 0, FRAMES_TIMEOUT, "the first frame"
    )
    print(f"first frame {time.monotonic() - t0:.1f} s after opening: {first}")
    return root


# -------------------------------------------------------------------------------------- tests
def test_lab_live_widget_mouse_keyboard_and_refused_value(
    cnnvis_lab_server, page, tmp_path, blocked_requests, browser_log
):
    t_start = time.monotonic()
    write_widget_notebook(tmp_path / "am.ipynb", steps=100_000)
    server = cnnvis_lab_server(tmp_path, "am.ipynb")
    root = open_and_run_widget(page, server, "am.ipynb")

    # 1. Frames keep arriving.
    s0 = root_state(root)
    s1 = wait_until(
        lambda: root_state(root),
        lambda s: s["frames"] >= s0["frames"] + 3,
        FRAMES_TIMEOUT,
        "more frames",
    )
    assert s1["step"] > s0["step"]
    img = root.locator('img[data-cv="image"]')
    stats = image_stats(img)
    assert stats["width"] > 0 and stats["range"] > 10, stats

    # 2. Drag the unit slider with the mouse: a new run starts with the new unit.
    slider = root.locator('[data-cv-control="unit"]')
    reveal(root, slider)
    old_unit = int(slider.input_value())
    before = root_state(root)
    drag_range(page, slider, 0.5)
    moved_unit = int(slider.input_value())
    assert moved_unit != old_unit, "the drag did not move the slider"
    wait_until(
        lambda: root_state(root),
        lambda s: s["runId"] > before["runId"],
        FRAMES_TIMEOUT,
        "a new run after dragging the unit slider",
    )
    status = root.locator('[data-cv="status"]')
    wait_until(
        lambda: status.text_content() or "",
        lambda text: bool(re.search(rf"\bunit {moved_unit}\b", text)),
        60,
        f"a status line naming unit {moved_unit}",
    )

    # 3. Keys on the focused slider move the slider, not the notebook's active cell.
    slider.focus()
    cell_before = active_cell_index(page)
    value = int(slider.input_value())
    slider.press("ArrowRight")
    assert int(slider.input_value()) == value + 1, "ArrowRight did not move the slider"
    slider.press("ArrowUp")
    assert int(slider.input_value()) == value + 2, "ArrowUp did not move the slider"
    assert active_cell_index(page) == cell_before, "a key on the slider moved the active cell"
    assert slider.evaluate("el => document.activeElement === el"), "the slider lost the focus"
    wait_until(
        lambda: status.text_content() or "",
        lambda text: bool(re.search(rf"\bunit {value + 2}\b", text)),
        60,
        f"a run of unit {value + 2} after the keys",
    )

    # 4. A refused value typed into a number input, applied with Enter.
    seed = root.locator('[data-cv-control="seed"]')
    reveal(root, seed)
    kernel_seed = seed.input_value()
    seed.click()
    seed.fill("-5")
    seed.press("Enter")
    error = root.locator('[data-cv="error"]')
    wait_until(
        lambda: (error.text_content() or "").strip(),
        lambda text: "seed" in text.lower() or "-5" in text,
        30,
        "the kernel's message about the refused seed in the widget's error line",
    )
    wait_until(
        lambda: seed.input_value(),
        lambda v: v == kernel_seed,
        30,
        f"the seed input back at the kernel's value {kernel_seed}",
    )
    assert active_cell_index(page) == cell_before, "Enter in the widget moved the active cell"

    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
    print(f"test took {time.monotonic() - t_start:.0f} s")


def test_lab_reopened_notebook_shows_the_last_picture(
    cnnvis_lab_server, page, tmp_path, artifacts_dir, blocked_requests
):
    t_start = time.monotonic()
    path = write_widget_notebook(tmp_path / "reopen.ipynb", steps=24)
    server = cnnvis_lab_server(tmp_path, "reopen.ipynb")
    page.goto(server.url, wait_until="domcontentloaded")
    wait_kernel_idle(page)
    time.sleep(3)  # JupyterLab writes the kernel's metadata into the model after "Idle"

    # First start: no "modified" dot on a fresh notebook, no news toast.
    assert not is_dirty(page, "reopen.ipynb"), "the notebook shows as modified right after opening"
    toasts = page.locator(".Toastify__toast").all_text_contents()
    assert not [t for t in toasts if "news" in t.lower()], toasts

    run_cell(page, 1)
    root = widget_root(page)
    root.wait_for(state="visible", timeout=KERNEL_TIMEOUT * 1000)
    wait_until(
        lambda: (root_state(root), root.get_attribute("data-running")),
        lambda s: s[0]["frames"] > 0 and s[1] == "false",
        FRAMES_TIMEOUT,
        "a finished run",
    )
    shown = image_stats(root.locator('img[data-cv="image"]'))
    assert shown["width"] > 0 and shown["range"] > 10, shown
    time.sleep(2)  # the last picture reaches the `image` trait at a low rate

    # Save (Ctrl+S, as a user does): widget state goes into the file.
    notebook_panel(page).locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    wait_until(lambda: is_dirty(page, "reopen.ipynb"), lambda d: not d, 60, "the saved notebook")
    saved = nbformat.read(str(path), as_version=4)
    state = saved.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")
    assert state and state.get("state"), "no widget state was saved into the notebook"

    # Shut the kernel down (its widget models die with it), then open the notebook again.
    for session in api(server, "GET", "api/sessions"):
        api(server, "DELETE", f"api/sessions/{session['id']}")
    wait_until(lambda: api(server, "GET", "api/kernels"), lambda ks: ks == [], 60, "no kernel")
    page.goto(server.url, wait_until="domcontentloaded")
    panel = notebook_panel(page)
    panel.wait_for(state="visible", timeout=KERNEL_TIMEOUT * 1000)
    outputs = panel.locator(".jp-OutputArea-output")
    wait_until(lambda: outputs.count(), lambda n: n > 0, 120, "the saved output")
    root = widget_root(page)
    root.wait_for(state="visible", timeout=60_000)
    img = root.locator('img[data-cv="image"]')
    stats = wait_until(
        lambda: image_stats(img), lambda s: s["width"] > 0, 60, "the saved picture drawn"
    )
    assert stats["range"] > 10 and stats["colors"] > 16, stats
    assert "model not found" not in (panel.text_content() or "")
    root.screenshot(path=str(artifacts_dir / "lab-reopened-activation_max.png"))
    assert unexpected_requests(blocked_requests) == []
    print(f"test took {time.monotonic() - t_start:.0f} s")
