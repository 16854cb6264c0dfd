"""Small model facts shared by every method: a network's logits from what its forward returned,
and the check of a photo given as a pixel tensor (re-exported by :mod:`cnnvis_widgets.models`)."""

from __future__ import annotations

from typing import Any

import torch

from .. import limits

__all__ = ["first_output", "pixel_tensor"]


def first_output(out: Any) -> Any:
    """A network's logits from what its forward returned: the first element of a tuple or list
    (models with auxiliary outputs, e.g. Inception's), else the output itself.

    Examples
    --------
    >>> first_output((1, 2)), first_output(3)
    (1, 3)
    """
    return out[0] if isinstance(out, (tuple, list)) else out


def pixel_tensor(image: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A pixel-space photo tensor checked and batched: ``(1, C, H, W)`` float on the CPU (the
    check every widget applies to a photo given as a tensor).

    ``ValueError`` for other shapes, channel counts the model cannot take, NaN or infinity.
    """
    px = image.detach().float().cpu()
    px = px.unsqueeze(0) if px.dim() == 3 else px
    if px.dim() != 4 or px.shape[0] != 1:
        raise ValueError(
            f"image tensor must be (C, H, W) or (1, C, H, W), got {tuple(image.shape)}"
        )
    if px.shape[1] not in (1, 3, in_channels):
        raise ValueError(
            f"image tensor has {px.shape[1]} channels; the model takes {in_channels} "
            "(1 or 3 are converted)"
        )
    if not bool(torch.isfinite(px).all()):
        raise ValueError("image tensor contains NaN or infinite values; pass pixels in [0, 1]")
    limits.check_pixel_range(px, "image tensor")  # a 0-255 tensor is not clamped to white
    return px
