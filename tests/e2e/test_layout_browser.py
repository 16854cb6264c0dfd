"""Layout of the widgets in a real browser (Voila) at 800 px and 1,400 px wide.

Four widgets with long labels and many controls (Activation maximization, Adversarial,
Dissection, Atlas; ``auto_run=False``, the layout is what is looked at) are shown at both
widths. For each: no horizontal scrolling, no label, group title, table header or chosen
select option cut, the advanced groups start collapsed, and at 1,400 px the picture stays in
view while the user scrolls to the last controls. Screenshots go to ``test-artifacts/``
(``layout-<width>.png``).
"""

from __future__ import annotations

import pytest
from e2e_helpers import unexpected_requests, write_notebook

pytestmark = pytest.mark.e2e

CELLS = [
    "import cnnvis_widgets as cw\nhandle = cw.load_model('efficientnet_lite0')",
    "cw.ActivationMaximization(handle, layer='_blocks.8', auto_run=False)",
    "cw.Adversarial(handle, image='cat', auto_run=False)",
    "cw.Dissection(handle, layers=['_blocks.4'], auto_run=False)",
    "cw.Atlas(handle, layers=['_blocks.2', '_blocks.6'], auto_run=False)",
]

# Everything a user must read, measured: an element whose text is wider than its box is cut.
MEASURE_JS = """roots => roots.map(root => {
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d');
    const cut = [];
    const visible = e => e.offsetParent !== null && e.getClientRects().length > 0;
    for (const e of root.querySelectorAll(
        '.cv-label, .cv-group-title, .cv-th-btn, .cv-bar-label, .cv-current, .cv-upload-info,'
        + ' .cv-panel-title, .cv-toggle-btn, .cv-file-btn, .cv-table td')) {
        if (visible(e) && e.scrollWidth > e.clientWidth + 1) cut.push(e.textContent.trim());
    }
    for (const s of root.querySelectorAll('select:not([size])')) {
        if (!visible(s) || s.selectedIndex < 0) continue;
        const st = getComputedStyle(s);
        ctx.font = `${st.fontSize} ${st.fontFamily}`;
        const text = s.options[s.selectedIndex].text;
        // the text area of a closed select: its width less padding, border and the arrow
        if (ctx.measureText(text).width > s.clientWidth - 28) cut.push('select: ' + text);
    }
    const r = root.getBoundingClientRect();
    return {
        title: (root.querySelector('[data-cv="title"]') || {}).textContent,
        width: r.width, height: r.height,
        overflowX: root.scrollWidth > root.clientWidth + 1,
        cut,
        collapsed: [...root.querySelectorAll('details.cv-group:not([open]) > summary')]
            .map(s => s.textContent),
    };
})"""


@pytest.mark.parametrize("width", [800, 1400])
def test_widgets_fit_and_show_every_label_whole(
    width, voila_server, context, blocked_requests, tmp_path, artifacts_dir
):
    nb = write_notebook(tmp_path / "layout.ipynb", CELLS)
    server = voila_server(nb)
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url, wait_until="domcontentloaded", timeout=300_000)
    roots = page.locator(".cv-root")
    roots.nth(len(CELLS) - 2).wait_for(state="visible", timeout=300_000)
    page.wait_for_timeout(500)
    found = roots.evaluate_all(MEASURE_JS)
    # Voila scrolls inside the page, not the document: a tall window shows every widget at once.
    page.set_viewport_size({"width": width, "height": 4200})
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts_dir / f"layout-{width}.png"))
    page.set_viewport_size({"width": width, "height": 900})
    for w in found:
        print(f"{width}px {w['title']}: {w['height']:.0f} px tall, cut={w['cut']}")
    doc_overflow = page.evaluate(
        "() => document.scrollingElement.scrollWidth > document.scrollingElement.clientWidth"
    )
    assert not doc_overflow, "the page scrolls horizontally"
    assert [w["title"] for w in found if w["overflowX"]] == []
    assert {w["title"]: w["cut"] for w in found if w["cut"]} == {}

    if width >= 1400:
        # The picture stays in view while the last controls of a tall widget (Adversarial,
        # taller than the window) are used.
        root = roots.filter(has=page.locator('[data-cv-control="epsilon"]')).first
        for group in root.locator("details.cv-group:not([open]) > summary").all():
            group.click()
        last = root.locator("[data-cv-control]").last
        root.scroll_into_view_if_needed()
        controls = root.locator(".cv-side > .cv-controls")
        scrolls = controls.evaluate("e => e.scrollHeight > e.clientHeight")
        assert scrolls, "the check needs controls taller than the window"
        last.scroll_into_view_if_needed()
        img_box = root.locator('[data-cv-panel="image"]').first.bounding_box()
        last_box = last.bounding_box()
        assert img_box is not None and last_box is not None
        view_h = 900
        assert last_box["y"] >= 0 and last_box["y"] + last_box["height"] <= view_h
        assert img_box["y"] < view_h and img_box["y"] + img_box["height"] > 0, (img_box, last_box)
        page.screenshot(path=str(artifacts_dir / f"layout-{width}-scrolled.png"))
    assert unexpected_requests(blocked_requests) == []
    # The advanced groups start collapsed (the widgets mark them with `"collapsed": true`).
    am = next(w for w in found if w["title"] == "Activation maximization")
    assert am["collapsed"], am
