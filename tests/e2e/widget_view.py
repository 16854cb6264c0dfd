"""A widget's view in the page: finding it, reading its pictures and status, following its runs.

Imported as a plain module (tests/e2e is on sys.path), beside :mod:`e2e_helpers` (servers,
notebooks, the network, waiting, pixel statistics and the frame counters of a view).
"""

from __future__ import annotations

from typing import Any

from e2e_helpers import PAGE_TIMEOUT, root_state, wait_until


def open_widget(page, url: str, has: str | None = None, timeout: float = PAGE_TIMEOUT):
    """Open ``url`` and return the first widget root (``.cv-root``) that contains an element
    matching the CSS selector ``has`` (any root without it), once it is visible."""
    page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
    roots = page.locator(".cv-root")
    root = (roots.filter(has=page.locator(has)) if has else roots).first
    root.wait_for(state="visible", timeout=timeout * 1000)
    return root


# A coarse signature of a decoded <img>: 12x12 luminances sampled on a grid.
SIGNATURE_JS = """img => {
    if (!img.complete || !img.naturalWidth) return null;
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const out = [];
    for (let j = 0; j < 12; j++) for (let i = 0; i < 12; i++) {
        const x = Math.floor((i + 0.5) * c.width / 12), y = Math.floor((j + 0.5) * c.height / 12);
        const k = 4 * (y * c.width + x);
        out.push(Math.round((d[k] * 299 + d[k + 1] * 587 + d[k + 2] * 114) / 1000));
    }
    return {w: c.width, h: c.height, sig: out};
}"""


def signature(img) -> dict | None:
    """``{w, h, sig}`` of a decoded ``<img>`` (``sig``: 12x12 luminances), ``None`` before it
    decoded: two pictures differ when their ``sig`` differ."""
    return img.evaluate(SIGNATURE_JS)


def status_text(root) -> str:
    """The text of a widget's status line (written by Python)."""
    return root.locator('[data-cv="status"]').text_content() or ""


def trait_img(root, trait: str):
    """The ``<img>`` panel of a widget that shows the PNG trait ``trait``."""
    return root.locator(f'img[data-cv="image"][data-cv-trait="{trait}"]')


# Records every change of the root's frame counters and of the status line's text into
# el.__cvLog, so a test does not depend on polling fast enough to see short runs.
RECORDER_JS = """el => {
    if (el.__cvLog) return;
    const log = [];
    el.__cvLog = log;
    const status = () => {
        const s = el.querySelector('[data-cv="status"]');
        return s ? s.textContent : null;
    };
    const snap = () => log.push({
        frames: Number(el.getAttribute('data-frames') || 0),
        step: Number(el.getAttribute('data-step') || -1),
        runId: Number(el.getAttribute('data-run-id') || -1),
        status: status(),
    });
    snap();
    new MutationObserver(snap).observe(el, {
        attributes: true,
        attributeFilter: ['data-frames', 'data-step', 'data-run-id'],
        subtree: false,
    });
    const s = el.querySelector('[data-cv="status"]');
    if (s) new MutationObserver(snap).observe(s, {
        childList: true, characterData: true, subtree: true,
    });
}"""


def install_recorder(root) -> None:
    root.evaluate(RECORDER_JS)


def recorded(root) -> list[dict[str, Any]]:
    return root.evaluate("el => el.__cvLog || []")


def new_run_progress(log: list[dict], run_id: int) -> bool:
    """True once at least two frames of ``run_id`` were drawn with increasing step."""
    of_run = [e for e in log if e["runId"] == run_id and e["frames"] > 0]
    if len(of_run) < 2:
        return False
    first, last = of_run[0], of_run[-1]
    return last["frames"] > first["frames"] and last["step"] > first["step"]


def wait_for_new_run(root, before: int, timeout: float, what: str) -> int:
    """Wait until the widget runs a run newer than ``before`` (its ``data-run-id``) and has drawn
    two frames of it with advancing steps (the log of :func:`install_recorder`, which must be
    installed before the change that restarts the run); return the new run's id."""
    after = wait_until(
        lambda: root_state(root),
        lambda s: s["runId"] > before,
        timeout,
        f"a run newer than {before} after {what}",
    )
    new_run = after["runId"]
    wait_until(
        lambda: recorded(root),
        lambda log: new_run_progress(log, new_run),
        timeout,
        f"frames of run {new_run} with advancing steps",
    )
    return new_run


def run_summary(root, before: dict[str, int]) -> str:
    """One line on what the view drew since ``before`` (a :func:`root_state`): frames, runs,
    the last step and the status line."""
    end = root_state(root)
    return (
        f"frames drawn: {end['frames']} (before the change {before['frames']}), run "
        f"{before['runId']} -> {end['runId']}, last step {end['step']}, "
        f"status {status_text(root)!r}"
    )
