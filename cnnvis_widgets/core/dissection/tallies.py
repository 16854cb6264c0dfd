"""Network Dissection's IoU tallies: integer sums per (unit, label), so they merge exactly across
processes (:meth:`IoUTally.all_reduce`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...data.concepts import Concept, ProbeBatch
from ..blocks.streaming import _all_reduce


def _category_of_labels(labels: Sequence[Concept], categories: Sequence[str]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(categories)}
    return torch.tensor([index.get(c.category, -1) for c in labels], dtype=torch.int64)


def label_counts(batch: ProbeBatch, n_labels: int, mask_size: int) -> torch.Tensor:
    """Pixels (at mask resolution) of every label in ``batch`` (image-level labels count the
    whole image); label 0 is left at 0."""
    dev = batch.images.device
    out = torch.zeros(n_labels, dtype=torch.int64, device=dev)
    if batch.masks is not None and batch.masks.numel():
        out += torch.bincount(batch.masks.reshape(-1).clamp(0, n_labels - 1), minlength=n_labels)
    if batch.scalars is not None:
        out += batch.scalars.to(torch.int64).sum(0) * (mask_size * mask_size)
    out[0] = 0
    return out


class IoUTally:
    """Integer tallies of one layer: activated area per (unit, category), intersection per
    (unit, label). The concept areas are shared by all layers (:func:`label_counts`).

    Parameters
    ----------
    units, n_labels, n_categories : int
    mask_size : int
        Side of the probe masks; activation maps are upsampled to it.
    device : torch.device
    """

    #: upsampled activations processed at once (bounds memory for wide layers / big batches)
    CHUNK_ELEMENTS = 4_000_000

    def __init__(
        self,
        units: int,
        n_labels: int,
        n_categories: int,
        mask_size: int,
        device: torch.device | str | None = None,
    ) -> None:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.units, self.n_labels, self.mask_size = units, n_labels, mask_size
        self.both = torch.zeros(units, n_labels, dtype=torch.int64, device=dev)
        self.units_cat = torch.zeros(units, n_categories, dtype=torch.int64, device=dev)
        self.activated = torch.zeros(units, dtype=torch.int64, device=dev)

    def update(
        self, acts: torch.Tensor, thresholds: torch.Tensor, batch: ProbeBatch
    ) -> torch.Tensor:
        """Tally one batch: ``acts`` ``(B, units, h, w)``, ``thresholds`` ``(units,)``; returns
        the activated area (mask pixels above threshold) per image and unit, ``(B, units)``."""
        b, u = acts.shape[0], acts.shape[1]
        m = self.mask_size
        p = m * m
        thr = thresholds.to(device=acts.device, dtype=torch.float32)
        present = batch.present.to(torch.float64)
        masks = None
        if batch.masks is not None:
            masks = batch.masks.reshape(b, batch.masks.shape[1], p).permute(0, 2, 1)  # (b, p, K)
        chunk = max(1, self.CHUNK_ELEMENTS // max(1, b * p))
        area = torch.zeros(b, u, dtype=torch.int64, device=acts.device)
        for u0 in range(0, u, chunk):
            u1 = min(u, u0 + chunk)
            a = acts[:, u0:u1].float()
            if a.shape[-2:] != (m, m):
                a = F.interpolate(a, size=(m, m), mode="bilinear", align_corners=False)
            active = a > thr[u0:u1].view(1, -1, 1, 1)
            n_act = active.sum(dim=(2, 3))  # (b, uc)
            area[:, u0:u1] = n_act
            self.activated[u0:u1] += n_act.sum(0)
            na = n_act.to(torch.float64).t()
            self.units_cat[u0:u1] += (na @ present).round().to(torch.int64)
            if batch.scalars is not None:
                self.both[u0:u1] += (na @ batch.scalars.to(torch.float64)).round().to(torch.int64)
            if masks is None:
                continue
            bi, ui, pi = active.view(b, u1 - u0, p).nonzero(as_tuple=True)
            if bi.numel() == 0:
                continue
            labels = masks[bi, pi]  # (nnz, K)
            flat = (ui + u0).view(-1, 1) * self.n_labels + labels
            flat = flat[labels > 0]
            self.both.view(-1).index_add_(
                0, flat, torch.ones_like(flat, dtype=torch.int64), alpha=1
            )
        return area

    def iou(self, label_area: torch.Tensor, label_category: torch.Tensor) -> torch.Tensor:
        """``(units, n_labels)`` float64 IoU with the category-restricted denominator."""
        cat = label_category.to(self.units_cat.device)
        denom_units = self.units_cat[:, cat.clamp_min(0)]  # (units, L)
        inter = self.both.to(torch.float64)
        union = denom_units.to(torch.float64) + label_area.to(inter.device).double() - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
        iou[:, cat < 0] = 0.0
        iou[:, 0] = 0.0
        return iou

    def all_reduce(self, group: Any = None) -> None:
        """Sum the tallies of every process of ``group``."""
        for t in (self.both, self.units_cat, self.activated):
            _all_reduce(t, "sum", group)
