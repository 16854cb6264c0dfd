"""Helpers shared by the e2e tests (imported as a plain module: tests/e2e is on sys.path)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
# Voila runs the notebook (model load included) before the page is complete
PAGE_TIMEOUT = 300.0

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}


def is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return (parts.hostname or "") in LOOPBACK_HOSTS


# Voila's stock "lab" template links Font Awesome from a CDN; the servers of these tests use the
# project's "cnnvis" template (cnnvis_widgets/_jupyter/voila/templates/cnnvis), which does not.
# So every page must make no request off the machine at all.
VOILA_TEMPLATE_REQUESTS: frozenset[str] = frozenset()


def unexpected_requests(blocked: list[str]) -> list[str]:
    """Every recorded non-loopback request (all of them are unexpected)."""
    return [r for r in blocked if r not in VOILA_TEMPLATE_REQUESTS]


def write_notebook(path: Path, code_cells: Sequence[str], markdown: str | None = None) -> Path:
    """Write a python3 notebook made of ``code_cells`` (plus an optional first markdown cell)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    if markdown:
        nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in code_cells)
    nbformat.write(nb, str(path))
    return path


def wait_until(
    probe: Callable[[], T],
    ok: Callable[[T], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll ``probe()`` until ``ok(value)``; fail with the last value seen after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    value = probe()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; last: {value!r}"
            )
        time.sleep(interval)
        value = probe()
    return value


def click_range_at(slider, fraction: float) -> None:
    """Click an ``<input type=range>`` at ``fraction`` (0..1) of its width, as a user would."""
    box = slider.bounding_box()
    assert box is not None, "the slider is not visible"
    slider.click(position={"x": box["width"] * fraction, "y": box["height"] / 2})


ROOT_STATE_JS = """el => ({
    frames: Number(el.getAttribute('data-frames') || 0),
    step: Number(el.getAttribute('data-step') || -1),
    runId: Number(el.getAttribute('data-run-id') || -1),
})"""


def root_state(root) -> dict[str, int]:
    """``data-frames``, ``data-step`` and ``data-run-id`` of a widget root (missing: 0/-1/-1)."""
    return root.evaluate(ROOT_STATE_JS)


# Draws the <img> on a canvas and summarises its pixels (same-origin blob:/data: URLs only).
IMAGE_STATS_JS = """img => {
    if (!img.complete || !img.naturalWidth) {
        return {width: img.naturalWidth || 0, height: img.naturalHeight || 0, range: 0, colors: 0};
    }
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let lo = 255, hi = 0;
    const colors = new Set();
    for (let i = 0; i < d.length; i += 4) {
        const y = (d[i] * 299 + d[i + 1] * 587 + d[i + 2] * 114) / 1000;
        if (y < lo) lo = y;
        if (y > hi) hi = y;
        if (colors.size < 4096) colors.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    return {width: c.width, height: c.height, range: hi - lo, colors: colors.size};
}"""


def image_stats(img) -> dict[str, float]:
    """``{width, height, range, colors}`` of a decoded ``<img>``: luminance range 0-255 and
    the number of distinct colours (capped at 4096)."""
    return img.evaluate(IMAGE_STATS_JS)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr
        pass


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """A static HTTP server over ``directory`` on 127.0.0.1 (a free port, no access log) while
    the ``with`` lasts; yields its base URL ``http://127.0.0.1:PORT/``."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
