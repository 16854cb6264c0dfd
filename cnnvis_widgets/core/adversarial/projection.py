"""The eps-ball around a clean image, exactly: L-infinity bounds, L2 projection, random start.

The perturbation ``adv - clean`` stays inside the ball *exactly*, in float32 and in exact
arithmetic: L-infinity attacks clamp every step between per-pixel bounds computed once
(:func:`linf_bounds`: ``clean +- eps`` within ``[0, 1]``, each bound moved one ulp inwards where
float rounding overshot); L2 attacks scale the perturbation to a radius a hair inside eps and
check the norm again after rounding.
"""

from __future__ import annotations

import math

import torch

from .inputs import Norm, _check_eps, _check_norm

# The L2 projection aims slightly inside the ball so that the norm computed by anyone, in float32
# with any summation order, stays <= eps.
_L2_MARGIN = 1e-5


def _float32_at_most(value: float) -> float:
    """The largest float32 number that is <= ``value`` (as a Python float)."""
    t = torch.tensor(value, dtype=torch.float32)
    if float(t) > value:
        t = torch.nextafter(t, torch.tensor(-math.inf))
    return float(t)


def _toward(clean: torch.Tensor, bound: torch.Tensor, e: float) -> torch.Tensor:
    """Move the entries of ``bound`` whose *exact* distance to ``clean`` exceeds ``e`` one ulp
    towards ``clean`` (float rounding of ``clean +- e`` can overshoot by up to half an ulp; one ulp
    back is then inside, because the gap below a float is at least half its ulp)."""
    over = (bound.double() - clean.double()).abs() > e
    return torch.where(over, torch.nextafter(bound, clean), bound)


def linf_bounds(clean: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``(low, high)`` of the L-infinity ball around ``clean`` intersected with
    ``[0, 1]``, such that every value in between is within ``eps`` of ``clean`` *exactly*.

    Computed once per attack: projecting is then one ``torch.clamp(adv, low, high)`` per step.

    Examples
    --------
    >>> lo, hi = linf_bounds(torch.tensor([0.0, 0.5, 1.0]), 0.1)
    >>> lo.tolist()[0], hi.tolist()[2]
    (0.0, 1.0)
    """
    eps = _check_eps(eps, "linf")
    e = _float32_at_most(eps) if clean.dtype == torch.float32 else eps
    low = _toward(clean, (clean - e).clamp_min(0), e)
    high = _toward(clean, (clean + e).clamp_max(1), e)
    return low, high


def _l2_project(clean: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale ``adv - clean`` into the L2 ball (aiming a hair inside) and clamp to ``[0, 1]``.

    The norm is aimed at ``eps * (1 - 1e-5)``; images whose float32 norm after rounding is still
    above ``eps * (1 - 3e-6)`` (float32 norms are good to about 1e-6 relative here) are scaled
    once more, so the exact norm, and any float32 computation of it, stays <= eps.
    """
    view = (-1,) + (1,) * (clean.dim() - 1)
    target = eps * (1 - _L2_MARGIN)
    d = adv - clean
    n = torch.linalg.vector_norm(d.flatten(1), dim=1)
    factor = (target / n.clamp_min(1e-30)).clamp_max(1.0)
    out = torch.addcmul(clean, d, factor.view(view)).clamp_(0, 1)
    d = out - clean
    n = torch.linalg.vector_norm(d.flatten(1), dim=1)
    again = n > eps * (1 - 3 * _L2_MARGIN / 10)
    factor = torch.where(again, target * (1 - 1e-4) / n.clamp_min(1e-30), torch.ones_like(n))
    return torch.addcmul(clean, d, factor.view(view)).clamp_(0, 1)


def project(clean: torch.Tensor, adv: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``adv`` onto the ``eps``-ball around ``clean`` and onto ``[0, 1]``, exactly.

    Parameters
    ----------
    clean, adv : torch.Tensor
        Pixel-space batches of the same shape.
    eps : float
        Radius in pixel units.
    norm : ``"linf"`` or ``"l2"``
        The ball.

    Returns
    -------
    torch.Tensor
        ``adv`` moved inside the ball and the pixel range; for L-infinity the distance of every
        pixel is ``<= eps`` exactly (in float32 and in exact arithmetic), for L2 the norm per
        image is.

    Examples
    --------
    >>> x = torch.full((1, 3, 4, 4), 0.5)
    >>> p = project(x, x + 0.1, 4 / 255)
    >>> bool((p - x).abs().max() <= 4 / 255)
    True
    """
    norm = _check_norm(norm)
    eps = _check_eps(eps, norm)
    adv = adv.detach().to(clean.dtype)
    if norm == "linf":
        low, high = linf_bounds(clean, eps)
        return torch.clamp(adv, low, high)
    return _l2_project(clean, adv, eps)


def _random_start(
    clean: torch.Tensor, eps: float, norm: Norm, generator: torch.Generator
) -> torch.Tensor:
    shape = clean.shape
    if norm == "linf":
        noise = (torch.rand(shape, generator=generator) * 2 - 1) * eps
    else:
        g = torch.randn(shape, generator=generator)
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
        r = torch.rand(shape[0], generator=generator).view(-1, *([1] * (g.dim() - 1)))
        noise = g * r * eps
    return project(clean, clean + noise.to(clean.device), eps, norm)
