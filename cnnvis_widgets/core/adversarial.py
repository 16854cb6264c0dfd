"""Adversarial examples (FGSM, PGD) and what they change inside the network.

Everything here works in *pixel space*: images are float batches ``(B, C, H, W)`` in ``[0, 1]``
and ``eps`` is in pixel units (``4/255`` means four grey levels). The network sees
``handle.normalize(pixels)``. The perturbation ``adv - clean`` stays inside the eps-ball *exactly*,
so ``(adv - clean).abs().max() <= eps`` (L-infinity) or ``(adv - clean).flatten(1).norm(dim=1) <=
eps`` (L2) holds whether it is computed in float32 or float64: L-infinity attacks clamp every step
between per-pixel bounds computed once (``clean +- eps`` within ``[0, 1]``, each bound moved one ulp
inwards where float rounding overshot, see :func:`linf_bounds`); L2 attacks scale the perturbation
to a radius a hair inside eps and check the norm again after rounding.

Attacks (Goodfellow et al. 2015, *Explaining and harnessing adversarial examples*; Madry et al.
2018, *Towards deep learning models resistant to adversarial attacks*):

* :func:`fgsm` -- one signed-gradient step of size ``eps``;
* :func:`pgd` -- projected gradient ascent, L-infinity or L2, random start, targeted or not;
* :func:`pgd_steps` -- the same as a generator of :class:`~cnnvis_widgets.core.optimize.Step`
  (what the widget drives; a ``threading.Event`` stops it between steps).

Untargeted attacks push the cross-entropy of the clean image's own top-1 class up; targeted ones
push the cross-entropy of the target class down. When the cross-entropy's gradient of an image is
exactly zero (a saturated softmax), that image's step uses the logit margin instead, whose
gradient does not vanish, so the attack never stalls on a zero gradient.

Analyses of a clean/adversarial pair: :func:`amplify` (the perturbation made visible),
:func:`top_k` (predictions before/after), :func:`unit_changes` (the units of a layer that change
most), :func:`attribution_maps` (saliency / guided backprop / Grad-CAM of both images for the
original and the new class) and :func:`analyze`, which does all of them.

Examples
--------
>>> import cnnvis_widgets as cw                                          # doctest: +SKIP
>>> from cnnvis_widgets.core import adversarial                          # doctest: +SKIP
>>> h = cw.load_model()                                                  # doctest: +SKIP
>>> x = h.to_pixels(cw.data.sample_image("cat"))                         # doctest: +SKIP
>>> adv = adversarial.pgd(h, x, eps=4 / 255, steps=10)                   # doctest: +SKIP
>>> float((adv - x).abs().max()) <= 4 / 255                              # doctest: +SKIP
True
>>> adversarial.top_k(h, adv)[0][0]["name"]                              # doctest: +SKIP
'...'
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .. import limits
from ..models.handle import ModelHandle
from .blocks.hooks import capture
from .blocks.optimize import NonFiniteLossError, Step

__all__ = [
    "fgsm",
    "pgd",
    "pgd_steps",
    "project",
    "linf_bounds",
    "amplify",
    "predict",
    "top_k",
    "unit_changes",
    "attribution_maps",
    "analyze",
    "PairAnalysis",
    "NORMS",
    "ATTRIBUTION_METHODS",
]

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")
ATTRIBUTION_METHODS = ("saliency", "guided_backprop", "grad_cam")
# The L2 projection aims slightly inside the ball so that the norm computed by anyone, in float32
# with any summation order, stays <= eps.
_L2_MARGIN = 1e-5


# --------------------------------------------------------------------------------- validation
def _float32_at_most(value: float) -> float:
    """The largest float32 number that is <= ``value`` (as a Python float)."""
    t = torch.tensor(value, dtype=torch.float32)
    if float(t) > value:
        t = torch.nextafter(t, torch.tensor(-math.inf))
    return float(t)


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


# --------------------------------------------------------------------------------- projection
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


# --------------------------------------------------------------------------------- attacks
def _objective(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-image quantity the attack *increases*."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return -ce if targeted else ce


def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Logit margin (Carlini & Wagner): its gradient never vanishes, unlike a saturated CE."""
    own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), -math.inf).amax(dim=1)
    return own - others if targeted else others - own


