"""Integrated gradients (Sundararajan et al. 2017) and SmoothGrad (Smilkov et al. 2017).

Integrated gradients average the plain gradient along the straight path from a baseline
``x'`` to the image ``x`` and multiply by ``x - x'``; by the fundamental theorem of calculus the
attributions sum to ``f(x) - f(x')`` (completeness), which :class:`IGResult` reports so a reader
can see how well the ``steps``-point Riemann sum converged. Baselines: ``"black"`` (zero pixels,
in model-input space ``-mean / std``), ``"blur"`` (the image blurred, Sturmfels et al. 2020),
``"mean"`` (0 in model-input space, the model's mean colour) or a tensor.

SmoothGrad averages any gradient method's map over noisy copies of the image (noise of standard
deviation ``noise`` times the image's value range). The path points and the noisy copies go
through the network as batches.

Examples
--------
>>> r = integrated_gradients(handle, x, 281, steps=32)           # doctest: +SKIP
>>> float(r.completeness_gap.abs().max()) < 0.05 * float(r.delta.abs().max())  # doctest: +SKIP
True
>>> smoothgrad(handle, x, 281, "guided_backprop", samples=16).shape  # doctest: +SKIP
torch.Size([1, 3, 224, 224])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ... import limits
from ...models import ModelHandle
from ..blocks.regularizers import gaussian_blur
from .gradients import METHODS, _as_input, _backward, canonical_method
from .scoring import batch_size_for, chunks, flush_denormals, per_image_targets, scores

__all__ = ["IGResult", "integrated_gradients", "baseline", "smoothgrad", "BASELINES"]

BASELINES = ("black", "blur", "mean")


@dataclass
class IGResult:
    """Integrated gradients of a batch.

    Attributes
    ----------
    attributions : torch.Tensor
        ``(B, C, H, W)`` on ``handle.device``.
    delta : torch.Tensor
        ``(B,)``: ``f(x) - f(baseline)``, what the attributions should sum to.
    total : torch.Tensor
        ``(B,)``: the sum of the attributions.
    passes : int
        Forward+backward passes of single images (steps x images); the completeness check
        adds two forward passes per image (the image and the baseline).
    """

    attributions: torch.Tensor
    delta: torch.Tensor
    total: torch.Tensor
    passes: int

    @property
    def completeness_gap(self) -> torch.Tensor:
        """``total - delta`` per image (0 for an exact integral)."""
        return self.total - self.delta

    def relative_gap(self) -> torch.Tensor:
        """``|total - delta| / |delta|`` per image."""
        return self.completeness_gap.abs() / self.delta.abs().clamp_min(1e-12)


def baseline(handle: ModelHandle, x: torch.Tensor, kind: str | torch.Tensor = "black",
             *, blur_sigma: float = 20.0) -> torch.Tensor:  # fmt: skip
    """The baseline image for ``x`` (model-input space, same shape)."""
    if isinstance(kind, torch.Tensor):
        b = kind.to(x.device, x.dtype)
        if b.dim() == 3:
            b = b.unsqueeze(0)
        if b.shape[1:] != x.shape[1:]:
            raise ValueError(f"baseline shape {tuple(b.shape)} does not match {tuple(x.shape)}")
        return b.expand_as(x)
    if kind == "black":
        mean = torch.tensor(handle.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(handle.std, device=x.device).view(1, -1, 1, 1)
        return ((0 - mean) / std).expand_as(x).to(x.dtype)
    if kind == "mean":
        return torch.zeros_like(x)
    if kind == "blur":
        return gaussian_blur(x, float(blur_sigma))
    raise ValueError(f"unknown baseline {kind!r}: use one of {', '.join(BASELINES)} or a tensor")


def integrated_gradients(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    *,
    steps: int = 32,
    baseline_kind: str | torch.Tensor = "black",
    batch_size: int | None = None,
) -> IGResult:
    """Integrated gradients with the midpoint Riemann sum of ``steps`` points.

    Parameters
    ----------
    handle, images, target
        As for :func:`cnnvis_widgets.core.attribution.saliency`.
    steps : int
        Points on the path (Sundararajan et al.: 20 to 300 are enough for a gap within 5%).
    baseline_kind : ``"black"``, ``"blur"``, ``"mean"`` or a tensor
        The path's start (see the module docstring).
    batch_size : int, optional
        Path points per backward pass (default: as many as the limits allow, at most 64).
    """
    x = _as_input(handle, images)
    m = limits.check_int(steps, "steps", minimum=1, limit="MAX_STEPS")
    b = baseline(handle, x, baseline_kind)
    targets = per_image_targets(handle, target, x.shape[0])
    bs = batch_size_for(batch_size, x.shape[-2], x.shape[-1])
    alphas = (torch.arange(m, dtype=torch.float32, device=x.device) + 0.5) / m
    out, deltas, totals = [], [], []
    with flush_denormals(x.device):  # tiny values near the baseline: no slow denormal maths
        for i, (obj, _) in enumerate(targets):
            xi, bi = x[i : i + 1], b[i : i + 1]
            diff = xi - bi
            acc = torch.zeros_like(xi)
            for sl in chunks(m, bs):
                path = torch.addcmul(bi, alphas[sl].view(-1, 1, 1, 1), diff)  # bi + a * diff
                g, _, _ = _backward(handle, path, obj, "gradient")
                assert g is not None
                acc += g.sum(0, keepdim=True)
            attr = diff * acc / m
            ends, _ = scores(handle, torch.cat([xi, bi]), obj, batch_size=2)
            out.append(attr)
            deltas.append(float(ends[0] - ends[1]))
            totals.append(float(attr.sum()))
    return IGResult(torch.cat(out), torch.tensor(deltas), torch.tensor(totals), m * x.shape[0])


def smoothgrad(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    method: str = "saliency",
    *,
    samples: int = 16,
    noise: float = 0.15,
    squared: bool = False,
    seed: int = 0,
    layer: str | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """SmoothGrad: the mean of ``method``'s map over ``samples`` noisy copies of each image.

    ``noise`` is the standard deviation as a fraction of each image's value range (Smilkov et
    al.: 10-20%); ``squared`` averages the squared maps (SmoothGrad-squared). ``method`` is any
    key of :data:`cnnvis_widgets.core.attribution.METHODS`. The noise is drawn from a generator
    seeded by ``seed`` (the global random state is untouched). Returns the map's shape.
    """
    from .gradients import attribute

    name = canonical_method(method)
    x = _as_input(handle, images)
    n = limits.check_int(samples, "samples", minimum=1, limit="MAX_STEPS")
    sd_frac = limits.check_float(noise, "noise", minimum=0.0, maximum=10.0)
    targets = per_image_targets(handle, target, x.shape[0])
    bs = batch_size_for(batch_size, x.shape[-2], x.shape[-1])
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    needs_layer = METHODS[name][2]
    out = []
    for i, (obj, _) in enumerate(targets):
        xi = x[i : i + 1]
        sd = sd_frac * float(xi.max() - xi.min())
        acc: torch.Tensor | None = None
        for sl in chunks(n, bs):
            k = sl.stop - sl.start
            eps = torch.randn((k, *xi.shape[1:]), generator=gen).to(xi.device) * sd
            maps = attribute(handle, xi + eps, obj, name, layer if needs_layer else None)
            maps = maps.pow(2) if squared else maps
            part = maps.sum(0, keepdim=True)
            acc = part if acc is None else acc + part
        assert acc is not None
        out.append(acc / n)
    return torch.cat(out)
