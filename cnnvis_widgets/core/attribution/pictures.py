"""The pictures of attribution maps: one map as an image, its overlay, all methods in a strip.

Signed maps (DeconvNet, guided backprop, guided Grad-CAM) are shown as images where grey is
zero; the others (saliency, Grad-CAM) as heat maps. :func:`attribution_pictures` makes every
picture the Attribution widget shows from a photo and cached maps, without a new pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import imaging as I
from ..imaging import label_strip

__all__ = ["SIGNED", "map_picture", "label_strip", "attribution_pictures"]

#: methods whose map is shown as a signed image (grey is zero) rather than a heat map
SIGNED = ("deconvnet", "guided_backprop", "guided_grad_cam")


def map_picture(method: str, attr: torch.Tensor) -> torch.Tensor:
    """The picture ``(3, H, W)`` of one method's map ``(C, H, W)``: signed image or heat map.

    Examples
    --------
    >>> map_picture("saliency", torch.rand(1, 8, 8)).shape
    torch.Size([3, 8, 8])
    """
    out = I.signed_to_pixels(attr) if method in SIGNED else I.heatmap(attr)
    return out.expand(3, -1, -1) if out.shape[0] == 1 else out  # grey models


def attribution_pictures(
    pixels: torch.Tensor,
    attr: torch.Tensor,
    method: str,
    opacity: float,
    maps: Sequence[tuple[str, str, torch.Tensor]] = (),
) -> dict[str, torch.Tensor]:
    """Every picture of one map: the map, its overlay on the photo, the strip, the composite.

    Parameters
    ----------
    pixels : torch.Tensor
        The photo ``(3, H, W)`` in ``[0, 1]``.
    attr : torch.Tensor
        The map ``(C, H, W)`` of ``method``.
    method : str
        Its method (signed or not, see :data:`SIGNED`).
    opacity : float
        Of the heat map over the photo.
    maps : sequence of (method, label, map)
        The maps of the strip (every method computed so far), in order; empty: this map only.

    Returns
    -------
    dict
        ``map``, ``overlay``, ``strip`` (``(3, h, w)``) and ``composite`` (photo | map | overlay,
        ``(1, 3, H, w)``).

    Examples
    --------
    >>> pics = attribution_pictures(torch.rand(3, 8, 8), torch.rand(1, 8, 8), "grad_cam", 0.5)
    >>> sorted(pics), pics["composite"].shape
    (['composite', 'map', 'overlay', 'strip'], torch.Size([1, 3, 8, 36]))
    """
    shown_map = map_picture(method, attr)
    magnitude = I.normalize_map(I.reduce_channels(attr))
    over = I.overlay(pixels, I.colorize(magnitude), opacity, weight=magnitude)
    maps = list(maps) or [(method, method, attr)]
    strip = label_strip([map_picture(m, a) for m, _, a in maps], [label for _, label, _ in maps])
    gap = torch.ones(3, pixels.shape[1], 6)
    composite = torch.cat([pixels, gap, shown_map, gap, over], dim=2).unsqueeze(0)
    return {"map": shown_map, "overlay": over, "strip": strip, "composite": composite}
