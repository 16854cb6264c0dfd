"""Lab-report export: self-contained HTML, escaping, PDF pages."""

from __future__ import annotations

import base64
import re
import shutil

import pytest
import torch

from cnnvis_widgets.report import Report, find_chromium


def build() -> Report:
    import plotly.graph_objects as go

    r = Report("Lab <3>", author="Ada & Bob")
    r.add_heading("Units of <_blocks.8>")
    r.add_text("first <script>alert(1)</script>\n\nsecond paragraph")
    r.add_image(torch.rand(4, 3, 16, 16), caption="grid of <b>four</b>")
    r.add_record({"class": "<img src=x onerror=alert(1)>", "seed": 3})
    r.add_table([{"unit": 1, "concept": "<red>"}], caption="labels")
    r.add_figure(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])), "a chart")
    return r


def test_html_is_self_contained_and_escaped() -> None:
    html = build().to_html()
    assert "<h1>Lab &lt;3&gt;</h1>" in html and "Ada &amp; Bob" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "&lt;red&gt;" in html and "&lt;b&gt;four" in html
    assert html.count("<p>") >= 2
    # images are embedded PNGs that decode
    srcs = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(srcs) == 1 and base64.b64decode(srcs[0])[:4] == b"\x89PNG"
    # plotly is inlined (one script), nothing is loaded from elsewhere
    assert "Plotly" in html and "<script src=" not in html and "<link" not in html
    assert "default-src 'none'" in html


def test_widget_and_bad_images() -> None:
    r = Report()
    with pytest.raises(TypeError):
        r.add_image(object())
    with pytest.raises(ValueError, match="PNG or JPEG"):
        r.add_image(b"not an image")

    class NoPicture:
        image = b""

    with pytest.raises(ValueError, match="run"):
        r.add_image(NoPicture())


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler-utils (pdfinfo) missing")
def test_pdf_has_pages(tmp_path) -> None:
    try:
        find_chromium()
    except FileNotFoundError:
        pytest.skip("no Chromium")
    import subprocess

    pdf = build().save_pdf(tmp_path / "r.pdf")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 1 and pdf.read_bytes()[:4] == b"%PDF"
