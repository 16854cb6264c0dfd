"""Deletion and insertion curves (Petsiuk et al. 2018, *RISE*): do the pixels a map highlights
matter to the model?

Deletion removes the pixels in the order of the map (most important first), replacing them with
a substrate (the model's mean colour), and records the target class's probability at every
step: a faithful map makes it fall fast (small area under the curve). Insertion starts from a
blurred copy and reveals the image's pixels in the same order: a faithful map makes the
probability rise fast (large area). Two orders beside every map tell what "fast" means for this
image: a random order (seeded) and the centre-first order (objects are usually in the middle).
The modified copies of an image go through the network as batches.

Examples
--------
>>> maps = {"saliency": saliency(handle, x, 281)}               # doctest: +SKIP
>>> curves = finish(faithfulness_steps(handle, x, 281, maps))    # doctest: +SKIP
>>> curves.auc("deletion")                                        # doctest: +SKIP
{'saliency': ..., 'random': ..., 'centre': ...}
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ... import limits
from ...models import ModelHandle
from ..blocks.optimize import Step
from ..blocks.regularizers import gaussian_blur
from .gradients import _as_input
from .scoring import batch_size_for, chunks, per_image_targets, scores

__all__ = ["Curves", "faithfulness_steps", "faithfulness", "pixel_order", "auc", "BASELINE_ORDERS"]

BASELINE_ORDERS = ("random", "centre")
KINDS = ("deletion", "insertion")


def auc(values: torch.Tensor) -> float:
    """Area under a curve sampled at evenly spaced fractions of ``[0, 1]`` (trapezoid rule).

    >>> auc(torch.tensor([1.0, 0.0]))
    0.5
    """
    v = values.float().flatten()
    if v.numel() < 2:
        return float(v.sum())
    return float(((v[1:] + v[:-1]) / 2).mean())


def pixel_order(saliency: torch.Tensor) -> torch.Tensor:
    """Flat pixel indices, most important first, of a map ``(C, H, W)`` or ``(H, W)``: the
    map's absolute value summed over channels (ties keep reading order)."""
    m = saliency.detach().float()
    m = m.abs().sum(0) if m.dim() == 3 else m.abs()
    return torch.sort(m.flatten(), descending=True, stable=True).indices.cpu()


def _baseline_order(kind: str, h: int, w: int, seed: int) -> torch.Tensor:
    if kind == "random":
        return torch.randperm(h * w, generator=torch.Generator().manual_seed(int(seed)))
    if kind == "centre":
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        d = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
        return torch.sort(d.flatten(), stable=True).indices
    raise ValueError(f"unknown order {kind!r}: use one of {', '.join(BASELINE_ORDERS)}")


@dataclass
class Curves:
    """Deletion and insertion curves of one image.

    ``curves[kind][name]`` is the class probability after each step (``steps + 1`` values, from
    nothing removed/revealed to everything); ``fractions`` the share of pixels changed.
    """

    fractions: torch.Tensor
    curves: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    target: int = 0

    def auc(self, kind: str) -> dict[str, float]:
        """Area under each curve of ``kind`` (``"deletion"``: lower is better; ``"insertion"``:
        higher is better)."""
        return {name: auc(v) for name, v in self.curves.get(kind, {}).items()}

    def table(self) -> list[dict[str, Any]]:
        """Rows ``{"order", "deletion", "insertion"}`` (AUCs), maps first, then the baselines."""
        names = list(dict.fromkeys(n for k in KINDS for n in self.curves.get(k, {})))
        return [
            {
                "order": n,
                **{k: auc(self.curves[k][n]) for k in KINDS if n in self.curves.get(k, {})},
            }
            for n in names
        ]


