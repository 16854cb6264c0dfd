"""What an attack accepts: pixel batches, budgets (eps, norm) and target classes, checked.

Every check raises an error that names the fix (``handle.to_pixels(photo)`` for a PIL image,
``4/255`` for an epsilon given in grey levels...); :func:`_logits` is the one forward pass of the
attacks and analyses (normalized pixels in, float logits ``(B, classes)`` out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from ... import limits
from ...models.handle import ModelHandle

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")


def _check_eps(eps: float, norm: str) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number in pixel units (e.g. 4/255), got {eps!r}") from None
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 in pixel units, got {eps}")
    if norm == "linf" and eps > 1:
        raise ValueError(
            f"eps={eps} is larger than the whole pixel range [0, 1]; epsilons are in pixel units, "
            f"e.g. 4/255 for four grey levels (did you mean eps={eps:g}/255?)"
        )
    return eps


def _check_norm(norm: str) -> Norm:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: use 'linf' or 'l2'")
    return norm  # type: ignore[return-value]


def _check_images(handle: ModelHandle, images: torch.Tensor) -> torch.Tensor:
    """A detached float32 pixel batch on the handle's device (ValueError names the fix)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a pixel-space tensor (B, C, H, W) in [0, 1], got "
            f"{type(images).__name__}; use handle.to_pixels(photo) for a PIL image"
        )
    x = images.detach()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if x.shape[1] != handle.in_channels:
        raise ValueError(
            f"images have {x.shape[1]} channels but model {handle.name!r} takes "
            f"{handle.in_channels}"
        )
    x = x.to(handle.device, torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values; clean them before the attack")
    limits.check_batch(x.shape[0], x.shape[-2], x.shape[-1], name="images")
    limits.check_pixel_range(x, "images")
    return x


def _labels(
    handle: ModelHandle, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None
) -> tuple[torch.Tensor, bool]:
    """Per-image class indices on the device and whether the attack is targeted."""
    b = x.shape[0]
    if target is None:
        with torch.no_grad():
            logits = _logits(handle, x)
        return logits.argmax(dim=1), False
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target classes must be integers, got a {target.dtype} tensor")
        t = target.detach().flatten().to(torch.long).cpu()
    elif limits.is_scalar(target):
        t = torch.full((b,), limits.as_int(target, "target"), dtype=torch.long)
    else:
        t = torch.as_tensor(
            [limits.as_int(v, "target") for v in target],  # type: ignore[union-attr]
            dtype=torch.long,
        )
    if t.numel() == 1 and b > 1:
        t = t.expand(b).clone()
    if t.numel() != b:
        raise ValueError(f"{t.numel()} target classes given for a batch of {b} images")
    for c in t.tolist():
        handle.check_class(c)
    return t.to(handle.device), True


def _logits(handle: ModelHandle, pixels: torch.Tensor) -> torch.Tensor:
    return handle.logits(handle.normalize(pixels)).float().flatten(1)
