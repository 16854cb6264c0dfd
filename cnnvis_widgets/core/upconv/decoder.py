"""The up-convolutional decoder network of Dosovitskiy & Brox (CVPR 2016), sized from a layer.

:class:`UpconvDecoder` maps a layer's features back to pixels: its channels set the width, its
stride (input side over feature side) the number of 2x transposed-convolution stages; fully
connected layers start from a 4x4 map. :func:`build_decoder` rebuilds one from its ``config``
(what a checkpoint stores).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models.handle import ModelHandle

__all__ = ["UpconvDecoder", "build_decoder", "autocast"]


class UpconvDecoder(nn.Module):
    """Decoder from a layer's features ``(B, C, h, w)`` (or ``(B, C)``) to pixels ``(B, 3, H, W)``.

    Architecture (Dosovitskiy & Brox 2016): two 3x3 convolutions at the feature resolution, then
    per 2x upsampling stage a 4x4 transposed convolution with stride 2 and a 3x3 convolution,
    leaky ReLU (0.2) after each, and a final 3x3 convolution with a sigmoid, so the output is in
    pixel space ``[0, 1]``. Widths halve at each stage, from ``width`` down to ``min_width``.

    Parameters
    ----------
    in_channels : int
        Channels of the layer.
    stride : float
        Input side over feature side (``224 / 28 = 8``); ``ceil(log2(stride))`` stages, and a
        final resize when the stride is not a power of two.
    out_channels : int
        Image channels (3 for RGB).
    width : int, optional
        Channels after the first convolution (default ``clamp(2 * in_channels, 64, 256)``).
    min_width : int
        Smallest stage width.
    spatial : bool
        False for a fully connected layer: a linear map to a 4x4 map starts the decoder.
    image_size : int
        Output side for a non-spatial layer (ignored otherwise).

    Examples
    --------
    >>> dec = UpconvDecoder(40, stride=8)
    >>> dec(torch.zeros(2, 40, 16, 16)).shape
    torch.Size([2, 3, 128, 128])
    """

    def __init__(
        self,
        in_channels: int,
        stride: float,
        *,
        out_channels: int = 3,
        width: int | None = None,
        min_width: int = 32,
        spatial: bool = True,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if spatial and stride <= 0:
            raise ValueError(f"stride must be > 0, got {stride}")
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "stride": float(stride) if spatial else float(image_size) / 4.0,
            "out_channels": int(out_channels),
            "width": int(width or min(256, max(64, 2 * int(in_channels)))),
            "min_width": int(min_width),
            "spatial": bool(spatial),
            # spatial decoders follow the feature map's size: no image size of their own
            "image_size": 0 if spatial else int(image_size),
        }
        c = self.config
        w = c["width"]
        self.n_up = max(0, math.ceil(math.log2(c["stride"]) - 1e-6)) if c["stride"] > 1 else 0
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.fc: nn.Module | None = None
        if not c["spatial"]:
            self.fc = nn.Sequential(nn.Linear(c["in_channels"], w * 16), act())
            head_in = w
        else:
            head_in = c["in_channels"]
        self.head = nn.Sequential(
            nn.Conv2d(head_in, w, 3, padding=1), act(), nn.Conv2d(w, w, 3, padding=1), act()
        )
        stages: list[nn.Module] = []
        cur = w
        for _ in range(self.n_up):
            nxt = max(c["min_width"], cur // 2)
            stages += [
                nn.ConvTranspose2d(cur, nxt, 4, stride=2, padding=1),
                act(),
                nn.Conv2d(nxt, nxt, 3, padding=1),
                act(),
            ]
            cur = nxt
        self.stages = nn.Sequential(*stages)
        self.tail = nn.Conv2d(cur, c["out_channels"], 3, padding=1)
        #: number of training updates behind the weights (set by training and loading)
        self.trained_steps = 0
        #: what it was trained on (model, layer, size, dataset key)
        self.meta: dict[str, Any] = {}

    @classmethod
    def for_layer(
        cls,
        handle: ModelHandle,
        layer: str,
        *,
        size: int | None = None,
        width: int | None = None,
        min_width: int = 32,
    ) -> UpconvDecoder:
        """A decoder sized for ``layer`` of ``handle`` (channels, stride), on the handle's device.

        ``size`` is the image side it will be trained at (default: the model's input size); it
        only matters for non-spatial layers (spatial decoders follow the feature map's size).
        """
        info = handle.layer(layer)
        size = int(size or handle.input_size[0])
        spatial = info.spatial and (info.height or 0) > 1
        stride = handle.input_size[0] / info.height if spatial and info.height else 1.0
        dec = cls(
            info.channels,
            stride,
            out_channels=handle.in_channels,
            width=width,
            min_width=min_width,
            spatial=spatial,
            image_size=size,
        )
        return dec.to(handle.device)

    def output_size(self, features: torch.Tensor) -> tuple[int, int]:
        """The image size this decoder produces for ``features``."""
        if not self.config["spatial"]:
            s = self.config["image_size"]
            return s, s
        st = self.config["stride"]
        return round(features.shape[-2] * st), round(features.shape[-1] * st)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> pixel-space image (differentiable)."""
        x = features
        if x.dim() < 2 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(
                f"features of shape {tuple(x.shape)} do not fit this decoder, built for "
                f"{self.config['in_channels']} channels"
            )
        if self.fc is not None:
            x = self.fc(x.flatten(1)).view(x.shape[0], self.config["width"], 4, 4)
        elif x.dim() != 4:
            raise ValueError(
                f"this decoder expects 4-D features (B, C, h, w), got shape {tuple(x.shape)}"
            )
        out_hw = self.output_size(features)
        y = self.tail(self.stages(self.head(x)))
        if tuple(y.shape[-2:]) != out_hw:
            y = F.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(y)

    @torch.no_grad()
    def decode(
        self, features: torch.Tensor, size: int | Sequence[int] | None = None
    ) -> torch.Tensor:
        """One forward pass: features -> pixel-space ``(B, C, H, W)`` float32 in ``[0, 1]``.

        ``size`` resizes the output (e.g. to the original image's size). Mixed precision on
        CUDA.
        """
        dev = next(self.parameters()).device
        features = features.to(dev)
        with autocast(dev):
            y = self(features)
        y = y.float()
        if size is not None:
            hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
            if tuple(y.shape[-2:]) != hw:
                y = F.interpolate(y, size=hw, mode="bilinear", align_corners=False)
        return y.clamp(0, 1)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def build_decoder(config: dict[str, Any]) -> UpconvDecoder:
    """The decoder described by ``config`` (:attr:`UpconvDecoder.config`), untrained."""
    c = dict(config)
    return UpconvDecoder(
        c["in_channels"],
        c["stride"],
        out_channels=c["out_channels"],
        width=c["width"],
        min_width=c["min_width"],
        spatial=c["spatial"],
        image_size=c["image_size"],
    )
