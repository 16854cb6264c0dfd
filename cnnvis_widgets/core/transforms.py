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


def random_scale(scales: Sequence[float]) -> Transform:
    """Rescale by a factor drawn from ``scales`` (bilinear)."""
    scales = list(scales)

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        s = scales[_randint(len(scales), g)]
        if s == 1.0:
            return x
        h, w = x.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return apply


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate by an angle (degrees) drawn from ``degrees`` about the centre (bilinear)."""
    degrees = list(degrees)

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        a = degrees[_randint(len(degrees), g)]
        if a == 0:
            return x
        t = math.radians(a)
        theta = torch.tensor(
            [[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
            dtype=x.dtype,
            device=x.device,
        )
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    return apply


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""
    ts = list(transforms)

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        for t in ts:
            x = t(x, g)
        return x

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