def _gradient(
    handle: ModelHandle, adv: torch.Tensor, labels: torch.Tensor, targeted: bool, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, int]:
    """(objective per image, gradient, its norm per image, logits, mean objective, number of
    images that needed the margin fallback). One device sync per call."""
    x = adv.clone().requires_grad_(True)
    logits = _logits(handle, x)
    obj = _objective(logits, labels, targeted)
    (grad,) = torch.autograd.grad(obj.sum(), x)
    gnorm = grad.flatten(1).norm(dim=1)  # NaN/inf when any entry is; 0 when all are zero
    # one small transfer for every check: mean, obj finite, grad finite, zero-gradient images
    stats = torch.stack(
        [
            obj.mean(),
            torch.isfinite(obj).all().float(),
            torch.isfinite(gnorm).all().float(),
            (gnorm == 0).sum().float(),
        ]
    ).tolist()
    mean, obj_ok, grad_ok, n_zero = stats[0], stats[1], stats[2], int(stats[3])
    if not obj_ok:
        raise NonFiniteLossError(
            f"the attack's loss became {obj.detach().cpu().tolist()} at step {step}: the model "
            "returns NaN or infinite logits for these images; check the model (and its weights)"
        )
    if n_zero:
        idx = (gnorm == 0).nonzero().flatten()
        xz = adv[idx].clone().requires_grad_(True)
        m = _margin(_logits(handle, xz), labels[idx], targeted)
        (gz,) = torch.autograd.grad(m.sum(), xz)
        grad = grad.index_copy(0, idx, gz)
        gnorm = grad.flatten(1).norm(dim=1)
        grad_ok = float(torch.isfinite(gnorm).all())
    if not grad_ok:
        raise NonFiniteLossError(
            f"the attack's gradient became NaN or infinite at step {step}; check the model for "
            "operations without a finite gradient"
        )
    return obj.detach(), grad, gnorm, logits.detach(), mean, n_zero


def pgd_steps(
    handle: ModelHandle,
    images: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    target: int | Sequence[int] | torch.Tensor | None = None,
    random_start: bool = True,
    seed: int = 0,
    *,
    stop_event: threading.Event | None = None,
) -> Iterator[Step]:
    """Projected gradient ascent, one :class:`Step` per update (the generator behind :func:`pgd`).

    Parameters
    ----------
    handle : ModelHandle
    images : torch.Tensor
        Clean pixel-space batch ``(B, C, H, W)`` in ``[0, 1]`` (any size the model accepts).
    eps : float
        Radius of the ball in pixel units (``4/255``: four grey levels for L-infinity).
    steps : int
        Number of updates.
    step_size : float, optional
        Size of one update: the signed step for L-infinity, the length of the normalized gradient
        step for L2. Default ``2.5 * eps / steps`` (Madry et al.).
    norm : ``"linf"`` or ``"l2"``
    target : int, sequence of int or tensor, optional
        Class(es) to reach (targeted attack); ``None`` moves each image away from its clean top-1.
    random_start : bool
        Start from a uniformly random point of the ball (seeded) instead of the clean image.
    seed : int
        Seeds the random start: the same seed repeats the run.
    stop_event : threading.Event, optional
        When set, the attack ends before the next step.

    Yields
    ------
    Step
        ``image``: the adversarial batch after this update (pixel space, on the device; clone it
        to keep it); ``loss``: the mean attack objective *before* the update (cross-entropy of
        the clean class, or minus the cross-entropy of the target); ``metrics``: per-image
        ``objective``, ``pred`` (top-1 before the update), ``grad_norm``, ``success`` and
        ``zero_grad_fallback`` (images whose CE gradient was zero and used the logit margin).

    Raises
    ------
    ValueError
        Images outside ``[0, 1]`` or not finite, bad eps/norm/steps.
    IndexError
        A target class out of range.
    NonFiniteLossError
        The model produced NaN/inf logits or gradients.
    """
    norm = _check_norm(norm)
    eps = _check_eps(eps, norm)
    steps = limits.check_steps(steps)
    seed = limits.as_int(seed, "seed")
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size}")
    clean = _check_images(handle, images)
    with handle.pinned(ttl=1.0):  # the twin checked once per second of the run, not per step
        labels, targeted = _labels(handle, clean, target)
        if random_start and eps > 0:
            gen = torch.Generator().manual_seed(int(seed))
            adv = _random_start(clean, eps, norm, gen)
        else:
            adv = clean.clone()
        view = (-1,) + (1,) * (clean.dim() - 1)
        low, high = linf_bounds(clean, eps) if norm == "linf" else (clean, clean)
        for i in range(steps):
            if stop_event is not None and stop_event.is_set():
                return
            obj, grad, gnorm, logits, mean, n_zero = _gradient(handle, adv, labels, targeted, i)
            if norm == "linf":
                adv = torch.clamp(adv.add(grad.sign(), alpha=alpha), low, high)
            else:
                scale = (alpha / gnorm.clamp_min(1e-30)).view(view)
                adv = _l2_project(clean, torch.addcmul(adv, grad, scale), eps)
            pred = logits.argmax(dim=1)
            success = pred == labels if targeted else pred != labels
            metrics: dict[str, Any] = {
                "objective": obj,
                "pred": pred,
                "grad_norm": gnorm.detach(),
                "success": success,
                "zero_grad_fallback": n_zero,
                "labels": labels,
                "targeted": targeted,
            }
            yield Step(i, mean, adv, metrics, steps)


