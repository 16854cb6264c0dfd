"""Regularizers of the activation-maximization and inversion literature.

Two kinds:

* *loss terms* (differentiable, added to the loss): :func:`total_variation`, :func:`alpha_norm`,
  :func:`l2_penalty`, :func:`feature_distance` (feature accentuation, Hamblin et al. 2023);
* *step operators* applied to the pixel image between steps (Yosinski et al. 2015):
  :func:`decay`, :func:`gaussian_blur`, :func:`clip_small_norm`, :func:`clip_small_contribution`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "total_variation",
    "alpha_norm",
    "l2_penalty",
    "feature_distance",
    "decay",
    "gaussian_blur",
    "clip_small_norm",
    "clip_small_contribution",
    "high_frequency_energy",
]


def total_variation(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Total variation per image ``(B,)``: mean of ``(dx^2 + dy^2) ^ (beta / 2)``.

    ``beta = 1`` is the classic TV; Mahendran & Vedaldi use ``beta = 2``.
    """
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    sq = dx * dx + dy * dy
    if beta == 2:  # the common case: no pow (and no epsilon needed, the gradient is linear)
        return sq.flatten(1).mean(dim=1)
    if beta == 1:
        return (sq + 1e-8).sqrt().flatten(1).mean(dim=1)
    return (sq + 1e-8).pow(beta / 2).flatten(1).mean(dim=1)


def alpha_norm(x: torch.Tensor, alpha: float = 6.0, center: torch.Tensor | float = 0.5):
    """Alpha-norm per image ``(B,)``: mean of ``|x - center| ^ alpha`` (Mahendran & Vedaldi)."""
    d = x - center
    if float(alpha).is_integer() and alpha % 2 == 0 and 2 <= alpha <= 8:
        sq = d * d  # even integer powers by multiplication: faster than pow, same values
        out = sq
        for _ in range(int(alpha) // 2 - 1):
            out = out * sq
        return out.flatten(1).mean(dim=1)
    return d.abs().pow(alpha).flatten(1).mean(dim=1)


def l2_penalty(x: torch.Tensor, center: torch.Tensor | float = 0.5) -> torch.Tensor:
    """Squared L2 norm per image ``(B,)`` of ``x - center`` (Simonyan et al. 2013)."""
    return (x - center).pow(2).flatten(1).sum(dim=1)


def feature_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Normalized squared feature distance per image ``(B,)``: ``|f - f0|^2 / |f0|^2``.

    Feature accentuation (Hamblin et al. 2023) adds it, at a layer earlier than the objective's,
    to keep the optimized image's features close to the photo's (``reference``, the same shape
    or a batch of one).

    >>> f0 = torch.ones(1, 2, 3, 3)
    >>> feature_distance(f0 * 2, f0).tolist(), feature_distance(f0, f0).tolist()
    ([1.0], [0.0])
    """
    d = (features - reference).flatten(1).pow(2).sum(1)
    return d / reference.flatten(1).pow(2).sum(1).clamp_min(1e-12)


def decay(x: torch.Tensor, rate: float, center: torch.Tensor | float = 0.5) -> torch.Tensor:
    """L2 decay: shrink towards the neutral pixel by ``rate`` (Yosinski's theta_decay)."""
    if rate <= 0:
        return x
    return center + (x - center) * (1.0 - rate)


def _gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    # float64: a tiny sigma must not underflow to 0 in float32 (0/0 would poison the image)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with standard deviation ``sigma`` pixels (reflect padding).

    Widths below 0.01 pixel are the identity (and are treated so, exactly)."""
    if not sigma >= 0.01:  # also NaN
        return x
    c = x.shape[1]
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    r = (k.numel() - 1) // 2
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), kx, groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), ky, groups=c)


def _percentile_mask(score: torch.Tensor, pct: float) -> torch.Tensor:
    """True where ``score (B, H, W)`` is below its per-image ``pct`` percentile."""
    flat = score.flatten(1)
    q = torch.quantile(flat, pct / 100.0, dim=1, keepdim=True)
    return (flat < q).view_as(score)


def clip_small_norm(x: torch.Tensor, pct: float, center: torch.Tensor | float = 0.5):
    """Set pixels whose colour norm is below the ``pct`` percentile to the neutral pixel."""
    if pct <= 0:
        return x
    d = x - center
    mask = _percentile_mask(d.norm(dim=1), pct).unsqueeze(1)
    return torch.where(mask, torch.as_tensor(center, dtype=x.dtype, device=x.device) + 0 * x, x)


def clip_small_contribution(
    x: torch.Tensor, grad: torch.Tensor | None, pct: float, center: torch.Tensor | float = 0.5
):
    """Set pixels whose contribution ``|sum_c (x - center) * grad|`` is below the ``pct``
    percentile to the neutral pixel (Yosinski's clipping of pixels with small contribution)."""
    if pct <= 0 or grad is None:
        return x
    contrib = ((x - center) * grad).sum(dim=1).abs()
    mask = _percentile_mask(contrib, pct).unsqueeze(1)
    return torch.where(mask, torch.as_tensor(center, dtype=x.dtype, device=x.device) + 0 * x, x)


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Share of spectral energy above half the Nyquist frequency, per image ``(B,)``."""
    spec = torch.fft.rfft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs().pow(2)
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, device=x.device)[:, None].abs()
    fx = torch.fft.rfftfreq(w, device=x.device)[None, :]
    high = (torch.maximum(fx, fy) > 0.25).to(spec.dtype)
    return (spec * high).flatten(1).sum(1) / spec.flatten(1).sum(1).clamp_min(1e-12)