def faithfulness_steps(
    handle: ModelHandle,
    image: torch.Tensor,
    target: Any,
    maps: Mapping[str, torch.Tensor],
    *,
    steps: int = 100,
    kinds: tuple[str, ...] = KINDS,
    baselines: tuple[str, ...] = BASELINE_ORDERS,
    blur_sigma: float = 5.0,
    seed: int = 0,
    batch_size: int | None = None,
) -> Generator[Step, None, Curves]:
    """Deletion/insertion curves of the maps of ONE image, as a generator.

    Parameters
    ----------
    handle : ModelHandle
        The network.
    image : torch.Tensor
        One model-input image ``(1, C, H, W)`` or ``(C, H, W)``.
    target : int
        The class whose probability is recorded.
    maps : mapping of name -> tensor
        Attribution maps of the image at its size (``(C, H, W)``, ``(1, C, H, W)`` or
        ``(H, W)``), e.g. ``{"saliency": ..., "grad_cam": ...}``.
    steps : int
        Points along each curve (pixels change ``H * W / steps`` at a time).
    kinds, baselines
        Which curves, and which reference orders beside the maps.
    blur_sigma : float
        The insertion substrate's blur (RISE: a Gaussian of sigma 5).

    Yields a :class:`Step` after each batch (``metrics``: ``kind``, ``order``, ``done``, and the
    batch's probabilities ``values`` from point ``start`` on, so a view can draw the curve as it
    grows); returns the :class:`Curves`.
    """
    x = _as_input(handle, image)
    if x.shape[0] != 1:
        raise ValueError(f"faithfulness curves take one image, got a batch of {x.shape[0]}")
    ((obj, cls),) = per_image_targets(handle, target, 1)
    if cls is None:
        raise TypeError("faithfulness curves need a class target (an int), not a hidden unit")
    n = limits.check_int(steps, "steps", minimum=1, limit="MAX_STEPS")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown curve {k!r}: use one of {', '.join(KINDS)}")
    _, c, h, w = x.shape
    orders: dict[str, torch.Tensor] = {}
    for name, m in maps.items():
        m = m.detach()
        m = m[0] if m.dim() == 4 else m
        if tuple(m.shape[-2:]) != (h, w):
            raise ValueError(f"map {name!r} is {tuple(m.shape[-2:])}, the image is {(h, w)}")
        orders[name] = pixel_order(m)
    for b in baselines:
        orders[b] = _baseline_order(b, h, w, seed)
    # the insertion's blurred copy only when insertion is asked for
    substrate = {k: torch.zeros_like(x) if k == "deletion" else gaussian_blur(x, blur_sigma)
                 for k in kinds}  # fmt: skip
    counts = torch.linspace(0, h * w, n + 1).round().long()
    bs = batch_size_for(batch_size, h, w)
    result = Curves(fractions=counts.float() / (h * w), target=int(cls))
    total = len(kinds) * len(orders) * ((n + 1 + bs - 1) // bs)
    done = 0
    for kind in kinds:
        start, end = (
            (x, substrate["deletion"]) if kind == "deletion" else (substrate["insertion"], x)
        )
        result.curves[kind] = {}
        for name, order in orders.items():
            # rank[p]: when pixel p changes; a copy at step j has pixels of rank < counts[j] changed
            rank = torch.empty(h * w, dtype=torch.long)
            rank[order] = torch.arange(h * w)
            rank = rank.view(1, 1, h, w).to(x.device)
            values = []
            for sl in chunks(n + 1, bs):
                changed = rank < counts[sl].to(x.device).view(-1, 1, 1, 1)
                xs = torch.where(changed, end, start)
                _, p = scores(handle, xs, obj, classes=torch.full((xs.shape[0],), int(cls)),
                              batch_size=bs)  # fmt: skip
                assert p is not None
                values.append(p)
                done += 1
                metrics = {"kind": kind, "order": name, "done": done, "start": sl.start,
                           "values": p}  # fmt: skip
                yield Step(done - 1, None, None, metrics, total)
            result.curves[kind][name] = torch.cat(values)
    return result


def faithfulness(handle: ModelHandle, image: torch.Tensor, target: Any,
                 maps: Mapping[str, torch.Tensor], **kwargs: Any) -> Curves:  # fmt: skip
    """:func:`faithfulness_steps` run to its end."""
    from ..blocks.runs import finish

    return finish(faithfulness_steps(handle, image, target, maps, **kwargs))
