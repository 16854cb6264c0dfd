"""First-layer filters as pictures, and dead units: two looks at a network without an input.

Zeiler & Fergus (2014, Fig. 6) changed AlexNet's design after looking at its first-layer
filters: a mix of very high and very low frequencies and no mid frequencies, and "dead"
filters. Two tools for that look:

* :func:`first_layer_filters` / :func:`filter_grid`: the raw kernels of the first convolution
  (or any convolution whose input has 1 or 3 channels), each normalized to ``[0, 1]`` on its own
  (its minimum black, its maximum white), as RGB pictures for a 3-channel input and grey ones for
  a 1-channel input.
* :func:`dead_units`: per layer, the units that are never above zero over a dataset (a ReLU unit
  that never fires passes no signal and no gradient: it is dead).

Examples
--------
>>> import torch
>>> from cnnvis_widgets.models.handle import ModelHandle
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.ReLU())
>>> h = ModelHandle(net, name="tiny", input_size=12, mean=(0.5,), std=(0.5,))
>>> first_layer_filters(h).shape
torch.Size([4, 1, 5, 5])
>>> filter_grid(h, scale=4).shape[0]
3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import imaging, limits
from ..models.handle import ModelHandle
from .blocks.hooks import capture, forward_to

__all__ = [
    "first_conv",
    "first_layer_filters",
    "normalize_kernels",
    "filter_grid",
    "Liveness",
    "dead_units",
]


def first_conv(handle: ModelHandle) -> str:
    """The name of the first ``nn.Conv2d`` in execution order (``ValueError`` when none)."""
    convs = [li for li in handle.layers.values() if isinstance(handle.module(li.name), nn.Conv2d)]
    if not convs:
        raise ValueError(f"{handle.name} has no Conv2d layer: no first-layer filters to show")
    return min(convs, key=lambda li: li.order).name


def first_layer_filters(
    handle: ModelHandle, layer: str | None = None, *, symmetric: bool = False
) -> torch.Tensor:
    """The kernels of ``layer`` (default :func:`first_conv`) as pixel pictures ``(O, C, kh, kw)``.

    Each filter is normalized on its own: ``(w - min) / (max - min)``, or with ``symmetric``
    ``0.5 + w / (2 max|w|)`` (zero is grey, so signs compare across the filter). ``C`` is 3 for a
    3-channel input (RGB) and 1 otherwise: a 1-channel kernel as it is, any other channel count
    as the mean over its input channels (the picture says so only through its grey).
    A constant filter is all grey (0.5).
    """
    name = first_conv(handle) if layer is None else layer
    handle.layer(name)
    module = handle.module(name)
    weight = getattr(module, "weight", None)
    if not isinstance(module, nn.Conv2d) or not isinstance(weight, torch.Tensor):
        raise ValueError(f"layer {name!r} is a {type(module).__name__}, not a Conv2d")
    w = weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True)
    return normalize_kernels(w, symmetric=symmetric)


def normalize_kernels(w: torch.Tensor, *, symmetric: bool = False) -> torch.Tensor:
    """Conv kernels ``(O, C, kh, kw)`` as pictures in ``[0, 1]``, each filter on its own:
    ``(w - min) / (max - min)`` (a constant filter is 0.5), or with ``symmetric``
    ``0.5 + w / (2 max|w|)``."""
    flat = w.flatten(1)
    if symmetric:
        scale = flat.abs().amax(1).view(-1, 1, 1, 1)
        out = 0.5 + w / (2 * scale.clamp(min=1e-12))
    else:
        lo = flat.amin(1).view(-1, 1, 1, 1)
        span = (flat.amax(1) - flat.amin(1)).view(-1, 1, 1, 1)
        out = torch.where(span > 1e-12, (w - lo) / span.clamp(min=1e-12), torch.full_like(w, 0.5))
    return out.clamp(0, 1)


def filter_grid(
    handle: ModelHandle,
    layer: str | None = None,
    *,
    scale: int = 8,
    symmetric: bool = False,
    ncol: int | None = None,
) -> torch.Tensor:
    """The filters of :func:`first_layer_filters` enlarged ``scale`` times (nearest) in one
    RGB grid ``(3, H, W)`` in ``[0, 1]`` (grey filters as grey RGB)."""
    scale = limits.check_int(scale, "scale", minimum=1)
    f = first_layer_filters(handle, layer, symmetric=symmetric)
    if f.shape[2] * scale > limits.MAX_IMAGE_SIDE:
        raise ValueError(f"scale={scale} makes filters larger than MAX_IMAGE_SIDE")
    big = f.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    if big.shape[1] == 1:
        big = big.expand(-1, 3, -1, -1)
    return imaging.make_grid(big, ncol=ncol, pad=max(1, scale // 4), fill=1.0)


@dataclass
class Liveness:
    """How alive a layer's units are over a dataset.

    Attributes
    ----------
    layer : str
    peak : torch.Tensor
        ``(C,)`` each unit's largest output over every image and position.
    active : torch.Tensor
        ``(C,)`` the fraction of (image, position) entries where the unit is above zero.
    count : int
        Images seen.
    """

    layer: str
    peak: torch.Tensor
    active: torch.Tensor
    count: int

    @property
    def dead(self) -> list[int]:
        """Units never above zero."""
        return [int(u) for u in torch.nonzero(self.peak <= 0).flatten()]

    @property
    def dead_fraction(self) -> float:
        """Dead units / units."""
        return len(self.dead) / max(1, self.peak.numel())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "layer": self.layer,
            "units": int(self.peak.numel()),
            "dead": self.dead,
            "dead_fraction": self.dead_fraction,
            "count": self.count,
        }


def dead_units(
    handle: ModelHandle,
    dataset: Any,
    layers: Sequence[str] | None = None,
    *,
    batch: int = 32,
) -> dict[str, Liveness]:
    """Per layer, each unit's peak output and how often it is above zero over ``dataset``.

    ``layers`` defaults to every activation layer (``kind == "act"``) with one output per
    channel; ``dataset`` is anything :func:`cnnvis_widgets.core.labelled.dataset_batches`
    reads. One forward pass per batch, stopped after the deepest layer.
    """
    from .labelled import dataset_batches

    names = (
        [li.name for li in handle.layers.values() if li.kind == "act"]
        if layers is None
        else list(layers)
    )
    if not names:
        raise ValueError(f"{handle.name} has no activation layers: pass layers=[...]")
    for n in names:
        handle.layer(n)
    h, w = handle.input_size
    batch = limits.check_batch(batch, h, w, name="batch")
    peak: dict[str, torch.Tensor] = {}
    above: dict[str, torch.Tensor] = {}
    entries: dict[str, int] = {}
    count = 0
    with torch.no_grad(), capture(handle, names, stop_early=True) as acts:
        for x, _ in dataset_batches(handle, dataset, batch):
            forward_to(handle, x, acts, needs_logits=False)
            for n in names:
                a = acts[n].float().transpose(0, 1).reshape(acts[n].shape[1], -1)
                p = a.amax(1).cpu()
                peak[n] = p if n not in peak else torch.maximum(peak[n], p)
                c = (a > 0).sum(1).cpu()
                above[n] = c if n not in above else above[n] + c
                entries[n] = entries.get(n, 0) + a.shape[1]
            count += x.shape[0]
    if count == 0:
        raise ValueError("the dataset is empty")
    return {n: Liveness(n, peak[n], above[n].float() / max(1, entries[n]), count) for n in names}
