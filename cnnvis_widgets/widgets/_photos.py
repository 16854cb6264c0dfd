"""What the widgets that take a photo share: decoding an upload, adding it to the choices."""

from __future__ import annotations

from typing import Any

from PIL import Image

from ..data import load_image

__all__ = ["UPLOAD", "decode_upload", "SampleUploadMixin"]

UPLOAD = "upload"


def decode_upload(widget: Any, data: bytes, name: str) -> Image.Image | None:
    """The uploaded bytes as an RGB photo (through :func:`load_image`, the rules every widget
    shares), or None after putting what went wrong in ``widget.error``."""
    try:
        return load_image(bytes(data))
    except Exception as exc:  # noqa: BLE001 - any decoder error: say what to do
        widget.error = (
            f"could not read the uploaded file {name!r} as an image ({exc}); choose a PNG or "
            "JPEG file"
        )
        return None


class SampleUploadMixin:
    """For widgets with ``sample`` / ``sample_options`` / ``upload`` / ``upload_name`` traits, a
    ``_photos`` dict and a ``_show_original()`` method: an upload becomes the ``UPLOAD`` choice."""

    def _on_upload(self, change: dict) -> None:
        data = change["new"]
        if not data:
            return
        name = self.upload_name or "upload"  # type: ignore[attr-defined]
        photo = decode_upload(self, data, name)
        if photo is None:
            return
        self._photos[UPLOAD] = photo  # type: ignore[attr-defined]
        options = [o for o in self.sample_options if o[1] != UPLOAD]  # type: ignore[attr-defined]
        options.append([f"your image: {name}", UPLOAD])
        self.error = ""
        self.sample_options = options
        if self.sample == UPLOAD:  # type: ignore[attr-defined]
            self._show_original()  # type: ignore[attr-defined]
            self._on_restart_trait({})  # type: ignore[attr-defined]
        else:
            self.sample = UPLOAD
