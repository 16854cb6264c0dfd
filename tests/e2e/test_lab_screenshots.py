"""Screenshots of all seven widgets in a real JupyterLab 4 at 1,400 px and 800 px window width.

One notebook shows each widget once (small sizes, so the runs end in a few minutes on one CPU
core; the atlas on a tiny model, as in its Voila test). The test runs the cells with Shift+Enter,
waits until every widget has finished and shows a decoded picture, then saves one picture per
widget and width under ``test-artifacts/lab-1400/`` and ``test-artifacts/lab-800/`` (the README's
pictures are made from them by ``scripts/readme_images.py``). It asserts that no widget shows an
error and each shows a decoded picture, and prints how far each widget overflows its output area
at 800 px (the layout itself is tested elsewhere).
"""

from __future__ import annotations

import time

import pytest
from e2e_helpers import image_stats, unexpected_requests, wait_until
from test_lab_notebook import (
    KERNEL_TIMEOUT,
    notebook_panel,
    wait_kernel_idle,
    write_widget_notebook,
)

pytestmark = pytest.mark.e2e

RESULT_TIMEOUT = 900.0
WIDTHS = (1400, 800)
# (file name, code of the cell); each cell's output is one widget.
WIDGETS = [
    (
        "activation_max",
        "import cnnvis_widgets as cw\n"
        'handle = cw.load_model("efficientnet_lite0")\n'
        'am = cw.ActivationMaximization(handle, layer="_blocks.8", unit=12, steps=160)\n'
        "am",
    ),
    (
        "inversion",
        'inversion = cw.Inversion(handle, image="cat", layer="_blocks.3", size=96, steps=200)\n'
        "inversion",
    ),
    ("deconvnet", 'deconv = cw.DeconvNet(handle, layer="_blocks.4", unit=7, n_images=32)\ndeconv'),
    ("attribution", 'attribution = cw.Attribution(handle, image="cat")\nattribution'),
    (
        "dissection",
        'dissection = cw.Dissection(handle, layers=["_blocks.2", "_blocks.6"], n_images=48,\n'
        "                           image_size=112, batch_size=16, auto_run=False)\n"
        "dissection.run()\n"
        "dissection",
    ),
    (
        "adversarial",
        'adversarial = cw.Adversarial(handle, image="cat", method="pgd-linf", epsilon=4 / 255,\n'
        "                             steps=5, am_steps=24, n_units=6)\n"
        "adversarial",
    ),
    (
        "atlas",
        "from tests.conftest import make_tiny\n"
        'tiny = cw.load_model(make_tiny(), device="cpu", input_size=32)\n'
        "atlas = cw.Atlas(tiny, steps=8, size=32, batch=8, probe_images=16, inversion_steps=8,\n"
        "                 n_images=16, variants=2)\n"
        "atlas",
    ),
]

SETTLED_JS = """root => {
    const imgs = [...root.querySelectorAll('img[data-cv="image"]')]
        .filter(i => i.offsetParent !== null);
    return {
        running: root.getAttribute('data-running'),
        pictures: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
        error: (root.querySelector('[data-cv="error"]') || {}).textContent || '',
    };
}"""


def write_gallery(path) -> None:
    import nbformat

    write_widget_notebook(path, steps=8)  # the generator's metadata, then our cells
    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [nbformat.v4.new_markdown_cell("# The seven widgets")]
    nb.cells += [nbformat.v4.new_code_cell(code) for _, code in WIDGETS]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nbformat.write(nb, str(path))


def test_lab_screenshots_of_every_widget(
    cnnvis_lab_server, page, tmp_path, artifacts_dir, blocked_requests, browser_log
):
    t_start = time.monotonic()
    write_gallery(tmp_path / "gallery.ipynb")
    server = cnnvis_lab_server(
        tmp_path, "gallery.ipynb", env={"CNNVIS_CACHE_DIR": str(tmp_path / "cache")}
    )
    page.set_viewport_size({"width": WIDTHS[0], "height": 1000})
    page.goto(server.url, wait_until="domcontentloaded")
    wait_kernel_idle(page)
    panel = notebook_panel(page)
    if page.locator("#jp-left-stack").is_visible():  # the notebook gets the window's width
        page.keyboard.press("Control+b")
        wait_until(lambda: page.locator("#jp-left-stack").is_visible(), lambda v: not v, 10, "")
    cells = panel.locator(".jp-Notebook .jp-Cell")
    cells.nth(1).locator(".jp-InputArea-editor").click()
    for _ in WIDGETS:
        page.keyboard.press("Shift+Enter")
    roots = []
    for i, (name, _) in enumerate(WIDGETS):
        root = cells.nth(i + 1).locator(".cv-root").first
        root.wait_for(state="attached", timeout=KERNEL_TIMEOUT * 1000)
        roots.append((name, root))

    # Every widget finished its first run and shows a picture.
    for name, root in roots:
        root.scroll_into_view_if_needed()
        state = wait_until(
            lambda root=root: root.evaluate(SETTLED_JS),
            lambda s: (s["running"] == "false" and s["pictures"] > 0) or s["error"].strip(),
            RESULT_TIMEOUT,
            f"the {name} widget done with a picture",
        )
        assert not state["error"].strip(), (name, state)
        print(f"{name} settled {time.monotonic() - t_start:.0f} s after the start")

    for width in WIDTHS:
        out = artifacts_dir / f"lab-{width}"
        out.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": width, "height": 1000})
        time.sleep(1)
        for name, root in roots:
            box = root.bounding_box()
            assert box is not None, name
            # tall widgets: a window that holds the whole widget (JupyterLab scrolls inside)
            page.set_viewport_size({"width": width, "height": max(1000, int(box["height"]) + 200)})
            root.scroll_into_view_if_needed()
            time.sleep(0.5)
            for img in root.locator('img[data-cv="image"]').all():
                if img.is_visible():
                    assert image_stats(img)["width"] > 0, name
            root.screenshot(path=str(out / f"{name}.png"))
            if width == 800:
                over = root.evaluate("el => el.scrollWidth - el.clientWidth")
                area = root.evaluate(
                    "el => { const o = el.closest('.jp-OutputArea-output');"
                    " return o ? o.scrollWidth - o.clientWidth : 0; }"
                )
                print(f"{name} at 800 px: overflow {over} px (output area {area} px)")
        page.set_viewport_size({"width": width, "height": 1000})

    assert unexpected_requests(blocked_requests) == []
    assert not browser_log.errors, browser_log.errors
    print(f"screenshots took {time.monotonic() - t_start:.0f} s in all")
