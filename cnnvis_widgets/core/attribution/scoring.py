"""The target's score (and class probability) of many images, in memory-bounded batches.

The perturbation methods (occlusion, deletion/insertion curves) and the path methods (integrated
gradients, SmoothGrad) push many variants of one image through the network; they share
:func:`batch_size_for` (how many fit :data:`cnnvis_widgets.limits.MAX_BATCH_PIXELS`) and
:func:`scores` (forward only, no graph kept).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ... import limits
from ...models import ModelHandle
from ..blocks.hooks import capture, forward_to
from ..blocks.objectives import LOGITS, Objective, class_logit

__all__ = ["batch_size_for", "chunks", "scores", "per_image_targets", "flush_denormals"]


def batch_size_for(batch_size: int | None, height: int, width: int) -> int:
    """``batch_size`` checked against the limits, or the largest batch of 64 or fewer images of
    ``height`` x ``width`` that fits :data:`~cnnvis_widgets.limits.MAX_BATCH_PIXELS`."""
    if batch_size is None:
        batch_size = max(1, min(64, limits.MAX_BATCH_PIXELS // max(1, height * width)))
    return limits.check_batch(batch_size, height, width, name="batch_size")


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices ``0:size, size:2*size, ...`` covering ``range(n)``.

    >>> [(s.start, s.stop) for s in chunks(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
    """
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _flushing() -> bool:
    """Whether this thread reads and writes denormal floats as zero now."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)) == 0.0


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """On the CPU, denormal floats are read and written as zero inside the block (this thread's
    setting, restored on exit); elsewhere nothing changes.

    Integrated gradients' path points near the baseline make tiny activations and gradients,
    and arithmetic on denormal floats is many times slower on x86 CPUs: without this, the same
    forward+backward pass took up to 18% longer on the path than on the photo (a difference of
    below 1e-38 in any value).
    """
    if device.type != "cpu" or _flushing() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def per_image_targets(
    handle: ModelHandle, target: Any, batch: int
) -> list[tuple[Objective, int | None]]:
    """One ``(objective, class index or None)`` per image of a batch of ``batch``.

    ``target`` is what :func:`cnnvis_widgets.core.attribution.as_target` takes (a class index,
    one per image, an objective or ``"layer:unit"``); it is validated against the model. A class
    target becomes one class-logit objective per image (so each image's variants can be scored
    as a batch of their own); any other objective is used for every image.
    """
    from .gradients import as_target

    obj = as_target(handle, target, batch)
    if obj.classes and not obj.hidden_layers:
        cls = [int(c) for c in obj.classes]
        per = cls * batch if len(cls) == 1 else cls
        if len(per) == batch:
            return [(class_logit(c), c) for c in per]
    return [(obj, None)] * batch


def scores(
    handle: ModelHandle,
    x: torch.Tensor,
    obj: Objective,
    *,
    classes: torch.Tensor | None = None,
    batch_size: int | None = None,
    extra: Callable[[dict[str, Any]], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Score of ``obj`` for every image of the model-input batch ``x`` ``(N, C, H, W)``.

    ``obj`` must score any batch (one class or unit for all: see :func:`per_image_targets`);
    ``classes`` (one index per image of ``x``) also returns each softmax probability of it.
    ``extra(acts) -> (N,)`` replaces the objective (e.g. a feature map's total activation).
    Returns ``(scores (N,), probabilities (N,) or None)`` on the CPU, float32.
    """
    n = x.shape[0]
    bs = batch_size_for(batch_size, x.shape[-2], x.shape[-1])
    needs_logits = obj.needs_logits or classes is not None
    layers = list(obj.hidden_layers)
    out_s, out_p = [], []
    with torch.no_grad():
        for sl in chunks(n, bs):
            xb = x[sl].to(handle.device, torch.float32)
            with capture(handle, layers, stop_early=not needs_logits) as acts:
                logits = forward_to(handle, xb, acts, needs_logits=needs_logits)
            values: dict[str, Any] = dict(acts)
            if logits is not None:
                values[LOGITS] = logits
            out_s.append((extra(values) if extra is not None else obj(values)).float().cpu())
            if classes is not None:
                p = torch.softmax(logits.float(), dim=1)
                idx = classes[sl].to(p.device).view(-1, 1)
                out_p.append(p.gather(1, idx).flatten().cpu())
    return torch.cat(out_s), (torch.cat(out_p) if classes is not None else None)
