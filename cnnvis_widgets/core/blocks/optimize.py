"""The one optimization loop shared by activation maximization and inversion.

:func:`optimize_steps` is a generator: it yields a :class:`Step` after every update and never
prints or displays anything. Settings are read at every step (a slider moved mid-run takes effect
at the next step); a ``threading.Event`` stops it between steps.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .params import ImageParam

__all__ = ["Step", "optimize_steps", "LiveSettings", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to change."""


class LiveSettings(Protocol):
    """What the loop reads every step: the number of steps and the learning rate."""

    steps: int
    lr: float


@dataclass
class Step:
    """One optimization step.

    Attributes
    ----------
    index : int
        0-based step number.
    loss : float
        Loss after this step's forward pass (mean over the batch).
    image : torch.Tensor or None
        Pixel-space batch ``(B, C, H, W)`` that was evaluated at this step (a detached view on the
        device: ``.clone()`` it to keep it past the next step). None for steps without a picture
        (e.g. a pass over a dataset, which uses the same Step to report progress).
    metrics : dict
        Extra per-step numbers (e.g. ``"activation"``, ``"feature_error"``).
    total : int
        The number of steps the run is currently set to.
    """

    index: int
    loss: float | None
    image: torch.Tensor | None
    metrics: dict[str, Any] = field(default_factory=dict)
    total: int = 0


LossFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, dict[str, Any]]]
PostStep = Callable[[ImageParam, int, torch.Tensor], None]


def _normalized_sgd_step(param: ImageParam, lr: float) -> None:
    """Gradient descent with the gradient scaled to unit mean magnitude per image, so that ``lr``
    is the mean absolute change per step whatever the network's gradient scale."""
    with torch.no_grad():
        for t in param.parameters():
            if t.grad is None:
                continue
            g = t.grad
            dims = tuple(range(1, g.dim()))
            scale = g.abs().mean(dim=dims, keepdim=True).clamp_min(1e-12)
            t.sub_(lr * g / scale)


def optimize_steps(
    param: ImageParam,
    loss_fn: LossFn,
    settings: LiveSettings,
    *,
    optimizer: str = "adam",
    lr_schedule: Callable[[int, int, float], float] | None = None,
    post_step: PostStep | None = None,
    stop_event: threading.Event | None = None,
) -> Iterator[Step]:
    """Minimize ``loss_fn(param.image(), step)`` and yield a :class:`Step` after every update.

    Parameters
    ----------
    param : ImageParam
        What is optimized.
    loss_fn : callable
        ``(pixels, step) -> (scalar loss, metrics dict)``.
    settings : object with ``steps`` and ``lr``
        Read at every step.
    optimizer : ``"adam"`` or ``"sgd"``
        ``"sgd"`` is normalized gradient descent (see :func:`_normalized_sgd_step`).
    lr_schedule : callable, optional
        ``(step, total, base_lr) -> lr``.
    post_step : callable, optional
        ``(param, step, pixels)`` after the update, for pixel-space regularizers; ``pixels.grad``
        holds the gradient of the loss with respect to the image.
    stop_event : threading.Event, optional
        When set, the loop ends before the next step.
    """
    params = param.parameters()
    opt = None
    if optimizer == "adam":
        try:  # the fused kernel is about twice as fast (CPU and CUDA)
            opt = torch.optim.Adam(params, lr=float(settings.lr), fused=True)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(params, lr=float(settings.lr))
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}: use 'adam' or 'sgd'")
    i = 0
    while i < int(settings.steps):
        if stop_event is not None and stop_event.is_set():
            return
        total = int(settings.steps)
        lr = float(settings.lr)
        if lr_schedule is not None:
            lr = lr_schedule(i, total, lr)
        img = param.image()
        loss, metrics = loss_fn(img, i)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"the loss became {value} at step {i}; lower the learning rate ({lr:g}) or a "
                "regularizer weight, or check the model for NaN outputs"
            )
        # gradients of exactly what is optimized (and of the image, for post_step): nothing
        # accumulates anywhere else, whatever the network's parameters are
        *grads, img_grad = torch.autograd.grad(loss, [*params, img], allow_unused=True)
        for t, g in zip(params, grads):
            t.grad = g
        img = img.detach()
        img.grad = img_grad
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
        else:
            _normalized_sgd_step(param, lr)
        if post_step is not None:
            post_step(param, i, img)
        yield Step(i, value, img, metrics, total)
        i += 1
