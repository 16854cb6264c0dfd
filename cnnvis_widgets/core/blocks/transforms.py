"""Transformation robustness: random image transforms applied before each forward pass.

Each transform is a callable ``(pixels, generator) -> pixels`` on a pixel-space batch; the same
random draw applies to the whole batch. :func:`standard_transforms` is Lucid's recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Transform",
    "pad",
    "jitter",
    "random_scale",
    "random_rotate",
    "compose",
    "standard_transforms",
    "random_affine",
    "affine_warp",
]

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def _randint(n: int, g: torch.Generator | None) -> int:
    return int(torch.randint(0, n, (1,), generator=g).item())


def pad(width: int, value: float = 0.5, mode: str = "constant") -> Transform:
    """Pad every side by ``width`` pixels (constant ``value`` or ``mode="reflect"``)."""

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if width <= 0:
            return x
        if mode == "constant":
            return F.pad(x, (width,) * 4, mode="constant", value=value)
        return F.pad(x, (width,) * 4, mode=mode)

    return apply


def jitter(d: int) -> Transform:
    """Random crop that shifts the image by up to ``d - 1`` pixels (the output is ``d`` smaller)."""

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if d <= 1:
            return x
        h, w = x.shape[-2:]
        dx, dy = _randint(d, g), _randint(d, g)
        return x[..., dy : dy + h - d, dx : dx + w - d]

    return apply


def _drawn(values: Sequence[float], identity: float, op: Callable) -> Transform:
    """A transform that applies ``op(x, v)`` with ``v`` drawn from ``values`` for each batch
    (``x`` itself when the draw is ``identity``)."""
    vs = list(values)

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        v = vs[_randint(len(vs), g)]
        return x if v == identity else op(x, v)

    return apply


def _rescale(x: torch.Tensor, s: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _rotate(x: torch.Tensor, a: float) -> torch.Tensor:
    t = math.radians(a)
    theta = torch.tensor(
        [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
        dtype=x.dtype,
        device=x.device,
    )
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_scale(scales: Sequence[float]) -> Transform:
    """Rescale by a factor drawn from ``scales`` (bilinear)."""
    return _drawn(scales, 1.0, _rescale)


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate by an angle (degrees) drawn from ``degrees`` about the centre (bilinear)."""
    return _drawn(degrees, 0, _rotate)


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""
    ts = list(transforms)

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        for t in ts:
            x = t(x, g)
        return x

    return apply


