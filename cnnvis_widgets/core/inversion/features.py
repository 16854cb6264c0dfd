"""What the network sees of a photo and what a layer keeps of it: the two inputs of inversion.

:func:`target_pixels` prepares the photo (pixel space, on the device) and :func:`layer_features`
reads one or several layers' features of a pixel batch in one forward pass that stops at the
deepest layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ... import limits
from ...models.handle import ModelHandle
from ..blocks.hooks import capture, forward_to

__all__ = ["target_pixels", "layer_features", "check_layers", "sq_norm"]


def target_pixels(
    handle: ModelHandle, image: Image.Image | torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """The photo as the network will see it: pixel space ``(1, C, H, W)`` on the device.

    A PIL image is resized and centre-cropped like :meth:`ModelHandle.to_pixels` (to ``size``
    when given); a tensor is taken as pixel space (``(C, H, W)`` or a batch of one) and resized
    to ``size`` when given.
    """
    if size is not None:
        size = limits.check_side(size)
    if isinstance(image, torch.Tensor):
        t = handle.to_pixels(image)  # batched, on the device, float32
        if t.dim() != 4 or t.shape[0] != 1:
            raise ValueError(
                f"image must be one pixel-space image (C, H, W) or (1, C, H, W), got shape "
                f"{tuple(image.shape)}"
            )
        if t.shape[1] != handle.in_channels:
            raise ValueError(
                f"image has {t.shape[1]} channels but model {handle.name!r} takes "
                f"{handle.in_channels}"
            )
        if not torch.isfinite(t).all():
            raise ValueError(
                "image contains NaN or infinite values; clean it first (pixels in [0, 1], e.g. "
                "torch.nan_to_num(x).clamp(0, 1))"
            )
        limits.check_pixel_range(t, "image")
        if size is None:
            limits.check_int(max(t.shape[-2:]), "image side", limit="MAX_IMAGE_SIDE")
        elif tuple(t.shape[-2:]) != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
        return t.clamp(0, 1)  # the resampling may overshoot by a hair
    if isinstance(image, Image.Image):
        return handle.to_pixels(image, size)
    raise TypeError(
        f"image must be a PIL image or a pixel-space tensor, got {type(image).__name__}; "
        "e.g. cnnvis_widgets.data.sample_image('cat')"
    )


def check_layers(handle: ModelHandle, layers: Sequence[str]) -> list[str]:
    """The layer names as a list; ``ValueError`` for none, ``KeyError`` (listing the nearest
    names) for an unknown one."""
    names = list(layers)
    if not names:
        raise ValueError("no layer given: pass at least one layer name (see handle.layers)")
    for name in names:
        handle.layer(name)  # KeyError listing the nearest names
    return names


def layer_features(
    handle: ModelHandle, pixels: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Features of a pixel-space batch at ``layers`` (the forward pass stops at the deepest one).

    Returns ``{layer: tensor}``, detached, on the device.
    """
    names = check_layers(handle, [layers] if isinstance(layers, str) else layers)
    with torch.no_grad(), capture(handle, names, stop_early=True) as acts:
        forward_to(handle, handle.normalize(pixels.to(handle.device)), acts, needs_logits=False)
        return {n: acts[n].detach() for n in names}


def sq_norm(t: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each item of a batch, ``(B,)`` float32.

    >>> sq_norm(torch.ones(2, 3, 2)).tolist()
    [6.0, 6.0]
    """
    return t.float().pow(2).flatten(1).sum(dim=1)
