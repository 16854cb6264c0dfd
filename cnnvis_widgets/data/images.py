"""Reading user images safely: files, bytes, arrays; odd modes; tiny and huge pictures.

Every widget and method that accepts "an image" goes through :func:`load_image`, so the same
rules apply everywhere:

* grayscale, palette, CMYK and 16-bit images become 8-bit RGB (16-bit scaled by the bit depth,
  65535 -> 255, never by the picture's own range);
  RGBA is composited on white; EXIF orientation is applied;
* pictures smaller than ``min_size`` pixels on a side are refused with the size in the message;
* pictures larger than ``max_pixels`` are refused *before decoding* (decompression-bomb guard);
  large but acceptable ones are downscaled so the longer side is at most ``max_side``;
* anything that is not an image raises :class:`ImageError` naming what was given.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageError", "load_image"]

MIN_SIZE = 8
MAX_PIXELS = 100_000_000  # refused above this (before decoding)
MAX_SIDE = 2048  # downscaled above this (the models look at a few hundred pixels)


class ImageError(ValueError):
    """The input is not a usable image; the message says why and what to do."""


def _from_array(arr: np.ndarray) -> Image.Image:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {a.shape}")
    if not np.isfinite(a.astype(np.float64)).all():
        raise ImageError("the image array contains NaN or infinite values")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        lo, hi = float(a.min()), float(a.max())
        scale = 255.0 if hi <= 1.0 and lo >= 0.0 else 1.0
        a = np.clip(a.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    else:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def _bit_depth_top(img: Image.Image) -> float:
    """The white level of an integer-mode image, from its mode (never from its pixels):
    65535 for 16-bit modes (and mode "I" read from a PNG, which holds 16-bit data), 255 for
    other "I" images (integers taken as 8-bit levels, like integer arrays)."""
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
        return 65535.0
    return 255.0


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        top = _bit_depth_top(img)  # a dark 16-bit photo stays dark
        img = Image.fromarray((np.clip(a / top, 0, 1) * 255).round().astype(np.uint8), "L")
    elif img.mode == "F":
        img = _from_array(np.asarray(img))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(
    source: Any,
    *,
    min_size: int = MIN_SIZE,
    max_pixels: int = MAX_PIXELS,
    max_side: int = MAX_SIDE,
) -> Image.Image:
    """An 8-bit RGB PIL image from a path, bytes, a PIL image or an array.

    Raises
    ------
    ImageError
        Not an image, too small, too large, or an array with NaN/inf.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((20, 30), dtype=np.uint16)).mode
    'RGB'
    """
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        img = _open(io.BytesIO(bytes(source)), "the uploaded data", max_pixels)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no image file at {path}")
        img = _open(path, str(path), max_pixels)
    elif hasattr(source, "__array__"):
        if type(source).__module__.startswith("torch"):
            raise ImageError(
                "pass tensors as pixel-space batches to the core API; load_image takes files, "
                "bytes, PIL images and numpy arrays"
            )
        img = _from_array(np.asarray(source))
    else:
        raise ImageError(f"cannot read an image from {type(source).__name__}")
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"the image is {w}x{h} pixels, more than the {max_pixels:,} allowed")
    if min(w, h) < min_size:
        raise ImageError(
            f"the image is {w}x{h} pixels; at least {min_size} pixels on each side are needed"
        )
    img = ImageOps.exif_transpose(img) or img
    img = _to_rgb(img)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img


def _open(fp: Any, what: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():  # the size check below says it more clearly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(f"the image is {w}x{h} pixels, more than the {max_pixels:,} allowed")
        img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{what} is too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise ImageError(
            f"{what} is not an image PIL can read ({type(exc).__name__}: {exc}); use PNG or JPEG"
        ) from None
    return img
