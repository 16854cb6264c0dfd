"""Tensor <-> PIL <-> PNG/JPEG bytes, grids. Shared by widgets and reports."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

__all__ = ["to_pil", "to_uint8", "encode", "make_grid", "pil_to_tensor"]


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Pixel-space ``(C, H, W)`` or ``(1, C, H, W)`` tensor -> ``(H, W, C)`` uint8 array."""
    t = pixels.detach()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}; use make_grid")
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"expected (C, H, W), got shape {tuple(t.shape)}")
    t = torch.nan_to_num(t.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    arr = (t.mul(255).round().to(torch.uint8).permute(1, 2, 0)).cpu().numpy()
    return arr


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """Pixel-space tensor ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1] -> PIL image (RGB or L)."""
    arr = to_uint8(pixels)
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    if arr.shape[2] != 3:
        arr = arr[:, :, :3]
    return Image.fromarray(arr, mode="RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> pixel-space ``(1, C, H, W)`` float tensor in [0, 1]."""
    arr = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)


def encode(pixels: torch.Tensor | Image.Image, fmt: str = "png", quality: int = 85) -> bytes:
    """Encode a pixel-space image (tensor or PIL) as PNG or JPEG bytes."""
    img = pixels if isinstance(pixels, Image.Image) else to_pil(pixels)
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt in ("jpg", "jpeg"):
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown image format {fmt!r}: use 'png' or 'jpeg'")
    return buf.getvalue()


def make_grid(pixels: torch.Tensor, ncol: int | None = None, pad: int = 2, fill: float = 1.0):
    """Batch ``(B, C, H, W)`` -> one ``(C, H', W')`` image with the images in a grid."""
    b, c, h, w = pixels.shape
    if ncol is None:
        ncol = math.ceil(math.sqrt(b))
    nrow = math.ceil(b / ncol)
    out = pixels.new_full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), fill)
    for i in range(b):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[:, y : y + h, x : x + w] = pixels[i]
    return out
