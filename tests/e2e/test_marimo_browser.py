"""The widgets in marimo (``mo.ui.anywidget``), in a real browser.

1. ``notebooks/marimo_activation_max.py`` is served with ``marimo run``; the test waits for live
   frames (``data-frames`` increasing: the binary custom messages reach the view), checks that
   the picture decoded and is not blank, that no "this host does not deliver binary messages"
   notice appeared, moves the unit slider with the keyboard (the trait goes back to Python: a
   new run starts, its status names the new unit), and that no request left the machine.
2. Bytes traits both ways: an Attribution widget in a small app written by the test; a picture
   chosen in the file input reaches Python (marimo hands ``set_state`` plain ``bytes``, which
   ipywidgets' bytes deserializer rejected), and the widget's PNG traits reach the browser.
3. A ``download`` message (JSON + one binary buffer) from Python is saved by the browser as a
   file of that name (no network).
"""

from __future__ import annotations

import re
import textwrap
import time

import pytest
from e2e_helpers import REPO, image_stats, root_state, unexpected_requests, wait_until
from widget_view import install_recorder, open_widget, wait_for_new_run

pytestmark = pytest.mark.e2e

APP = REPO / "notebooks" / "marimo_activation_max.py"
PAGE_TIMEOUT = 180.0
FRAMES_TIMEOUT = 180.0
# A long run, so frames keep coming while the test watches (the widget streams them live).
APP_ENV = {"CNNVIS_NOTEBOOK_STEPS": "2000"}


def test_marimo_app_streams_live_frames_and_takes_slider_changes(
    marimo_server, page, blocked_requests, artifacts_dir
):
    t0 = time.monotonic()
    server = marimo_server(APP, env=APP_ENV)
    print(f"marimo answered after {server.start_seconds:.1f} s")
    # marimo renders anywidgets inside an open shadow root: Playwright's CSS selectors pierce it.
    root = open_widget(page, server.url, timeout=PAGE_TIMEOUT)
    print(f"widget view visible {time.monotonic() - t0:.1f} s after the server start")

    first = wait_until(
        lambda: root_state(root), lambda s: s["frames"] > 0, FRAMES_TIMEOUT, "the first frame"
    )
    later = wait_until(
        lambda: root_state(root),
        lambda s: s["frames"] >= first["frames"] + 3 and s["step"] > first["step"],
        FRAMES_TIMEOUT,
        "more frames of the same run",
    )
    print(f"frames: {first} -> {later}")
    img = root.locator('img[data-cv="image"]')
    stats = wait_until(lambda: image_stats(img), lambda s: s["width"] > 0, 60, "a decoded picture")
    assert stats["range"] > 10 and stats["colors"] > 16, stats
    notice = root.locator('[data-cv="notice"]')
    assert notice.count() == 1 and notice.is_hidden(), notice.text_content()
    assert root.get_attribute("data-waiting") == "false"

    # The browser -> Python direction: a keyboard step on the unit slider restarts the run.
    slider = root.locator('input[data-cv-control="unit"]')
    old_unit = int(slider.input_value())
    install_recorder(root)
    run_before = root_state(root)["runId"]
    slider.focus()
    slider.press("ArrowRight")
    assert int(slider.input_value()) == old_unit + 1
    wait_for_new_run(root, run_before, FRAMES_TIMEOUT, "a step of the unit slider")
    status = root.locator('[data-cv="status"]')
    wait_until(
        lambda: status.text_content() or "",
        lambda s: re.search(rf"\bunit {old_unit + 1}\b", s) is not None,
        60,
        "the status line naming the new unit",
    )
    page.screenshot(path=str(artifacts_dir / "marimo-activation-max.png"), full_page=True)
    assert unexpected_requests(blocked_requests) == []


UPLOAD_APP = textwrap.dedent(
    """
    import marimo

    app = marimo.App()


    @app.cell
    def _():
        import marimo as mo
        import cnnvis_widgets as cw

        w = mo.ui.anywidget(cw.Attribution(image="cat", auto_run=False))
        w
        return (w,)


    if __name__ == "__main__":
        app.run()
    """
)


def test_marimo_upload_reaches_python_and_png_traits_reach_the_browser(
    marimo_server, page, blocked_requests, tmp_path
):
    from PIL import Image

    app = tmp_path / "upload_app.py"
    app.write_text(UPLOAD_APP)
    picture = tmp_path / "stripes.png"
    Image.frombytes("L", (64, 64), bytes((x * 4) % 256 for _ in range(64) for x in range(64))).save(
        picture
    )
    server = marimo_server(app)
    root = open_widget(page, server.url, timeout=PAGE_TIMEOUT)

    root.locator('input[data-cv-control="upload"]').set_input_files(str(picture))
    # Python got the bytes: it adds the upload to the photo choices and selects it.
    photo = root.locator('select[data-cv-control="image_name"]')
    wait_until(
        lambda: photo.evaluate("s => s.selectedIndex >= 0 ? s.options[s.selectedIndex].text : ''"),
        lambda text: "stripes.png" in text,
        60,
        "the uploaded picture selected by Python",
    )
    assert root.locator('[data-cv="error"]').is_hidden()

    root.locator('[data-cv="run"]').click()
    original = root.locator('img[data-cv-trait="original"]')
    stats = wait_until(
        lambda: image_stats(original),
        lambda s: s["width"] > 0,
        FRAMES_TIMEOUT,
        "the photo as the model sees it (a PNG trait)",
    )
    assert stats["range"] > 100, stats  # the stripes, not a blank picture
    assert original.get_attribute("data-mime") == "image/png"
    assert unexpected_requests(blocked_requests) == []


DOWNLOAD_APP = textwrap.dedent(
    """
    import marimo

    app = marimo.App()


    @app.cell
    def _():
        import threading
        import marimo as mo
        import cnnvis_widgets as cw

        w = cw.ActivationMaximization(auto_run=False)
        msg = {"type": "download", "name": "run-record.json", "mime": "application/json"}
        # sent after the view is up (a message sent before any view exists is lost)
        threading.Timer(8, lambda: w.send(msg, buffers=[b'{"ok": true}'])).start()
        ui = mo.ui.anywidget(w)
        ui
        return


    if __name__ == "__main__":
        app.run()
    """
)


def test_marimo_download_message_saves_a_file(marimo_server, page, blocked_requests, tmp_path):
    app = tmp_path / "download_app.py"
    app.write_text(DOWNLOAD_APP)
    server = marimo_server(app)
    with page.expect_download(timeout=PAGE_TIMEOUT * 1000) as info:
        page.goto(server.url, wait_until="domcontentloaded", timeout=PAGE_TIMEOUT * 1000)
    assert info.value.suggested_filename == "run-record.json"
    root = page.locator(".cv-root").first
    assert root.get_attribute("data-downloads") == "1"
    assert root.locator('[data-cv="notice"]').is_hidden()
    assert unexpected_requests(blocked_requests) == []
