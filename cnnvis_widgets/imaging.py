"""Pictures: tensor <-> PIL <-> PNG/JPEG bytes, grids, heat maps, overlays, labelled rows, charts.

Below core: imports only torch, numpy and pillow, so that models/, data/, core/, the widgets and
the report can all draw (``cnnvis_widgets.core.imaging`` is an alias of this module).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

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


# ------------------------------------------------------------------------------------------------
# Attribution maps for display: channel reduction, normalisation, colour maps, overlays, boxes.
# Attribution functions return raw model-input-space tensors; everything below only prepares
# pictures (pixel space, [0, 1]) and never changes the numbers it is given.

__all__ += [
    "reduce_channels",
    "normalize_map",
    "signed_to_pixels",
    "colorize",
    "heatmap",
    "overlay",
    "draw_box",
    "letterbox",
    "COLORMAPS",
]

#: Colour maps as stops of RGB in [0, 1], evenly spaced from 0 to 1. "inferno" (black, purple,
#: orange, pale yellow) for unsigned maps, "coolwarm" (blue, white, red: negative, zero,
#: positive) for signed maps, "gray".
# fmt: off
COLORMAPS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "inferno": ((0.001, 0.000, 0.014), (0.122, 0.047, 0.282), (0.335, 0.060, 0.429),
                (0.534, 0.134, 0.418), (0.735, 0.216, 0.330), (0.902, 0.361, 0.188),
                (0.985, 0.572, 0.035), (0.978, 0.812, 0.225), (0.988, 0.998, 0.645)),
    "coolwarm": ((0.085, 0.250, 0.700), (0.400, 0.560, 0.900), (0.750, 0.820, 0.960),
                 (1.000, 1.000, 1.000),
                 (0.960, 0.780, 0.700), (0.880, 0.450, 0.350), (0.700, 0.015, 0.150)),
    "gray": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
# fmt: on


def _as_batch(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(C, H, W)`` -> ``(1, C, H, W)``; returns whether it was unbatched."""
    if t.dim() == 3:
        return t.unsqueeze(0), True
    if t.dim() != 4:
        raise ValueError(f"expected (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
    return t, False


def reduce_channels(attr: torch.Tensor, how: str = "abs_max") -> torch.Tensor:
    """Collapse the channels of an attribution ``(B, C, H, W)`` (or ``(C, H, W)``) to one.

    Parameters
    ----------
    attr : torch.Tensor
        Attribution in model-input space (e.g. from ``attribution.saliency``).
    how : str
        ``"abs_max"`` (Simonyan et al. 2013: the largest magnitude over channels), ``"abs_sum"``,
        ``"l2"``, ``"sum"`` (keeps the sign), ``"mean"`` (keeps the sign).

    Returns
    -------
    torch.Tensor
        ``(B, 1, H, W)`` (or ``(1, H, W)``), float.

    Examples
    --------
    >>> reduce_channels(torch.tensor([[[1.0]], [[-3.0]], [[2.0]]])).item()
    3.0
    """
    t, single = _as_batch(attr.detach().float())
    if how == "abs_max":
        out = t.abs().amax(dim=1, keepdim=True)
    elif how == "abs_sum":
        out = t.abs().sum(dim=1, keepdim=True)
    elif how == "l2":
        out = t.pow(2).sum(dim=1, keepdim=True).sqrt()
    elif how == "sum":
        out = t.sum(dim=1, keepdim=True)
    elif how == "mean":
        out = t.mean(dim=1, keepdim=True)
    else:
        raise ValueError(f"unknown reduction {how!r}: use abs_max, abs_sum, l2, sum or mean")
    return out[0] if single else out


def _scale(t: torch.Tensor, percentile: float) -> torch.Tensor:
    """Per image: the ``percentile`` of ``|t|`` (shape ``(B, 1, 1, 1)``), at least a tiny value."""
    flat = torch.nan_to_num(t.abs().flatten(1).float())
    if percentile >= 100:
        q = flat.amax(dim=1)
    else:
        q = torch.quantile(flat, float(percentile) / 100.0, dim=1)
        q = torch.where(q > 0, q, flat.amax(dim=1))  # sparse maps: fall back to the maximum
    return q.clamp_min(1e-12).view(-1, 1, 1, 1)


def normalize_map(m: torch.Tensor, signed: bool = False, percentile: float = 99.5) -> torch.Tensor:
    """Scale a map for display, per image: to ``[0, 1]`` (unsigned) or ``[-1, 1]`` (signed).

    Values are divided by the ``percentile`` of their magnitude (so a few extreme pixels do not
    leave the rest black) and clipped. Unsigned: negative values become 0. NaNs become 0.

    Examples
    --------
    >>> normalize_map(torch.tensor([[[0.0, 2.0, 4.0]]]), percentile=100).tolist()
    [[[0.0, 0.5, 1.0]]]
    """
    t, single = _as_batch(m.detach().float())
    t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
    out = t / _scale(t, percentile)
    out = out.clamp(-1, 1) if signed else out.clamp(0, 1)
    return out[0] if single else out


def signed_to_pixels(attr: torch.Tensor, percentile: float = 99.5) -> torch.Tensor:
    """A signed multi-channel attribution shown as an image (DeconvNet-style reconstructions).

    Grey (0.5) is zero; ``0.5 + 0.5 * attr / scale`` per image, clipped to ``[0, 1]``, where
    ``scale`` is the ``percentile`` of ``|attr|`` over all channels and pixels.

    Examples
    --------
    >>> signed_to_pixels(torch.tensor([[[-1.0, 0.0, 1.0]]]), percentile=100).tolist()
    [[[0.0, 0.5, 1.0]]]
    """
    t, single = _as_batch(attr.detach().float())
    t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
    out = (0.5 + 0.5 * t / _scale(t, percentile)).clamp(0, 1)
    return out[0] if single else out


def colorize(m: torch.Tensor, cmap: str = "inferno", signed: bool = False) -> torch.Tensor:
    """One-channel map -> RGB pixels through a colour map of :data:`COLORMAPS`.

    ``m`` is ``(B, 1, H, W)``, ``(1, H, W)`` or ``(H, W)``, in ``[0, 1]`` (``[-1, 1]`` when
    ``signed``: -1 is the first colour of the map, 0 its middle, 1 its last).

    Examples
    --------
    >>> colorize(torch.ones(1, 2, 2), "gray").shape
    torch.Size([3, 2, 2])
    """
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colour map {cmap!r}: use one of {', '.join(COLORMAPS)}")
    t = m.detach().float()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    t, single = _as_batch(t)
    if t.shape[1] != 1:
        raise ValueError(f"colorize takes a one-channel map, got {t.shape[1]} channels")
    t = torch.nan_to_num(t, nan=0.0)
    if signed:
        t = (t + 1) / 2
    t = t.clamp(0, 1)
    stops = torch.tensor(COLORMAPS[cmap], dtype=torch.float32, device=t.device)  # (S, 3)
    pos = t[:, 0] * (len(stops) - 1)  # (B, H, W)
    lo = pos.floor().long().clamp(0, len(stops) - 2)
    frac = (pos - lo.float()).unsqueeze(-1)
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac  # (B, H, W, 3)
    out = rgb.permute(0, 3, 1, 2).contiguous()
    return out[0] if single else out


def heatmap(
    attr: torch.Tensor,
    signed: bool = False,
    reduce: str | None = None,
    cmap: str | None = None,
    percentile: float = 99.5,
) -> torch.Tensor:
    """An attribution ``(B, C, H, W)`` or ``(C, H, W)`` -> coloured heat map pixels, per image.

    Unsigned (default): channels reduced by ``"abs_max"``, scaled to ``[0, 1]``, ``"inferno"``.
    Signed: channels summed (``"sum"``), scaled to ``[-1, 1]``, ``"coolwarm"`` (blue negative,
    white zero, red positive). ``reduce`` / ``cmap`` override those choices.

    Examples
    --------
    >>> heatmap(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """
    how = reduce or ("sum" if signed else "abs_max")
    one = reduce_channels(attr, how) if attr.shape[-3] != 1 else attr.detach().float()
    return colorize(
        normalize_map(one, signed=signed, percentile=percentile),
        cmap or ("coolwarm" if signed else "inferno"),
        signed=signed,
    )


def overlay(
    image: torch.Tensor,
    heat: torch.Tensor,
    opacity: float = 0.5,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blend a coloured heat map over a photo: ``(1 - a) * image + a * heat``.

    Parameters
    ----------
    image : torch.Tensor
        Pixel-space photo ``(3, H, W)`` or ``(B, 3, H, W)`` (a one-channel photo is repeated).
    heat : torch.Tensor
        Pixel-space heat map (e.g. from :func:`heatmap`), resized bilinearly to the photo's size
        when it differs.
    opacity : float
        ``a`` in ``[0, 1]``: 0 shows the photo, 1 the heat map.
    weight : torch.Tensor, optional
        A per-pixel factor in ``[0, 1]`` (e.g. the normalized map itself, ``(B, 1, H, W)``):
        ``a = opacity * weight``, so weak attribution lets the photo show through.

    Examples
    --------
    >>> overlay(torch.zeros(3, 4, 4), torch.ones(3, 4, 4), opacity=0.25).max().item()
    0.25
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    img, single = _as_batch(image.detach().float())
    ht, _ = _as_batch(heat.detach().float().to(img.device))
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    if ht.shape[-2:] != img.shape[-2:]:
        ht = torch.nn.functional.interpolate(
            ht, size=img.shape[-2:], mode="bilinear", align_corners=False
        )
    alpha: torch.Tensor | float = float(opacity)
    if weight is not None:
        w, _ = _as_batch(weight.detach().float().to(img.device))
        if w.shape[-2:] != img.shape[-2:]:
            w = torch.nn.functional.interpolate(
                w, size=img.shape[-2:], mode="bilinear", align_corners=False
            )
        alpha = float(opacity) * w.clamp(0, 1)
    out = (img * (1 - alpha) + ht * alpha).clamp(0, 1)
    return out[0] if single else out


def draw_box(
    pixels: torch.Tensor,
    box: tuple[int, int, int, int],
    color: tuple[float, float, float] = (0.1, 0.9, 0.2),
    width: int = 2,
) -> torch.Tensor:
    """A copy of ``pixels`` ``(3, H, W)`` with the outline of ``box = (top, left, bottom,
    right)`` (bottom/right exclusive, clipped to the picture) drawn ``width`` pixels wide.

    Examples
    --------
    >>> draw_box(torch.zeros(3, 8, 8), (2, 2, 6, 6), width=1)[1].sum().item() > 0
    True
    """
    out = pixels.detach().clone()
    h, w = out.shape[-2:]
    top, left, bottom, right = (int(v) for v in box)
    top, left = max(0, top), max(0, left)
    bottom, right = min(h, bottom), min(w, right)
    if bottom <= top or right <= left:
        return out
    c = torch.tensor(color, dtype=out.dtype, device=out.device).view(-1, 1, 1)[: out.shape[0]]
    wd = max(1, int(width))
    out[:, top : min(bottom, top + wd), left:right] = c
    out[:, max(top, bottom - wd) : bottom, left:right] = c
    out[:, top:bottom, left : min(right, left + wd)] = c
    out[:, top:bottom, max(left, right - wd) : right] = c
    return out


def letterbox(pixels: torch.Tensor, size: int, fill: float = 0.5, align: str = "center"):
    """Fit ``(C, H, W)`` into a ``(C, size, size)`` square keeping the aspect ratio.

    The picture is scaled (bilinear) so that its longer side is ``size``; the rest is filled
    with ``fill``. ``align`` ("center", or a combination of "top"/"bottom" and "left"/"right",
    e.g. "bottom-right") says where the picture goes when it does not fill the square: a patch
    cut off by the top-left image border is aligned bottom-right, where the image was.

    Examples
    --------
    >>> letterbox(torch.zeros(3, 10, 20), 40).shape
    torch.Size([3, 40, 40])
    """
    c, h, w = pixels.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = torch.nn.functional.interpolate(
        pixels.detach().float().unsqueeze(0), size=(nh, nw), mode="bilinear", align_corners=False
    )[0]
    out = small.new_full((c, size, size), fill)
    y = (size - nh) // 2
    x = (size - nw) // 2
    if "top" in align:
        y = 0
    elif "bottom" in align:
        y = size - nh
    if "left" in align:
        x = 0
    elif "right" in align:
        x = size - nw
    out[:, y : y + nh, x : x + nw] = small
    return out


# ------------------------------------------------------------------------------------------------
# Labelled rows, strips and small bar charts drawn with PIL (static pictures for save() / reports).

__all__ += ["font", "labelled_row", "label_strip", "stack_rows", "bar_chart", "PALETTE"]


def font(size: int = 12) -> Any:
    """Pillow's default font at ``size`` px (a fixed-size bitmap font on Pillow < 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_row(
    tiles: list[torch.Tensor], captions: list[str], tile: int, title: str = ""
) -> Image.Image:
    """Tiles ``(3, h, w)`` side by side, each scaled to ``tile`` px, with a caption under each.

    Captions keep their first two lines, each shortened with "…" to the tile's width.

    Examples
    --------
    >>> labelled_row([torch.zeros(3, 8, 8)] * 2, ["a", "b"], 16, title="t").size
    (44, 68)
    """
    from PIL import ImageDraw

    fnt = font(12)
    pad, cap_h = 4, 30
    title_h = 18 if title else 0
    width = pad + len(tiles) * (tile + pad)
    canvas = Image.new("RGB", (width, title_h + tile + cap_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(20, 20, 20), font=fnt)
    for i, (img, cap) in enumerate(zip(tiles, captions)):
        pil = to_pil(img).convert("RGB")
        if pil.size != (tile, tile):
            pil = pil.resize((tile, tile), Image.Resampling.BILINEAR)
        x = pad + i * (tile + pad)
        canvas.paste(pil, (x, title_h))
        lines = cap.split("\n")[:2]
        for j, line in enumerate(lines):
            text = line
            while text and draw.textlength(text, font=fnt) > tile:
                text = text[:-2] + "…" if len(text) > 2 else ""
            draw.text((x, title_h + tile + 2 + 13 * j), text, fill=(40, 40, 40), font=fnt)
    return canvas


def label_strip(pictures: list[torch.Tensor], labels: list[str], size: int = 128) -> torch.Tensor:
    """Pictures side by side, each letterboxed to ``size`` with its label drawn above.

    Returns pixels ``(3, 16 + size, n * (size + 4))``.

    Examples
    --------
    >>> label_strip([torch.zeros(3, 4, 8)], ["x"], size=8).shape
    torch.Size([3, 24, 12])
    """
    from PIL import ImageDraw

    row = torch.cat(
        [torch.cat([letterbox(p, size), torch.ones(3, size, 4)], dim=2) for p in pictures],
        dim=2,
    )
    head = Image.new("RGB", (row.shape[2], 16), (255, 255, 255))
    draw = ImageDraw.Draw(head)
    for i, text in enumerate(labels):
        draw.text((i * (size + 4) + 3, 2), text, fill=(30, 30, 30))
    return torch.cat([pil_to_tensor(head)[0], row], dim=1)


def stack_rows(rows: list[Image.Image]) -> Image.Image:
    """PIL images one under the other, left-aligned on white.

    Examples
    --------
    >>> stack_rows([Image.new("RGB", (4, 2)), Image.new("RGB", (6, 3))]).size
    (6, 5)
    """
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


#: Series colours (RGB 0-255) of :func:`bar_chart`.
PALETTE = [(66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88), (171, 71, 188)]


def bar_chart(rows: list[list[Any]], series: Sequence[str], title: str, width: int) -> Image.Image:
    """A small horizontal grouped bar chart drawn with PIL (for static pictures).

    ``rows`` are ``[label, value_of_series_0, value_of_series_1, ...]``; bars scale to the
    largest value (at least 1).

    Examples
    --------
    >>> bar_chart([["a", 1, 2], ["b", 3, 0]], ["x", "y"], "t", 200).size
    (200, 82)
    """
    from PIL import ImageDraw

    n = max(1, len(series))
    bar_h, gap, label_w, top = 7, 6, 120, 34
    height = top + len(rows) * (n * bar_h + gap) + 8
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill=(0, 0, 0))
    x = 4
    for s, name in enumerate(series):
        draw.rectangle([x, 18, x + 9, 27], fill=PALETTE[s % len(PALETTE)])
        draw.text((x + 12, 17), str(name)[:40], fill=(0, 0, 0))
        x += 20 + 7 * len(str(name)[:40])
    vmax = max([1.0, *(float(v) for row in rows for v in row[1:])])
    span = width - label_w - 40
    y = top
    for row in rows:
        draw.text((4, y), str(row[0])[:18], fill=(0, 0, 0))
        for s, v in enumerate(row[1:]):
            w = int(round(span * float(v) / vmax))
            yy = y + s * bar_h
            draw.rectangle(
                [label_w, yy, label_w + max(w, 1), yy + bar_h - 2],
                fill=PALETTE[s % len(PALETTE)],
            )
            draw.text((label_w + w + 3, yy - 2), f"{v:g}", fill=(60, 60, 60))
        y += n * bar_h + gap
    return img
