"""The one optimization loop shared by activation maximization and inversion.

:func:`optimize_steps` is a generator: it yields a :class:`Step` after every update and never
prints or displays anything. Settings are read at every step (a slider moved mid-run takes effect
at the next step); a ``threading.Event`` stops it between steps.

The loop never waits for the device: the loss stays there (a :class:`~.readback.LossLog`) and is
read back, with its NaN check, every ``read_every`` steps or as soon as a consumer reads a
``Step.loss``. On CUDA the steps queue without a host-device sync each.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

import torch

from .params import ImageParam
from .readback import LazyLoss, LossLog

__all__ = [
    "Step",
    "optimize_steps",
    "LiveSettings",
    "NonFiniteLossError",
    "read_losses",
    "compile_setting",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to change."""


class LiveSettings(Protocol):
    """What the loop reads every step: the number of steps and the learning rate."""

    steps: int
    lr: float


LossValue = float | LazyLoss | torch.Tensor | None


class _LossField:
    """``Step.loss``: stored as given (a float, None, or a loss still on the device), read as a
    float. A loss on the device is read back when first asked for (with the other pending losses
    of its run, in one transfer)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    @overload
    def __get__(self, obj: None, owner: type) -> _LossField: ...
    @overload
    def __get__(self, obj: Step, owner: type) -> float | None: ...
    def __get__(self, obj: Step | None, owner: type) -> float | None | _LossField:
        if obj is None:
            raise AttributeError("no default")  # dataclasses: the field has no default
        raw = obj.__dict__[self.slot]
        if isinstance(raw, torch.Tensor):
            raw = LossLog(1).add(raw)
        if isinstance(raw, LazyLoss):
            raw = raw.value()
            obj.__dict__[self.slot] = raw
        return raw

    def __set__(self, obj: Step, value: LossValue) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class Step:
    """One optimization step.

    Attributes
    ----------
    index : int
        0-based step number.
    loss : float or None
        Loss after this step's forward pass (mean over the batch). May be given as a
        :class:`~.readback.LazyLoss` or a scalar tensor: it is then read from the device when
        first read (:attr:`loss_ref` passes it on unread).
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
    loss: _LossField = _LossField()
    image: torch.Tensor | None  # type: ignore[misc]  # loss has no default (see _LossField)
    metrics: dict[str, Any] = field(default_factory=dict)
    total: int = 0

    @property
    def loss_ref(self) -> LossValue:
        """The loss as stored, without reading it from the device (give it to another
        :class:`Step`, or to :func:`read_losses` with others, to keep the run free of syncs)."""
        return self.__dict__["_loss"]  # type: ignore[no-any-return]


def read_losses(refs: list[LossValue]) -> list[float | None]:
    """The floats of several :attr:`Step.loss_ref` values (one read per run, not per step)."""
    out: list[float | None] = []
    for r in refs:
        if isinstance(r, torch.Tensor):
            r = float(r)
        out.append(r.value() if isinstance(r, LazyLoss) else r)
    return out


def compile_setting(value: bool | str | None = None) -> str | None:
    """The ``torch.compile`` mode of the loop's loss function, or None for eager (the default).

    ``value``: True (mode ``"default"``), a mode name (``"reduce-overhead"`` also captures CUDA
    graphs), False; None reads ``$CNNVIS_COMPILE`` (``1``/``default``/a mode; unset or ``0``:
    eager). Off by default everywhere: it was not measured faster here (no GPU), and the eager
    path is the reference.
    """
    if value is None:
        env = os.environ.get("CNNVIS_COMPILE", "").strip().lower()
        value = False if env in ("", "0", "false", "no", "off") else env
    if value is False:
        return None
    if value is True or value in ("1", "true", "yes", "on"):
        return "default"
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if value not in modes:
        raise ValueError(f"unknown compile mode {value!r}: use one of {', '.join(modes)}")
    return str(value)


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
    losses: LossLog | None = None,
    compile: bool | str | None = None,
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
    losses : LossLog, optional
        Where the losses are kept (``losses.floats()`` after the run: every step's loss, read in
        one go); its ``every`` is the number of steps between two reads (default
        :func:`~.readback.read_every`: 16, ``$CNNVIS_READ_EVERY``).
    compile : bool or str, optional
        Run ``loss_fn`` through ``torch.compile`` (see :func:`compile_setting`; default off).

    Raises
    ------
    NonFiniteLossError
        The loss became NaN or infinite. The losses are read every ``losses.every`` steps (or
        when a ``Step.loss`` is read), so the error comes at most that many steps after the step
        it names; the steps yielded in between carry the non-finite loss.
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
    log = LossLog() if losses is None else losses
    mode = compile_setting(compile)
    fn: LossFn = loss_fn if mode is None else torch.compile(loss_fn, mode=mode, dynamic=False)
    first = len(log)  # a log shared by several runs: this run's first position
    lrs: dict[int, float] = {}  # the learning rate of the steps not yet checked

    def check() -> None:
        if log.first_bad is not None and log.first_bad >= first:
            at = log.first_bad - first
            raise NonFiniteLossError(
                f"the loss became {log.values[log.first_bad]} at step {at}; lower the learning "
                f"rate ({lrs.get(at, lr):g}) or a regularizer weight, or check the model for NaN "
                "outputs"
            )
        lrs.clear()

    i = 0
    lr = float(settings.lr)
    while i < int(settings.steps):
        if log.pending == 0:  # read (every `every` steps, or by a consumer): check it
            check()
        if stop_event is not None and stop_event.is_set():
            return
        total = int(settings.steps)
        lr = float(settings.lr)
        if lr_schedule is not None:
            lr = lr_schedule(i, total, lr)
        lrs[i] = lr
        img = param.image()
        loss, metrics = fn(img, i)
        value = log.add(loss)
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
        if log.due():
            log.read()
            check()
        yield Step(i, value, img, metrics, total)
        i += 1
    log.read()  # a run never ends on an unchecked loss
    check()