def pgd(
    handle: ModelHandle,
    images: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    target: int | Sequence[int] | torch.Tensor | None = None,
    random_start: bool = True,
    seed: int = 0,
) -> torch.Tensor:
    """Projected gradient descent attack (Madry et al. 2018), L-infinity or L2.

    Takes and returns pixel-space batches in ``[0, 1]``; ``eps`` is in pixel units. See
    :func:`pgd_steps` for the parameters. The result is on the device of ``images``.

    Examples
    --------
    >>> adv = pgd(handle, x, eps=4 / 255, steps=10)                   # doctest: +SKIP
    >>> bool((adv - x).abs().max() <= 4 / 255)                        # doctest: +SKIP
    True
    >>> adv = pgd(handle, x, eps=1.0, norm="l2", target=281)          # doctest: +SKIP
    """
    last: Step | None = None
    for last in pgd_steps(  # noqa: B007 - only the last step is kept
        handle, images, eps, steps, step_size, norm, target, random_start, seed
    ):
        pass
    assert last is not None and last.image is not None
    return last.image.detach().clone().to(images.device)


def fgsm(
    handle: ModelHandle,
    images: torch.Tensor,
    eps: float,
    target: int | Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of ``eps`` along the sign.

    Untargeted: away from each image's clean top-1 class; targeted: towards ``target``.

    Examples
    --------
    >>> adv = fgsm(handle, x, eps=2 / 255)                            # doctest: +SKIP
    """
    return pgd(
        handle, images, eps, steps=1, step_size=eps, norm="linf", target=target, random_start=False
    )


# --------------------------------------------------------------------------------- analyses
def amplify(perturbation: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Make a perturbation visible: grey 0.5 is no change, black/white the largest change.

    Parameters
    ----------
    perturbation : torch.Tensor
        ``adv - clean``, ``(B, C, H, W)``.
    eps : float, optional
        Scale so that ``+-eps`` maps to white/black (the same scale for every image). By default
        each image is scaled by its own largest absolute change.

    Examples
    --------
    >>> d = torch.tensor([[[[-0.01, 0.0, 0.02]]]])
    >>> amplify(d).flatten().tolist()
    [0.25, 0.5, 1.0]
    """
    d = perturbation.detach().float()
    view = (-1,) + (1,) * (d.dim() - 1)
    if eps is not None and eps > 0:
        scale = torch.full((d.shape[0],), float(eps), device=d.device)
    else:
        scale = d.flatten(1).abs().amax(dim=1)
    return (0.5 + 0.5 * d / scale.clamp_min(1e-12).view(view)).clamp(0, 1)


@torch.no_grad()
def predict(handle: ModelHandle, pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, classes)`` (softmax of the logits) on the CPU."""
    x = _check_images(handle, pixels)
    return _logits(handle, x).softmax(dim=1).cpu()


def _top(handle: ModelHandle, probs: torch.Tensor, k: int) -> list[list[dict[str, Any]]]:
    k = min(int(k), probs.shape[1])
    p, idx = probs.topk(k, dim=1)
    return [
        [
            {"index": int(c), "name": handle.class_name(int(c)), "prob": float(v)}
            for v, c in zip(pr.tolist(), ix.tolist())
        ]
        for pr, ix in zip(p, idx)
    ]


def top_k(handle: ModelHandle, pixels: torch.Tensor, k: int = 5) -> list[list[dict[str, Any]]]:
    """Top-``k`` predictions per image: ``[[{"index", "name", "prob"}, ...], ...]``.

    Examples
    --------
    >>> top_k(handle, x)[0][0]                                 # doctest: +SKIP
    {'index': 282, 'name': 'tiger cat', 'prob': 0.39...}
    """
    return _top(handle, predict(handle, pixels), k)


@torch.no_grad()
def unit_changes(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    layer: str,
    k: int = 8,
) -> list[list[dict[str, Any]]]:
    """The ``k`` units of ``layer`` whose activations change most, per image.

    The change of a unit is the root-mean-square difference of its feature maps over the
    spatial positions (for a non-spatial layer, the absolute difference): a unit can change
    where it fires without changing its mean. Both images go through the network as one batch,
    and the pass stops at ``layer``.

    Returns
    -------
    list of list of dict
        Per image, ``k`` dicts sorted by ``change`` (descending): ``unit``, ``change`` (RMS
        difference), ``clean`` and ``adversarial`` (spatial mean activation), ``delta_mean``.

    Examples
    --------
    >>> unit_changes(handle, x, adv, "_blocks.8", k=3)[0][0]["unit"]  # doctest: +SKIP
    17
    """
    from .blocks.hooks import forward_to

    info = handle.layer(layer)
    c = _check_images(handle, clean)
    a = _check_images(handle, adversarial)
    if c.shape != a.shape:
        raise ValueError(f"clean {tuple(c.shape)} and adversarial {tuple(a.shape)} differ")
    b = c.shape[0]
    with capture(handle, [layer], stop_early=True) as acts:
        forward_to(handle, handle.normalize(torch.cat([c, a])), acts, needs_logits=False)
        feats = acts[layer].float()
    fc, fa = feats[:b], feats[b:]
    diff = (fa - fc).flatten(2) if fc.dim() > 2 else (fa - fc).unsqueeze(2)
    change = diff.pow(2).mean(dim=2).sqrt()
    mc = fc.flatten(2).mean(dim=2) if fc.dim() > 2 else fc
    ma = fa.flatten(2).mean(dim=2) if fa.dim() > 2 else fa
    k = max(1, min(int(k), info.channels))
    vals, idx = change.topk(k, dim=1)
    out = []
    for i in range(b):
        rows = []
        for v, u in zip(vals[i].tolist(), idx[i].tolist()):
            rows.append(
                {
                    "unit": int(u),
                    "change": float(v),
                    "clean": float(mc[i, u]),
                    "adversarial": float(ma[i, u]),
                    "delta_mean": float(ma[i, u] - mc[i, u]),
                }
            )
        out.append(rows)
    return out


def _as_map(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Any attribution output -> a non-negative map ``(B, 1, H, W)`` in [0, 1] for display:
    channels reduced by their largest magnitude, scaled per map by its 99.5th percentile."""
    from ..imaging import normalize_map, reduce_channels

    m = t.detach().float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4:
        raise ValueError(f"attribution map of unexpected shape {tuple(t.shape)}")
    if m.shape[1] > 1:
        m = reduce_channels(m, "abs_max")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return normalize_map(m, signed=False)


def attribution_maps(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    original: torch.Tensor | Sequence[int],
    new: torch.Tensor | Sequence[int],
    method: str = "grad_cam",
    layer: str | None = None,
) -> dict[str, Any]:
    """Attribution maps of both images for the original and the new class.

    Uses :mod:`cnnvis_widgets.core.attribution` (``saliency``, ``guided_backprop``,
    ``grad_cam``). All four maps of a batch are computed in one call per method: the images are
    stacked into one batch.

    Parameters
    ----------
    clean, adversarial : torch.Tensor
        Pixel-space batches.
    original, new : tensor or sequence of int
        One class per image.
    method : ``"saliency"``, ``"guided_backprop"`` or ``"grad_cam"``
    layer : str, optional
        Grad-CAM layer (default: ``attribution.default_cam_layer``, the last spatial layer).

    Returns
    -------
    dict
        ``"clean/original"``, ``"clean/new"``, ``"adversarial/original"``,
        ``"adversarial/new"``: maps ``(B, 1, H, W)`` in ``[0, 1]`` on the CPU; ``"method"``,
        ``"layer"``.

    Examples
    --------
    >>> maps = attribution_maps(handle, x, adv, [282], [611], "saliency")   # doctest: +SKIP
    >>> maps["adversarial/new"].shape                                       # doctest: +SKIP
    torch.Size([1, 1, 224, 224])
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(
            f"unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}"
        )
    c = _check_images(handle, clean)
    a = _check_images(handle, adversarial)
    b = c.shape[0]
    orig = torch.as_tensor(original, dtype=torch.long).flatten().to(handle.device)
    new_ = torch.as_tensor(new, dtype=torch.long).flatten().to(handle.device)
    if orig.numel() != b or new_.numel() != b:
        raise ValueError(f"give one original and one new class per image ({b})")
    for cls in orig.tolist() + new_.tolist():
        handle.check_class(cls)
    from . import attribution as A

    if method == "grad_cam":
        layer = layer or A.default_cam_layer(handle)
        handle.layer(layer)  # KeyError listing the nearest names
    # one batch: clean/original, clean/new, adversarial/original, adversarial/new
    pixels = torch.cat([c, c, a, a])
    targets = torch.cat([orig, new_, orig, new_])
    x = handle.normalize(pixels)
    if method == "saliency":
        raw = A.saliency(handle, x, targets)
    elif method == "guided_backprop":
        raw = A.guided_backprop(handle, x, targets)
    else:
        raw = A.grad_cam(handle, x, targets, layer)
    maps = _as_map(raw, (int(c.shape[-2]), int(c.shape[-1]))).cpu()
    keys = ["clean/original", "clean/new", "adversarial/original", "adversarial/new"]
    out: dict[str, Any] = {k: maps[i * b : (i + 1) * b] for i, k in enumerate(keys)}
    out.update(method=method, layer=layer if method == "grad_cam" else None)
    return out


@dataclass
class PairAnalysis:
    """What an attack changed, for a batch of clean/adversarial pairs (tensors on the CPU).

    Attributes
    ----------
    clean, adversarial : torch.Tensor
        Pixel-space batches ``(B, C, H, W)``.
    perturbation : torch.Tensor
        ``adversarial - clean``.
    amplified : torch.Tensor
        :func:`amplify` of the perturbation (scaled by eps when given), for display.
    clean_probs, adversarial_probs : torch.Tensor
        Softmax probabilities ``(B, classes)``.
    clean_top, adversarial_top : list
        :func:`top_k` of each.
    original_class, new_class : list of int
        Clean top-1; the target for a targeted attack, else the adversarial top-1 (its
        runner-up when the attack did not change the top-1).
    success : list of bool
        Targeted: the adversarial top-1 is the target; untargeted: it differs from the clean one.
    linf, l2 : list of float
        Size of each perturbation in pixel units.
    layer : str or None
        Layer of :attr:`units`.
    units : list
        :func:`unit_changes` per image (empty without a layer).
    attribution : dict
        :func:`attribution_maps` (empty when not asked for).
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    perturbation: torch.Tensor
    amplified: torch.Tensor
    clean_probs: torch.Tensor
    adversarial_probs: torch.Tensor
    clean_top: list
    adversarial_top: list
    original_class: list[int]
    new_class: list[int]
    success: list[bool]
    linf: list[float]
    l2: list[float]
    layer: str | None = None
    units: list = field(default_factory=list)
    attribution: dict = field(default_factory=dict)

    def prediction_rows(self, i: int = 0, k: int = 5) -> list[list[Any]]:
        """``[label, p_clean, p_adversarial]`` for the union of both top-``k`` (for a bar chart),
        sorted by the larger of the two probabilities."""
        classes = [d["index"] for d in self.clean_top[i][:k]]
        classes += [d["index"] for d in self.adversarial_top[i][:k] if d["index"] not in classes]
        pc, pa = self.clean_probs[i], self.adversarial_probs[i]
        classes.sort(key=lambda cl: -max(float(pc[cl]), float(pa[cl])))
        names = {d["index"]: d["name"] for d in self.clean_top[i] + self.adversarial_top[i]}
        return [[f"{names[cl]} ({cl})", float(pc[cl]), float(pa[cl])] for cl in classes]

    def summary(self, i: int = 0) -> dict[str, Any]:
        """JSON-able summary of pair ``i`` (no tensors)."""
        return {
            "original_class": self.original_class[i],
            "new_class": self.new_class[i],
            "success": self.success[i],
            "linf": self.linf[i],
            "l2": self.l2[i],
            "clean_top": self.clean_top[i],
            "adversarial_top": self.adversarial_top[i],
            "layer": self.layer,
            "units": self.units[i] if self.units else [],
            "attribution": {
                k: v for k, v in self.attribution.items() if not isinstance(v, torch.Tensor)
            },
        }


def analyze(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    eps: float | None = None,
    k: int = 5,
    layer: str | None = None,
    units: int = 8,
    attribution: str | None = "grad_cam",
    attribution_layer: str | None = None,
) -> PairAnalysis:
    """All analyses of clean/adversarial pairs: perturbation, top-k, changed units, maps.

    Parameters
    ----------
    clean, adversarial : torch.Tensor
        Pixel-space batches of the same shape.
    target : optional
        The attack's target class(es): then the "new class" is the target.
    eps : float, optional
        Scale of the amplified perturbation (default: each image's largest change).
    k : int
        Predictions kept before/after.
    layer : str, optional
        Layer whose most changed units are listed (``units`` of them); skipped when None.
    attribution : str or None
        ``"saliency"``, ``"guided_backprop"``, ``"grad_cam"`` or None (no maps).

    Examples
    --------
    >>> r = analyze(handle, x, adv, layer="_blocks.8", attribution="grad_cam")  # doctest: +SKIP
    >>> r.summary()["success"]                                                  # doctest: +SKIP
    True
    """
    c = _check_images(handle, clean)
    a = _check_images(handle, adversarial)
    if c.shape != a.shape:
        raise ValueError(f"clean {tuple(c.shape)} and adversarial {tuple(a.shape)} differ")
    b = c.shape[0]
    with torch.no_grad():
        probs = _logits(handle, torch.cat([c, a])).softmax(dim=1).cpu()
    pc, pa = probs[:b], probs[b:]
    orig = pc.argmax(dim=1)
    if target is not None:
        tgt, _ = _labels(handle, c, target)
        new = tgt.cpu()
        success = (pa.argmax(dim=1) == new).tolist()
    else:
        top2 = pa.topk(min(2, pa.shape[1]), dim=1).indices
        first = top2[:, 0]
        second = top2[:, -1]
        new = torch.where(first != orig, first, second)
        success = (first != orig).tolist()
    d = (a - c).cpu()
    result = PairAnalysis(
        clean=c.cpu(),
        adversarial=a.cpu(),
        perturbation=d,
        amplified=amplify(d, eps),
        clean_probs=pc,
        adversarial_probs=pa,
        clean_top=_top(handle, pc, k),
        adversarial_top=_top(handle, pa, k),
        original_class=[int(v) for v in orig],
        new_class=[int(v) for v in new],
        success=[bool(s) for s in success],
        linf=[float(v) for v in d.flatten(1).abs().amax(dim=1)],
        l2=[float(v) for v in d.double().flatten(1).norm(dim=1)],
        layer=layer,
    )
    if layer is not None:
        result.units = unit_changes(handle, c, a, layer, units)
    if attribution is not None:
        result.attribution = attribution_maps(
            handle, c, a, result.original_class, result.new_class, attribution, attribution_layer
        )
    return result
