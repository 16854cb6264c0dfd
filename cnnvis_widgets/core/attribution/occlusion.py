"""Occlusion sensitivity (Zeiler & Fergus 2014, section 4.2 and Fig. 7).

A grey square slides over the image; at every position the network sees the occluded copy and the
target's score (a class logit or a hidden unit) and class probability are recorded. The map at a
pixel is the mean drop ``score(image) - score(occluded)`` over the positions whose square covers
the pixel (Captum's ``Occlusion`` with a window spanning every channel, so the maps agree), and
the probability map is the same for the softmax probability of the class. The occluded copies
go through the network as batches (bounded by :data:`~cnnvis_widgets.limits.MAX_BATCH_PIXELS`),
never one at a time.

"Grey" is the model's mean colour: 0 in model-input space (``handle.preprocess`` subtracts the
mean). :func:`feature_occlusion` is the variant of the paper's Fig. 7 (b, c): the total
activation of the layer's strongest feature map under occlusion.

Examples
--------
>>> m = occlusion(handle, x, 281, patch=32, stride=8)          # doctest: +SKIP
>>> m.score.shape, m.probability.shape                           # doctest: +SKIP
(torch.Size([1, 1, 224, 224]), torch.Size([1, 1, 224, 224]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ... import limits
from ...models import ModelHandle
from ..blocks.objectives import Objective, channel
from .gradients import _as_input
from .scoring import batch_size_for, chunks, per_image_targets, scores

__all__ = ["OcclusionMaps", "occlusion", "feature_occlusion", "positions"]


@dataclass
class OcclusionMaps:
    """Occlusion maps of a batch, at the input's size, on the CPU.

    Attributes
    ----------
    score : torch.Tensor
        ``(B, 1, H, W)``: mean drop of the target's score (logit or unit) where the patch covered
        the pixel; positive where hiding the pixel lowers the score.
    probability : torch.Tensor or None
        ``(B, 1, H, W)``: the same for the class probability (class targets only).
    occluded_probability : torch.Tensor or None
        ``(B, 1, H, W)``: the mean probability of the class while the pixel is hidden (Zeiler &
        Fergus's Fig. 7 d: dark where the object is).
    base_score, base_probability : torch.Tensor
        ``(B,)``: the unoccluded image's score and probability (NaN for non-class targets).
    passes : int
        Forward passes of single images the maps took (positions x images + the unoccluded).
    """

    score: torch.Tensor
    probability: torch.Tensor | None
    occluded_probability: torch.Tensor | None
    base_score: torch.Tensor
    base_probability: torch.Tensor
    passes: int


def positions(size: int, patch: int, stride: int) -> list[int]:
    """Top-left corners along one side: every ``stride`` pixels, and one flush with the far
    edge so every pixel is covered.

    >>> positions(10, 4, 3)
    [0, 3, 6]
    >>> positions(10, 4, 4)
    [0, 4, 6]
    """
    last = max(0, size - patch)
    out = list(range(0, last + 1, stride))
    if out[-1] != last:
        out.append(last)
    return out


def _check(patch: Any, stride: Any, h: int, w: int) -> tuple[int, int]:
    p = limits.check_int(patch, "patch", minimum=1)
    s = limits.check_int(stride, "stride", minimum=1)
    if p > min(h, w):
        raise ValueError(
            f"patch={p} is larger than the image ({h} x {w}); use patch <= {min(h, w)}"
        )
    if s > p:
        raise ValueError(
            f"stride={s} is larger than patch={p}: some pixels would never be hidden; use "
            f"stride <= {p}"
        )
    return p, s


def _windows(size: int, patch: int, stride: int) -> torch.Tensor:
    """``(n, size)`` float64: row ``i`` is 1 over the ``i``-th window along one side."""
    starts = torch.tensor(positions(size, patch, stride)).view(-1, 1)
    idx = torch.arange(size).view(1, -1)
    return ((idx >= starts) & (idx < starts + patch)).double()


def _occlude_one(
    handle: ModelHandle,
    x: torch.Tensor,
    obj: Objective,
    cls: int | None,
    patch: int,
    stride: int,
    value: float,
    batch_size: int | None,
    extra: Callable[[dict[str, Any]], torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, float, float, int]:
    """Maps of one image ``x (1, C, H, W)``.

    The windows are separable: window ``(i, j)`` covers rows ``R[i]`` and columns ``Q[j]``, so
    a map summing a value per window over the pixels it covers is ``R.T @ V @ Q`` (``V`` the
    values on the grid of corners), in float64, and every occluded copy of a batch is made in
    one ``torch.where``.
    """
    _, c, h, w = x.shape
    rows, cols = _windows(h, patch, stride), _windows(w, patch, stride)
    nr, nq = rows.shape[0], cols.shape[0]
    classes = None if cls is None else torch.tensor([cls])
    s0, p0 = scores(handle, x, obj, classes=classes, batch_size=1, extra=extra)
    bs = batch_size_for(batch_size, h, w)
    rows_d, cols_d = rows.bool().to(x.device), cols.bool().to(x.device)
    fill = torch.tensor(value, dtype=x.dtype, device=x.device)
    all_s, all_p = [], []
    for sl in chunks(nr * nq, bs):
        k = torch.arange(sl.start, sl.stop, device=x.device)
        hidden = rows_d[k // nq].unsqueeze(2) & cols_d[k % nq].unsqueeze(1)  # (n, H, W)
        xs = torch.where(hidden.unsqueeze(1), fill, x)
        cb = None if cls is None else torch.full((len(k),), cls, dtype=torch.long)
        s, p = scores(handle, xs, obj, classes=cb, batch_size=bs, extra=extra)
        all_s.append(s)
        if p is not None:
            all_p.append(p)

    def spread(v: torch.Tensor) -> torch.Tensor:  # per-window values -> (H, W) sums
        return (rows.T @ v.double().view(nr, nq) @ cols).float()

    count = (rows.T @ torch.ones(nr, nq, dtype=torch.float64) @ cols).clamp_min(1)
    s = torch.cat(all_s)
    drop = spread(s0[0].double() - s.double()) / count.float()
    pdrop = pocc = None
    if cls is not None and p0 is not None:
        p = torch.cat(all_p)
        pdrop = spread(p0[0].double() - p.double()) / count.float()
        pocc = spread(p) / count.float()
    base_p = float(p0[0]) if p0 is not None else float("nan")
    return drop, pdrop, pocc, float(s0[0]), base_p, nr * nq + 1


def _run(
    handle: ModelHandle,
    images: torch.Tensor,
    targets: list[tuple[Objective, int | None]],
    patch: Any,
    stride: Any,
    value: float,
    batch_size: int | None,
    extra: Callable[[dict[str, Any]], torch.Tensor] | None = None,
) -> OcclusionMaps:
    x = _as_input(handle, images)
    p, s = _check(patch, stride, x.shape[-2], x.shape[-1])
    rows = [
        _occlude_one(handle, x[i : i + 1], obj, cls, p, s, float(value), batch_size, extra)
        for i, (obj, cls) in enumerate(targets)
    ]
    with_p = all(r[1] is not None for r in rows)
    return OcclusionMaps(
        score=torch.stack([r[0] for r in rows]).unsqueeze(1),
        probability=torch.stack([r[1] for r in rows]).unsqueeze(1) if with_p else None,  # type: ignore[misc]
        occluded_probability=(
            torch.stack([r[2] for r in rows]).unsqueeze(1) if with_p else None  # type: ignore[misc]
        ),
        base_score=torch.tensor([r[3] for r in rows]),
        base_probability=torch.tensor([r[4] for r in rows]),
        passes=sum(r[5] for r in rows),
    )


def occlusion(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    *,
    patch: int = 32,
    stride: int = 8,
    value: float = 0.0,
    batch_size: int | None = None,
) -> OcclusionMaps:
    """Occlusion sensitivity maps of a model-input batch.

    Parameters
    ----------
    handle, images, target
        As for :func:`cnnvis_widgets.core.attribution.saliency`: the network, a model-input batch
        ``(B, C, H, W)``, and a class index (for all or per image) or a hidden-unit objective.
    patch, stride : int
        Side of the grey square and its step, in input pixels (Zeiler & Fergus: a 50 px grey
        square moved over a 224 px image).
    value : float
        The square's value in model-input space (0: the model's mean colour).
    batch_size : int, optional
        Occluded copies per forward pass (default: as many as the limits allow, at most 64).

    Returns
    -------
    OcclusionMaps
    """
    x = _as_input(handle, images)
    return _run(
        handle, x, per_image_targets(handle, target, x.shape[0]), patch, stride, value, batch_size
    )


def feature_occlusion(
    handle: ModelHandle,
    images: torch.Tensor,
    layer: str,
    unit: int | None = None,
    *,
    patch: int = 32,
    stride: int = 8,
    value: float = 0.0,
    batch_size: int | None = None,
) -> tuple[OcclusionMaps, list[int]]:
    """Fig. 7 (b) of Zeiler & Fergus: the total activation of one feature map of ``layer``
    under occlusion. ``unit=None`` takes each image's strongest feature map (largest total
    activation on the unoccluded image). Returns the maps (``score``: drop of the total
    activation) and the unit of each image."""
    x = _as_input(handle, images)
    info = handle.layer(layer)  # KeyError listing the nearest names
    if unit is None:
        obj0 = channel(layer, 0)
        totals = []
        for i in range(x.shape[0]):
            s, _ = scores(
                handle, x[i : i + 1], obj0, batch_size=1,
                extra=lambda acts: acts[layer].flatten(2).sum(2),
            )  # fmt: skip
            totals.append(int(s.view(-1).argmax()))
        units = totals
    else:
        handle.check_unit(layer, int(unit))
        units = [int(unit)] * x.shape[0]
    del info
    maps = []
    for i, u in enumerate(units):

        def total(acts: dict[str, Any], u: int = u) -> torch.Tensor:
            return acts[layer][:, u].flatten(1).sum(1)

        maps.append(
            _run(handle, x[i : i + 1], [(channel(layer, u), None)], patch, stride, value,
                 batch_size, extra=total)
        )  # fmt: skip
    return (
        OcclusionMaps(
            score=torch.cat([m.score for m in maps]),
            probability=None,
            occluded_probability=None,
            base_score=torch.cat([m.base_score for m in maps]),
            base_probability=torch.full((len(maps),), float("nan")),
            passes=sum(m.passes for m in maps),
        ),
        units,
    )
