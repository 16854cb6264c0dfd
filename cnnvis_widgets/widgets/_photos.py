"""What the widgets that take a photo share: decoding an upload, adding it to the choices."""

from __future__ import annotations

from typing import Any

import traitlets as t
from PIL import Image

from ..data import load_image
from ..models.convert import pixel_tensor
from ._base import setting, upload_trait

__all__ = ["UPLOAD", "UPLOAD_TRAITS", "decode_upload", "upload_data", "pixel_tensor"]
__all__ += ["SampleUploadMixin", "upload_setting"]

UPLOAD = "upload"
#: The traits an upload handler observes (``upload_name`` too: a file of 0 bytes leaves
#: ``upload`` empty, so only its name says that a file was chosen).
UPLOAD_TRAITS = ["upload", "upload_name"]


def upload_setting(label: str = "Your image", group: str = "Image", **control: Any) -> t.TraitType:
    """The ``upload`` setting of a widget that takes a photo: bytes the front end's upload
    control sets (any image file), its file name in the ``upload_name`` trait, not recorded.
    ``control``: further keys of the control (``help``...)."""
    return setting(
        upload_trait("Bytes of an image file chosen in the browser (PNG, JPEG...)."),
        "upload", label, group, record=False, accept="image/*", name_trait="upload_name",
        **control,
    )  # fmt: skip


def upload_data(widget: Any, change: dict) -> bytes | None:
    """The bytes to decode for a change of ``upload`` or ``upload_name``, or None when there is
    nothing to decode. A chosen file of 0 bytes is not ignored: ``widget.error`` says it is
    empty (and the photo shown before is kept)."""
    name = widget.upload_name
    if change.get("name") == "upload_name":
        if change["new"] and not widget.upload:
            widget.error = _empty(change["new"])
        return None
    data = bytes(change["new"] or b"")
    if not data:
        if name:
            widget.error = _empty(name)
        return None
    return data


def _empty(name: str) -> str:
    return f"the uploaded file {name!r} is empty (0 bytes); choose a PNG or JPEG file"


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
        data = upload_data(self, change)
        if data is None:
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
