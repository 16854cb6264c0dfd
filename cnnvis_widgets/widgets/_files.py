"""Files in and out of a widget: bytes the browser uploads, and the paths and pictures that
``save()`` and the exports write on the kernel's machine."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import torch
import traitlets as t

__all__ = ["IMAGE_FORMATS", "export_paths", "image_path", "upload_trait", "write_image"]


#: file suffixes ``save()`` writes (anything else, e.g. ``"_blocks.8_unit3"``, gets ``.png`` added)
IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".pdf": "PDF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def _bytes_from_json(js: Any, widget: Any = None) -> bytes:
    """Bytes from what a host delivers for a bytes trait set in the browser: a memoryview
    (Jupyter), ``bytes`` (marimo), a base64 string or data URL, a list of ints, a JSON-ed typed
    array (``{"0": 137, ...}``) or None. Anything else is an empty picture, never an exception
    in the host's message handler."""
    if js is None:
        return b""
    if isinstance(js, (bytes, bytearray, memoryview)):
        return bytes(js)
    if isinstance(js, str):
        data = js.split(",", 1)[1] if js.startswith("data:") and "," in js else js
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            return b""
    try:
        if isinstance(js, dict):
            js = [js[str(i)] for i in range(len(js))]
        if isinstance(js, (list, tuple)):
            return bytes(js)
    except (KeyError, TypeError, ValueError):
        pass
    return b""


def upload_trait(help: str = "Bytes of a file chosen in the browser.") -> t.Bytes:
    """A bytes trait the front end's ``upload`` control can set (the browser sends a memoryview
    in Jupyter, ``bytes`` in marimo; a plain ``Bytes`` trait rejects the first, ipywidgets'
    ``bytes_serialization`` the second)."""
    return t.Bytes(b"", help=help).tag(sync=True, from_json=_bytes_from_json)


def image_path(path: str | Path) -> tuple[Path, str]:
    """``(path, PIL format)`` for :meth:`CnnvisWidget.save`: ``~`` expanded; a known image
    suffix (:data:`IMAGE_FORMATS`) is kept, anything else gets ``.png`` appended (so that
    ``"_blocks.8_unit3"`` becomes ``_blocks.8_unit3.png``, not ``_blocks.png``)."""
    path = Path(path).expanduser()
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        path = path.with_name(path.name + ".png")
        fmt = "PNG"
    return path, fmt


def export_paths(path: str | Path, *suffixes: str) -> list[Path]:
    """``<path><suffix>`` for each suffix, for exports of several files: ``~`` expanded, a
    trailing ``.png``/``.json`` dropped, other dots kept (``"out/_blocks.8"`` ->
    ``out/_blocks.8.png``, ``out/_blocks.8.json``)."""
    stem = Path(path).expanduser()
    if stem.suffix.lower() in (".png", ".json"):
        stem = stem.with_suffix("")
    return [stem.with_name(stem.name + s) for s in suffixes]


def write_image(picture: torch.Tensor | Any, path: str | Path) -> Path:
    """Write a pixel tensor ``(C, H, W)`` in [0, 1] or a PIL image to ``path`` (format from the
    suffix, see :func:`image_path`); creates the folder; returns the path written."""
    from ..core.imaging import to_pil

    path, fmt = image_path(path)
    img = to_pil(picture) if isinstance(picture, torch.Tensor) else picture
    if fmt in ("JPEG", "PDF") and img.mode != "RGB":
        img = img.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path
