"""The photo a widget works on: a packaged sample or the user's own picture, as pixels.

:class:`SamplePhoto` is a mixin for widgets with a ``size``: it declares the photo's settings
(``sample`` and ``upload``, the first controls of the widget, and ``upload_name``) and the
read-only ``sample_options`` and ``original``; the picture given to the constructor becomes the
``"custom"`` choice (an upload the ``"upload"`` one, :class:`~._photos.SampleUploadMixin`),
:meth:`SamplePhoto.target` is the chosen photo as the network sees it at the widget's size
(computed once per photo and size), and ``original`` shows it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
import traitlets as t
from PIL import Image

from ..core import inversion as inv
from ..data import load_image, sample_images
from ..imaging import encode, to_pil
from ..models.convert import pixel_tensor
from ._base import setting, upload_trait

__all__ = ["CUSTOM", "SamplePhoto"]

CUSTOM = "custom"


class SamplePhoto(t.HasTraits):
    """Mixin: the widget's photo (see the module's description)."""

    sample_options = t.List(help="[label, value] of every photo offered (read-only).").tag(
        sync=True
    )
    original = t.Bytes(b"", help="PNG of the photo as the network sees it (read-only).").tag(
        sync=True
    )
    # the settings, in the order of their controls ------------------------- Image
    sample = setting(
        t.Unicode("cat", help="The photo: a packaged photo's name, 'upload' or 'custom'."),
        "select", "Photo", "Image", restart=True, options_trait="sample_options",
    )  # fmt: skip
    upload = setting(
        upload_trait("Bytes of an image file chosen in the browser (JS sets)."),
        "upload", "Your image", "Image", record=False, accept="image/*", name_trait="upload_name",
    )  # fmt: skip
    upload_name = setting(
        t.Unicode("", help="File name of the uploaded image (JS sets)."), record=False
    )

    _photos: dict[str, Image.Image | torch.Tensor]

    def _photo_choices(self, image: Any) -> tuple[str, list[list[str]]]:
        """The ``sample`` and ``sample_options`` to start from, given the constructor's
        ``image`` (a packaged photo's name, a file path, a PIL image, a tensor or bytes)."""
        self._photos = {}
        self._target: torch.Tensor | None = None
        self._target_key: tuple | None = None
        self._target_lock = threading.RLock()
        channels = self.handle.in_channels  # type: ignore[attr-defined]
        names = list(sample_images()) if channels in (1, 3) else []
        options = [[n, n] for n in names]
        if isinstance(image, str) and image in names:
            return image, options
        if isinstance(image, str) and not Path(image).expanduser().is_file():
            raise KeyError(
                f"unknown sample photo {image!r}; choose one of {', '.join(names)}, or pass a "
                "file path, a PIL image, a tensor or image bytes"
            )
        if isinstance(image, torch.Tensor):
            photo: Image.Image | torch.Tensor = pixel_tensor(image, channels)[0].clamp(0, 1)
        else:
            photo = load_image(image)  # ImageError (a ValueError) saying what is wrong
        self._photos[CUSTOM] = photo
        return CUSTOM, options + [["your image", CUSTOM]]

    def target(self) -> torch.Tensor:
        """The photo as the network sees it: pixel space ``(1, C, size, size)`` on the device."""
        w: Any = self
        key = (w.sample, w.size, id(self._photos.get(w.sample)))
        with self._target_lock:
            if self._target is None or self._target_key != key:
                photo = self._photos.get(w.sample)
                if photo is None:
                    photo = sample_images()[w.sample]
                if isinstance(photo, torch.Tensor):
                    photo = to_pil(photo)
                self._target = inv.target_pixels(w.handle, photo, w.size)
                self._target_key = key
            return self._target

    def _show_original(self) -> None:
        w: Any = self
        try:
            w.original = encode(self.target()[0].detach().cpu(), "png")
        except Exception as exc:  # noqa: BLE001 - shown, the widget stays usable
            w.error = f"{type(exc).__name__}: {exc}"

    @t.validate("sample")
    def _valid_sample(self, proposal: dict) -> str:
        v = proposal["value"]
        valid = [o[1] for o in self.sample_options]
        if v not in valid:
            raise t.TraitError(f"unknown photo {v!r}; choose one of {', '.join(valid)}")
        return v
