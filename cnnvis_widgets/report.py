"""Lab-report export: collect results and write one self-contained HTML file (and a PDF of it).

Images are embedded as data URIs, plotly charts stay interactive with plotly's JS inlined once,
every user-provided string (captions, class names, record values) is HTML-escaped, and the page
makes no network request. The PDF is printed by the installed Chromium.

Examples
--------
>>> from cnnvis_widgets.report import Report
>>> r = Report("Lab 3: what does unit 12 see?")
>>> r = r.add_text("We maximized unit 12 of _blocks.8.")  # each add_* returns the report
>>> html = r.to_html()
>>> "<h1>Lab 3: what does unit 12 see?</h1>" in html
True
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "find_chromium"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1000px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #eee; }
figure { margin: 1em 0; page-break-inside: avoid; }
figure img { max-width: 100%; image-rendering: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .92em; margin-top: .3em; }
pre.record { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .6em; font-size: .8em;
             overflow-x: auto; white-space: pre-wrap; }
table.cv { border-collapse: collapse; font-size: .9em; margin: .6em 0; }
table.cv td, table.cv th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
table.cv th { background: #f3f3f3; }
.meta { color: #777; font-size: .85em; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _png_bytes(image: Any) -> bytes:
    """PNG bytes of a PIL image, a pixel-space tensor, PNG/JPEG bytes, or a widget."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"\xff\xd8":
            return data
        raise ValueError("image bytes must be PNG or JPEG")
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    if hasattr(image, "image") and isinstance(getattr(image, "image", None), (bytes, bytearray)):
        if not image.image:
            raise ValueError("the widget has no picture yet: run() it first")
        return bytes(image.image)
    try:
        import torch

        if isinstance(image, torch.Tensor):
            from .imaging import encode, make_grid

            t = image.detach().float().cpu()
            if t.dim() == 4 and t.shape[0] > 1:
                t = make_grid(t.clamp(0, 1))
            return encode(t, "png")
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    raise TypeError(f"cannot make an image of {type(image).__name__}")


def _mime(data: bytes) -> str:
    return "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png"


@dataclass
class _Item:
    kind: str
    payload: Any
    caption: str = ""
    extra: dict = field(default_factory=dict)


