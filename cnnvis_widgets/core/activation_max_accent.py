"""Past Lucid: feature accentuation of a photo and MaCo's importance (alpha) map.

Feature accentuation (Hamblin et al. 2023) starts activation maximization from a real photo and
adds :func:`~.blocks.regularizers.feature_distance` at a layer earlier than the objective's
(:func:`default_accent_layer`), so the picture stays that photo while what makes the unit fire
in it is pushed: "what in this photo makes unit k fire". :func:`start_pixels` prepares the photo.

MaCo (Fel et al. 2023) shows where an image matters with a transparency map: the absolute input
gradients accumulated over the run (:class:`AlphaMap`), normalized per image; :func:`alpha_picture`
fades the unimportant parts of the image to white.

Used by :func:`cnnvis_widgets.core.activation_max.maximize_steps` (``start=``, ``accentuate=``,
``accent_layer=``; its result's ``alpha``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..models.handle import ModelHandle
from .blocks.objectives import Objective

__all__ = ["default_accent_layer", "start_pixels", "AlphaMap", "alpha_picture"]


def default_accent_layer(handle: ModelHandle, objective: Objective) -> str:
    """The layer whose features accentuation keeps close to the photo's: the top-level block
    (else conv-like layer) halfway to the objective's deepest layer (halfway into the network
    for a class logit), never after it.

    Raises
    ------
    ValueError
        The model has no conv-like layer before the objective's.
    """
    layers = handle.conv_layers()
    if objective.hidden_layers:
        last = max(handle.layer(n).order for n in objective.hidden_layers)
        layers = [li for li in layers if li.order <= last]
    if not layers:
        raise ValueError(
            f"model {handle.name!r} has no conv-like layer before the objective's to keep close to "
            "the photo; pass accent_layer="
        )
    blocks = [li for li in layers if li.kind == "block" and li.name.count(".") <= 1]
    picks = blocks or layers
    return picks[(len(picks) - 1) // 2].name


def start_pixels(
    handle: ModelHandle, start: Image.Image | torch.Tensor, size: int, batch: int
) -> torch.Tensor:
    """The start photo as a pixel batch ``(batch, C, size, size)`` on the device.

    A PIL image is resized and centre-cropped like every photo the network sees
    (:func:`~cnnvis_widgets.core.inversion.target_pixels`); a pixel-space tensor ``(C, H, W)``,
    ``(1, C, H, W)`` or ``(batch, C, H, W)`` in ``[0, 1]`` is resized (bilinear) to ``size``.
    One photo is repeated for the whole batch.
    """
    from .inversion import target_pixels

    if isinstance(start, Image.Image):
        x = target_pixels(handle, start, size)
    elif isinstance(start, torch.Tensor):
        x = start.detach().to(handle.device, torch.float32)
        x = x.unsqueeze(0) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[1] != handle.in_channels:
            raise ValueError(
                f"start must be a pixel-space image (C, H, W) or batch (B, C, H, W) with "
                f"{handle.in_channels} channels, got shape {tuple(start.shape)}"
            )
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError("start must hold finite pixels in [0, 1]")
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
    else:
        raise TypeError(f"start must be a PIL image or a tensor, got {type(start).__name__}")
    if x.shape[0] not in (1, batch):
        raise ValueError(f"start has {x.shape[0]} images, the batch {batch}")
    return x.expand(batch, -1, -1, -1).contiguous()


def accent_weights(accentuate: Sequence[bool] | None, batch: int, device) -> torch.Tensor:
    """Per image ``(B,)``: 1 where the feature term applies, 0 where not (plain AM)."""
    if accentuate is None:
        return torch.ones(batch, device=device)
    flags = [bool(a) for a in accentuate]
    if len(flags) != batch:
        raise ValueError(f"accentuate has {len(flags)} flags, the batch {batch} images")
    return torch.tensor(flags, dtype=torch.float32, device=device)


class AlphaMap:
    """MaCo's importance map: the absolute input gradient, summed over colours and steps.

    :meth:`add` after every step (the image's gradient, ``(B, C, H, W)``); :meth:`map` is the
    sum scaled per image to ``[0, 1]`` by its 99th percentile, ``(B, 1, H, W)`` on the CPU.
    """

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None

    def add(self, grad: torch.Tensor | None) -> None:
        if grad is None:
            return
        g = grad.detach().abs().sum(dim=1, keepdim=True)
        self.total = g if self.total is None else self.total + g

    def map(self) -> torch.Tensor | None:
        if self.total is None:
            return None
        t = self.total.float()
        q = torch.quantile(t.flatten(1), 0.99, dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (t / q).clamp(0, 1).cpu()


def alpha_picture(image: torch.Tensor, alpha: torch.Tensor, background: float = 1.0):
    """The image seen through its importance map: ``alpha * image + (1 - alpha) * background``
    (MaCo's transparency), pixel space like ``image`` (``(C, H, W)`` or a batch).

    >>> alpha_picture(torch.zeros(3, 2, 2), torch.tensor([[[1.0, 0.0], [0.5, 0.0]]]))[0]
    tensor([[0.0000, 1.0000],
            [0.5000, 1.0000]])
    """
    a = alpha.to(image.device, image.dtype)
    if a.dim() == image.dim() - 1:
        a = a.unsqueeze(0)
    if tuple(a.shape[-2:]) != tuple(image.shape[-2:]):
        a4 = a if a.dim() == 4 else a.unsqueeze(0)
        a4 = F.interpolate(a4, image.shape[-2:], mode="bilinear", align_corners=False)
        a = a4 if a.dim() == 4 else a4[0]
    return (a * image + (1 - a) * background).clamp(0, 1)
