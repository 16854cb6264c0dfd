"""The attacks: FGSM and PGD (L-infinity or L2, random start, targeted or not).

Goodfellow et al. 2015, *Explaining and harnessing adversarial examples*; Madry et al. 2018,
*Towards deep learning models resistant to adversarial attacks*.

* :func:`fgsm` -- one signed-gradient step of size ``eps``;
* :func:`pgd` -- projected gradient ascent, L-infinity or L2, random start, targeted or not;
* :func:`pgd_steps` -- the same as a generator of :class:`~cnnvis_widgets.core.optimize.Step`
  that returns the adversarial batch (what the widget drives; a ``threading.Event`` stops it
  between steps).

Untargeted attacks push the cross-entropy of the clean image's own top-1 class up; targeted ones
push the cross-entropy of the target class down. When the cross-entropy's gradient of an image is
exactly zero (a saturated softmax), that image's step uses the logit margin instead, whose
gradient does not vanish, so the attack never stalls on a zero gradient.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ... import limits
from ...models.handle import ModelHandle
from ..blocks.optimize import NonFiniteLossError, Step
from ..blocks.runs import finish
from .inputs import _check_eps, _check_images, _check_norm, _labels, _logits
from .projection import _l2_project, _random_start, linf_bounds


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
) -> Generator[Step, None, torch.Tensor | None]:
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

    Returns
    -------
    torch.Tensor or None
        The adversarial batch after the last update (a copy, on the handle's device), or None
        when ``stop_event`` ended the attack early (``result = yield from pgd_steps(...)``).

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
                return None
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
    return adv.detach().clone()


def pgd(
    handle: ModelHandle, images: torch.Tensor, eps: float, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """Projected gradient descent attack (Madry et al. 2018), L-infinity or L2.

    ``pgd(handle, images, eps, steps=10, step_size=None, norm="linf", target=None,
    random_start=True, seed=0)``: the parameters of :func:`pgd_steps`, run to the end. Takes and
    returns pixel-space batches in ``[0, 1]``; ``eps`` is in pixel units. The result is on the
    device of ``images``.

    Examples
    --------
    >>> adv = pgd(handle, x, eps=4 / 255, steps=10)                   # doctest: +SKIP
    >>> bool((adv - x).abs().max() <= 4 / 255)                        # doctest: +SKIP
    True
    >>> adv = pgd(handle, x, eps=1.0, norm="l2", target=281)          # doctest: +SKIP
    """
    adv = finish(pgd_steps(handle, images, eps, *args, **kwargs))
    assert adv is not None  # no stop event: the attack runs every step
    return adv.to(images.device)


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