class Report:
    """A lab report: headings, text, images with captions, JSON records, tables, plotly charts.

    Parameters
    ----------
    title : str
        The report's title.
    author : str, optional
        Shown under the title.
    """

    def __init__(self, title: str = "cnnvis_widgets report", author: str | None = None) -> None:
        self.title = title
        self.author = author
        self.items: list[_Item] = []

    # ------------------------------------------------------------------ building
    def add_heading(self, text: str, level: int = 2) -> Report:
        """A section heading (level 2 or 3)."""
        self.items.append(_Item("heading", str(text), extra={"level": 3 if level >= 3 else 2}))
        return self

    def add_text(self, text: str) -> Report:
        """A paragraph of plain text (blank lines separate paragraphs; no HTML is interpreted)."""
        self.items.append(_Item("text", str(text)))
        return self

    def add_image(self, image: Any, caption: str = "", width: int | None = None) -> Report:
        """An image (PIL, pixel-space tensor or batch, PNG/JPEG bytes, or a widget's picture)."""
        self.items.append(_Item("image", _png_bytes(image), str(caption), {"width": width}))
        return self

    def add_record(self, record: dict, caption: str = "Settings") -> Report:
        """A JSON record (e.g. ``widget.record()``), shown folded-out and escaped."""
        json.dumps(record)
        self.items.append(_Item("record", record, str(caption)))
        return self

    def add_widget(self, widget: Any, caption: str = "") -> Report:
        """A widget's current picture and its record."""
        self.add_image(widget, caption or type(widget).__name__)
        if hasattr(widget, "record"):
            self.add_record(widget.record(), "Record")
        return self

    def add_table(self, rows: list[dict], columns: list[str] | None = None, caption: str = ""):
        """A table of dicts (columns default to the keys of the first row)."""
        cols = list(columns or (rows[0].keys() if rows else []))
        self.items.append(_Item("table", (cols, [dict(r) for r in rows]), str(caption)))
        return self

    def add_figure(self, figure: Any, caption: str = "") -> Report:
        """An interactive plotly figure (plotly's JS is inlined once in the page)."""
        self.items.append(_Item("figure", figure, str(caption)))
        return self

    # ------------------------------------------------------------------ output
    def to_html(self) -> str:
        """The whole report as one self-contained HTML document."""
        parts: list[str] = []
        needs_plotly = any(i.kind == "figure" for i in self.items)
        for item in self.items:
            parts.append(self._render(item))
        head_js = ""
        if needs_plotly:
            from .figures import plotly_js

            head_js = f"<script>{plotly_js()}</script>"
        meta = time.strftime("%Y-%m-%d %H:%M")
        author = f" &middot; {_esc(self.author)}" if self.author else ""
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline' 'unsafe-eval'\">"
            f"<title>{_esc(self.title)}</title><style>{_CSS}</style>{head_js}</head><body>"
            f"<h1>{_esc(self.title)}</h1><p class='meta'>{meta}{author} &middot; cnnvis_widgets</p>"
            + "\n".join(parts)
            + "</body></html>"
        )

    def _render(self, item: _Item) -> str:
        if item.kind == "heading":
            lvl = item.extra["level"]
            return f"<h{lvl}>{_esc(item.payload)}</h{lvl}>"
        if item.kind == "text":
            paras = [p.strip() for p in item.payload.split("\n\n") if p.strip()]
            return "".join(f"<p>{_esc(p)}</p>" for p in paras)
        if item.kind == "image":
            data = item.payload
            b64 = base64.b64encode(data).decode("ascii")
            width = f" width='{int(item.extra['width'])}'" if item.extra.get("width") else ""
            cap = f"<figcaption>{_esc(item.caption)}</figcaption>" if item.caption else ""
            return (
                f"<figure><img alt='{_esc(item.caption)}' src='data:{_mime(data)};base64,{b64}'"
                f"{width}>{cap}</figure>"
            )
        if item.kind == "record":
            body = _esc(json.dumps(item.payload, indent=1, default=str))
            return (
                f"<details><summary>{_esc(item.caption)}</summary>"
                f"<pre class='record'>{body}</pre></details>"
            )
        if item.kind == "table":
            cols, rows = item.payload
            head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{_esc(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                for r in rows
            )
            cap = f"<caption>{_esc(item.caption)}</caption>" if item.caption else ""
            return f"<table class='cv'>{cap}<tr>{head}</tr>{body}</table>"
        if item.kind == "figure":
            from .figures import figure_html

            fig_html = figure_html(item.payload)
            cap = f"<figcaption>{_esc(item.caption)}</figcaption>" if item.caption else ""
            return f"<figure>{fig_html}{cap}</figure>"
        raise ValueError(f"unknown report item {item.kind!r}")  # pragma: no cover

    def save_html(self, path: str | Path) -> Path:
        """Write the HTML file; returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_html(), encoding="utf-8")
        return path

    def save_pdf(self, path: str | Path, html_path: str | Path | None = None) -> Path:
        """Print the report to PDF with the installed Chromium (no network)."""
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(html_path) if html_path else self.save_html(Path(tmp) / "report.html")
            print_pdf(src, path)
        return path


#: the command-line flags of a headless Chromium that stays off the network (no sandbox, GPU,
#: QUIC, first-run page, background networking, component updates or sync)
CHROMIUM_OFFLINE_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str:
    """Path of a Chromium binary (``$CNNVIS_CHROMIUM``, /usr/bin/chromium, or on PATH)."""
    for cand in (os.environ.get("CNNVIS_CHROMIUM"), "/usr/bin/chromium"):
        if cand and Path(cand).exists():
            return cand
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "no Chromium found for printing the PDF: install it (Debian: `apt-get install chromium`) "
        "or set CNNVIS_CHROMIUM to its path; the HTML report works without it"
    )


def print_pdf(html_path: str | Path, pdf_path: str | Path, timeout: float = 120) -> Path:
    """Print a local HTML file to PDF with headless Chromium, network features off."""
    chromium = find_chromium()
    pdf_path = Path(pdf_path).resolve()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            "--headless",
            *CHROMIUM_OFFLINE_FLAGS,
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf_path}",
            Path(html_path).resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not pdf_path.exists() or pdf_path.stat().st_size == 0:
        raise RuntimeError(f"Chromium did not write the PDF: {proc.stderr[-500:]}")
    return pdf_path