def affine_warp(
    x: torch.Tensor,
    *,
    pad_width: int = 0,
    crop1: int = 0,
    offset1: tuple[int, int] = (0, 0),
    scale: float = 1.0,
    angle: float = 0.0,
    crop2: int = 0,
    offset2: tuple[int, int] = (0, 0),
    value: float = 0.5,
    out_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Pad, crop (by ``crop1`` at ``offset1``), scale, rotate (degrees, about the centre) and crop
    again, as one bilinear resampling. Outside the image is ``value``.

    ``out_size`` ``(H, W)``: resample the result of the last crop onto this many pixels (what
    Lucent's final ``Upsample`` to the model's input size does), still in the same single
    resampling. ``None`` keeps the size the crops leave.
    """
    h, w = x.shape[-2:]
    kh, kw = h + 2 * pad_width - crop1, w + 2 * pad_width - crop1  # after pad + first crop
    rh, rw = max(1, round(kh * scale)), max(1, round(kw * scale))  # after scaling
    ho, wo = max(1, rh - crop2), max(1, rw - crop2)  # after the second crop
    oh, ow = (ho, wo) if out_size is None else (int(out_size[0]), int(out_size[1]))
    # continuous coordinates (pixel i spans [i, i + 1]) of the output pixel centres, mapped back
    # step by step to the input image (an output of oh x ow pixels spans the ho x wo crop)
    ys = (torch.arange(oh, device=x.device, dtype=x.dtype) + 0.5) * (ho / oh) + offset2[0]
    xs = (torch.arange(ow, device=x.device, dtype=x.dtype) + 0.5) * (wo / ow) + offset2[1]
    yy, xx = torch.meshgrid(ys - rh / 2, xs - rw / 2, indexing="ij")
    a = math.radians(angle)
    ca, sa = math.cos(a), math.sin(a)
    yr, xr = ca * yy - sa * xx + rh / 2, sa * yy + ca * xx + rw / 2  # undo the rotation
    yin = yr * (kh / rh) + offset1[0] - pad_width  # undo scale, first crop and pad
    xin = xr * (kw / rw) + offset1[1] - pad_width
    grid = torch.stack((xin / w * 2 - 1, yin / h * 2 - 1), dim=-1)
    grid = grid.unsqueeze(0).expand(x.shape[0], oh, ow, 2)
    out = F.grid_sample(x - value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + value


def random_affine(
    pad_width: int = 12,
    jitter1: int = 8,
    scale: float = 0.1,
    rotate: float = 10.0,
    jitter2: int = 4,
    value: float = 0.5,
    out_size: int | tuple[int, int] | None = None,
) -> Transform:
    """Lucid's standard transforms fused into one resampling (:func:`affine_warp`).

    The same geometry and parameter ranges as ``compose([pad, jitter, random_scale,
    random_rotate, jitter])`` (the random draws differ), at the cost of one bilinear warp instead
    of an interpolation, a rotation and three copies.

    ``out_size`` (an int for a square, or ``(H, W)``): the transformed image is resampled to this
    size in the same warp, as Lucent upsamples to the model's input size after its transforms;
    ``None`` keeps the size the transforms leave (the image's own size, less the crops).
    """
    osz: tuple[int, int] | None = (
        (int(out_size), int(out_size)) if isinstance(out_size, int) else out_size
    )
    scales = [1 + scale * (i - 5) / 5 for i in range(11)] if scale > 0 else [1.0]
    r = int(round(rotate))
    angles = list(range(-r, r + 1)) if r > 0 else [0]
    j1 = jitter1 if jitter1 > 1 else 0
    j2 = jitter2 if jitter2 > 1 else 0

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        o1 = (_randint(j1, g), _randint(j1, g)) if j1 else (0, 0)
        s = scales[_randint(len(scales), g)] if len(scales) > 1 else 1.0
        a = angles[_randint(len(angles), g)] if len(angles) > 1 else 0
        o2 = (_randint(j2, g), _randint(j2, g)) if j2 else (0, 0)
        if not (pad_width or j1 or j2 or s != 1.0 or a):
            if osz is None or tuple(x.shape[-2:]) == tuple(osz):
                return x
        return affine_warp(
            x,
            pad_width=pad_width,
            crop1=j1,
            offset1=o1,
            scale=s,
            angle=a,
            crop2=j2,
            offset2=o2,
            value=value,
            out_size=osz,
        )

    return apply


def standard_transforms(
    pad_width: int = 12,
    jitter1: int = 8,
    scale: float = 0.1,
    rotate: float = 10.0,
    jitter2: int = 4,
    value: float = 0.5,
) -> Transform:
    """Lucid's standard transforms: pad 12, jitter 8, scale 0.9-1.1, rotate +-10 deg, jitter 4.

    ``scale`` is the half-width of the scale range and ``rotate`` the largest angle; 0 turns a
    stage off.
    """
    stages: list[Transform] = []
    if pad_width > 0:
        stages.append(pad(pad_width, value=value))
    if jitter1 > 1:
        stages.append(jitter(jitter1))
    if scale > 0:
        stages.append(random_scale([1 + scale * (i - 5) / 5 for i in range(11)]))
    if rotate > 0:
        r = int(round(rotate))
        stages.append(random_rotate(list(range(-r, r + 1))))
    if jitter2 > 1:
        stages.append(jitter(jitter2))
    return compose(stages)
