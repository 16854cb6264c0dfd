"""Network Dissection (Bau et al. 2017): label every conv unit with the concept its top activations
overlap, count interpretable units per layer, compare models.

The algorithm, for each unit ``k`` of each dissected layer:

1. **Threshold.** ``T_k`` is the top ``quantile`` (0.005) value of the unit's activations over all
   positions of all probe images. One streaming pass computes it with a per-unit histogram on a
   power-of-two grid (:class:`StreamingQuantile`): no activation is kept, and the estimate is
   within one bin width (about ``range / bins``, reported per unit) of the exact order statistic.
   ``refine=True`` adds a second pass that histograms only the bin holding the quantile, shrinking
   the bound ``bins`` times.
2. **IoU.** Each activation map is upsampled bilinearly to the mask size and thresholded
   (``a > T_k``); intersections and unions with every concept are tallied over the probe set,
   counting the unit's activated area only on images annotated for the concept's category (the
   category-restricted denominator of NetDissect)::

       IoU(k, c) = sum |M_k & L_c| / (sum_{images with cat(c)} |M_k| + sum |L_c| - sum |M_k & L_c|)

3. **Label.** A unit's label is its best concept; it is *interpretable* when that IoU is at least
   ``iou_threshold`` (0.04). Unique detectors per category count distinct concepts (texture scales
   merged) among the interpretable units of a layer.

Everything is batch first and streamed: per stage one forward pass per probe batch (stopped after
the deepest dissected layer), tallies are integer sums, so they merge exactly across processes:
with ``torch.distributed`` initialised (gloo on CPU, nccl on GPU) each rank takes a slice of the
probe set and the tallies are all-reduced; every rank gets the same result as one process would.

Examples
--------
>>> from cnnvis_widgets import load_model                          # doctest: +SKIP
>>> from cnnvis_widgets.data.concepts import probe_set              # doctest: +SKIP
>>> h = load_model()                                               # doctest: +SKIP
>>> result = dissect(h, ["_blocks.4", "_blocks.8"], probe_set(256))  # doctest: +SKIP
>>> result.summary()[0]["interpretable"]                           # doctest: +SKIP
>>> result.units("_blocks.4")[:3]                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import limits
from ..data.concepts import Concept, Probe, ProbeBatch
from ..models.handle import ModelHandle
from .hooks import StopForward
from .optimize import Step

__all__ = [
    "StreamingQuantile",
    "IoUTally",
    "Dissector",
    "Dissection",
    "LayerDissection",
    "DissectionComparison",
    "dissect",
    "dissect_steps",
    "compare_dissections",
    "unit_examples",
    "UnitExamples",
    "render_examples",
    "NonFiniteActivationError",
]

SAVE_VERSION = 1


class NonFiniteActivationError(FloatingPointError):
    """A dissected layer produced NaN or infinite activations; the message says where."""


# ==========================================================================================
# streaming quantile


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """``2.0 ** e`` exactly, float64 (``e`` int64)."""
    return torch.ldexp(torch.ones_like(e, dtype=torch.float64), e)


class StreamingQuantile:
    """Per-unit streaming quantiles from fixed-size histograms on a power-of-two grid.

    Every unit keeps ``bins`` integer counts of width ``2**e`` starting at ``offset * 2**e``,
    where ``e`` is the smallest exponent whose grid spans the unit's whole range ``[min, max]``
    seen so far in at most ``bins`` bins. When new values widen the range, bins are merged in
    pairs (``e`` grows by one) or shifted, exactly: the final histogram does not depend on the
    order of the data, so histograms of different processes merge exactly (:meth:`all_reduce`).

    Error bound: :meth:`quantile` returns ``est`` with ``|est - v_(k)| <= 2**e`` (the returned
    ``bound``), where ``v_(k)`` is the order statistic at ``k = floor((1 - q) * (N - 1))``, and
    ``2**e < 2 * (max - min) / (bins - 1)``. The number of values above ``est`` differs from the
    number above ``v_(k)`` by at most the count of one bin. :meth:`begin_refine` + a second pass
    over the same data shrinks the bound ``bins`` times.

    Parameters
    ----------
    units : int
        Number of independent streams (the channels of a layer).
    bins : int
        Histogram size per unit, a power of two (default 2048).
    device : torch.device, optional
        Where the counts live (the model's device).

    Examples
    --------
    >>> sq = StreamingQuantile(2, bins=64)
    >>> sq.update(torch.arange(1000.0).repeat(2, 1))
    >>> est, bound = sq.quantile(0.01)
    >>> bool(abs(est[0] - 989.0) <= bound[0])
    True
    """

    def __init__(self, units: int, bins: int = 2048, device: torch.device | str | None = None):
        if bins < 16 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 16, got {bins}")
        self.units = int(units)
        self.bins = int(bins)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.count = 0
        self.vmin = torch.full((units,), math.inf, dtype=torch.float64, device=self.device)
        self.vmax = torch.full((units,), -math.inf, dtype=torch.float64, device=self.device)
        self.exp = torch.zeros(units, dtype=torch.int64, device=self.device)
        self.offset = torch.zeros(units, dtype=torch.int64, device=self.device)
        self.hist = torch.zeros(units, bins, dtype=torch.int64, device=self.device)
        self._fine: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- grid
    def _required_exp(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Smallest ``e`` whose grid holds ``[lo, hi]`` in ``bins`` bins (and keeps the bin
        indices of float32 values exact in int64)."""
        span = hi - lo
        mag = torch.maximum(lo.abs(), hi.abs())
        floor_e = torch.where(
            mag > 0, torch.ceil(torch.log2(mag.clamp_min(1e-300))) - 61, torch.full_like(mag, -100)
        ).clamp(-100, 200)
        guess = torch.where(
            span > 0, torch.floor(torch.log2(span.clamp_min(1e-300) / self.bins)) - 1, floor_e
        )
        e = torch.maximum(guess, floor_e).to(torch.int64)
        for _ in range(400):
            scale = _pow2(-e)
            fits = torch.floor(hi * scale) - torch.floor(lo * scale) <= self.bins - 1
            if bool(fits.all()):
                return e
            e = torch.where(fits, e, e + 1)
        raise RuntimeError("StreamingQuantile: could not fit the range (non-finite values?)")

    def _rebin(self, new_exp: torch.Tensor, new_offset: torch.Tensor) -> None:
        """Move the counts to the grid ``(new_exp, new_offset)`` (``new_exp >= exp``)."""
        d = new_exp - self.exp
        if bool((d < 0).any()):
            raise RuntimeError("StreamingQuantile: the grid can only get coarser")
        if bool((d == 0).all()) and bool((new_offset == self.offset).all()):
            return
        absolute = self.offset.view(-1, 1) + torch.arange(self.bins, device=self.device)
        # floor(absolute / 2**d) as an arithmetic shift: exact for every int64, also where 2**d
        # itself would not fit in int64 (a first batch of one value sits on a very fine grid)
        shift = d.clamp(max=63).view(-1, 1)
        moved = torch.bitwise_right_shift(absolute, shift) - new_offset.view(-1, 1)
        hist = torch.zeros_like(self.hist)
        hist.scatter_add_(1, moved.clamp(0, self.bins - 1), self.hist)
        self.hist = hist
        self.exp = new_exp
        self.offset = new_offset

    def _set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        e = self._required_exp(lo, hi)
        o = torch.floor(lo * _pow2(-e)).to(torch.int64)
        if self.count == 0:
            self.exp, self.offset = e, o
        else:
            self._rebin(e, o)
        self.vmin, self.vmax = lo, hi

    # ----------------------------------------------------------------------------- updates
    def update(self, values: torch.Tensor) -> None:
        """Add ``values``: ``(units, n)`` or ``(B, units, ...)`` (every position of a batch).

        Raises
        ------
        NonFiniteActivationError
            When a value is NaN or infinite.
        """
        v = values.detach()
        if v.dim() == 2 and v.shape[0] == self.units:
            v = v.unsqueeze(0)
        if v.dim() < 2 or v.shape[1] != self.units:
            raise ValueError(
                f"expected values of shape (units={self.units}, n) or (B, units, ...), "
                f"got {tuple(values.shape)}"
            )
        v = v.reshape(v.shape[0], self.units, -1).float()
        n = v.shape[0] * v.shape[2]
        if n == 0:
            return
        bmin = v.amin(dim=(0, 2)).double()
        bmax = v.amax(dim=(0, 2)).double()
        if not (bool(torch.isfinite(bmin).all()) and bool(torch.isfinite(bmax).all())):
            raise NonFiniteActivationError("activations contain NaN or infinite values")
        if self._fine is not None:
            self._update_fine(v)
            self.count += n
            return
        lo, hi = torch.minimum(self.vmin, bmin), torch.maximum(self.vmax, bmax)
        if self.count == 0 or bool((lo < self.vmin).any()) or bool((hi > self.vmax).any()):
            self._set_range(lo, hi)
        scale = _pow2(-self.exp).float().view(1, -1, 1)
        idx = torch.floor(v * scale).to(torch.int64) - self.offset.view(1, -1, 1)
        idx = idx.clamp_(0, self.bins - 1)
        idx += (torch.arange(self.units, device=v.device) * self.bins).view(1, -1, 1)
        self.hist += torch.bincount(idx.reshape(-1), minlength=self.units * self.bins).view(
            self.units, self.bins
        )
        self.count += n

    # ----------------------------------------------------------------------------- queries
    def quantile(self, q: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The value with a fraction ``q`` of the values above it (``q=0.005``: the top 0.5 %).

        Returns
        -------
        estimate, bound : torch.Tensor
            float64 ``(units,)``; ``|estimate - v_(k)| <= bound`` (see the class docstring).
        """
        if self.count == 0:
            raise RuntimeError("no values were added")
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be between 0 and 1 (exclusive), got {q}")
        if self._fine is not None and self._fine["q"] == q and self._fine["count"] > 0:
            return self._quantile_fine()
        pos = (1.0 - q) * (self.count - 1)
        k = math.floor(pos)
        frac = pos - k
        j, below, h = self._find(self.hist, k)
        width = _pow2(self.exp)
        lo = (self.offset + j).double() * width
        est = lo + width * (k - below + 0.5 + frac).double() / h.double()
        est = torch.minimum(torch.maximum(est, lo), lo + width)
        est = torch.minimum(torch.maximum(est, self.vmin), self.vmax)
        return est, width

    def _find(self, hist: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per unit: the bin ``j`` holding the ``k``-th smallest value (0-based), the count below
        that bin and the bin's count."""
        cum = hist.cumsum(1)
        target = torch.full((self.units, 1), k, dtype=torch.int64, device=hist.device)
        j = torch.searchsorted(cum, target, right=True).view(-1).clamp(0, self.bins - 1)
        below = torch.where(
            j > 0, cum.gather(1, (j - 1).clamp_min(0).view(-1, 1)).view(-1), torch.zeros_like(j)
        )
        return j, below, hist.gather(1, j.view(-1, 1)).view(-1).clamp_min(1)

    # ----------------------------------------------------------------------------- refinement
    def begin_refine(self, q: float) -> None:
        """Prepare a second pass over the same data: only the bin holding the ``q`` quantile is
        histogrammed again, ``bins`` times finer. Call :meth:`update` with every value again."""
        if self.count == 0:
            raise RuntimeError("begin_refine() needs a first pass")
        pos = (1.0 - q) * (self.count - 1)
        k = math.floor(pos)
        j, below, _ = self._find(self.hist, k)
        shift = int(math.log2(self.bins))
        self._fine = {
            "q": q,
            "k": k,
            "frac": pos - k,
            "below": below,
            "exp": self.exp - shift,
            "offset": (self.offset + j) * self.bins,
            "hist": torch.zeros_like(self.hist),
            "count": 0,
            "first_count": self.count,
        }
        self.count = 0

    def _update_fine(self, v: torch.Tensor) -> None:
        fine = self._fine
        assert fine is not None
        scale = _pow2(-fine["exp"]).float().view(1, -1, 1)
        idx = torch.floor(v * scale).to(torch.int64) - fine["offset"].view(1, -1, 1)
        ok = (idx >= 0) & (idx < self.bins)
        flat = idx + (torch.arange(self.units, device=v.device) * self.bins).view(1, -1, 1)
        fine["hist"] += torch.bincount(flat[ok], minlength=self.units * self.bins).view(
            self.units, self.bins
        )
        fine["count"] += v.shape[0] * v.shape[2]

    def _quantile_fine(self) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self._fine
        assert fine is not None
        if fine["count"] != fine["first_count"]:
            raise RuntimeError(
                f"the refinement pass saw {fine['count']} values, the first pass "
                f"{fine['first_count']}: both passes must see the same data"
            )
        k_in = fine["k"] - fine["below"]  # rank inside the coarse bin
        cum = fine["hist"].cumsum(1)
        j = torch.searchsorted(cum, k_in.view(-1, 1), right=True).view(-1).clamp(0, self.bins - 1)
        below = torch.where(
            j > 0, cum.gather(1, (j - 1).clamp_min(0).view(-1, 1)).view(-1), torch.zeros_like(j)
        )
        h = fine["hist"].gather(1, j.view(-1, 1)).view(-1).clamp_min(1)
        width = _pow2(fine["exp"])
        lo = (fine["offset"] + j).double() * width
        est = lo + width * ((k_in - below).double() + 0.5 + fine["frac"]) / h.double()
        est = torch.minimum(torch.maximum(est, lo), lo + width)
        est = torch.minimum(torch.maximum(est, self.vmin), self.vmax)
        return est, width

    # ----------------------------------------------------------------------------- merging
    def merge(self, other: StreamingQuantile) -> None:
        """Add the values ``other`` has seen (same units and bins), exactly: the result is the
        histogram of all the data, whatever way it was split."""
        if (other.units, other.bins) != (self.units, self.bins):
            raise ValueError("can only merge StreamingQuantile objects of the same shape")
        if self._fine is not None or other._fine is not None:
            raise RuntimeError("merge() works on first-pass histograms only")
        if other.count == 0:
            return
        theirs = StreamingQuantile(self.units, self.bins, self.device)
        theirs.count, theirs.exp, theirs.offset = other.count, other.exp, other.offset
        theirs.hist = other.hist.to(self.device).clone()
        lo = torch.minimum(self.vmin, other.vmin.to(self.device))
        hi = torch.maximum(self.vmax, other.vmax.to(self.device))
        if self.count == 0:
            self.hist.zero_()
        self._set_range(lo, hi)
        theirs._set_range(lo, hi)
        self.hist += theirs.hist
        self.count += other.count

    def all_reduce(self, group: Any = None) -> None:
        """Merge the histograms of every process of ``group`` (``torch.distributed``); after
        this every process holds the histogram of all the data, exactly."""
        if self._fine is not None:
            fine = self._fine
            _all_reduce(fine["hist"], "sum", group)
            counts = torch.tensor([fine["count"]], dtype=torch.int64, device=self.device)
            _all_reduce(counts, "sum", group)
            fine["count"] = int(counts.item())
            firsts = torch.tensor([fine["first_count"]], dtype=torch.int64, device=self.device)
            _all_reduce(firsts, "sum", group)
            fine["first_count"] = int(firsts.item())
            self.count = fine["count"]
            return
        lo, hi = self.vmin.clone(), self.vmax.clone()
        _all_reduce(lo, "min", group)
        _all_reduce(hi, "max", group)
        counts = torch.tensor([self.count], dtype=torch.int64, device=self.device)
        _all_reduce(counts, "sum", group)
        if int(counts.item()) == 0:
            return
        if self.count == 0:
            self.hist.zero_()
            e = self._required_exp(lo, hi)
            self.exp, self.offset = e, torch.floor(lo * _pow2(-e)).to(torch.int64)
            self.vmin, self.vmax = lo, hi
        else:
            self._set_range(lo, hi)
        _all_reduce(self.hist, "sum", group)
        self.count = int(counts.item())


def _all_reduce(t: torch.Tensor, op: str, group: Any = None) -> None:
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    backend = dist.get_backend(group)
    if t.device.type != "cpu" and backend == "gloo":
        tmp = t.cpu()
        dist.all_reduce(tmp, op=ops[op], group=group)
        t.copy_(tmp)
    else:
        dist.all_reduce(t, op=ops[op], group=group)


def _all_gather(t: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    import torch.distributed as dist

    backend = dist.get_backend(group)
    src = t.cpu() if (t.device.type != "cpu" and backend == "gloo") else t.contiguous()
    out = [torch.empty_like(src) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, src, group=group)
    return [o.to(t.device) for o in out]


def _dist_info(distributed: bool | None, group: Any) -> tuple[int, int]:
    """(rank, world size) of the process group dissection shards over, (0, 1) when none."""
    if distributed is False:
        return 0, 1
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        if distributed:
            raise RuntimeError("torch.distributed is not available in this torch build") from None
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        if distributed:
            raise RuntimeError(
                "distributed=True but no process group is initialised: call torch.distributed."
                "init_process_group('gloo' or 'nccl', ...) first (or start with torchrun)"
            )
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


# ==========================================================================================
# IoU tallies


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


# ==========================================================================================
# results


@dataclass
class LayerDissection:
    """What dissection found in one layer.

    Attributes
    ----------
    name : str
    thresholds : np.ndarray
        ``(units,)`` activation threshold of each unit (top-``quantile`` value).
    threshold_error : np.ndarray
        ``(units,)`` bound on the error of each threshold (the histogram's bin width).
    iou : np.ndarray
        ``(units, n_labels)`` float32 IoU of every unit with every label (column 0 is unused).
    top_images : np.ndarray
        ``(units, k)`` probe indices of the images where the unit's thresholded map covers the
        most mask pixels (ties: the lower index).
    top_values : np.ndarray
        ``(units, k)`` those areas, in mask pixels.
    activated : np.ndarray
        ``(units,)`` activated mask pixels over the probe set.
    """

    name: str
    thresholds: np.ndarray
    threshold_error: np.ndarray
    iou: np.ndarray
    top_images: np.ndarray
    top_values: np.ndarray
    activated: np.ndarray

    @property
    def units(self) -> int:
        """Number of units (channels)."""
        return int(self.iou.shape[0])

    @property
    def best_label(self) -> np.ndarray:
        """``(units,)`` label number of each unit's best concept."""
        if self.iou.shape[1] <= 1:
            return np.zeros(self.units, dtype=np.int64)
        return self.iou[:, 1:].argmax(axis=1) + 1

    @property
    def best_iou(self) -> np.ndarray:
        """``(units,)`` IoU of each unit's best concept."""
        if self.iou.shape[1] <= 1:
            return np.zeros(self.units, dtype=np.float32)
        return self.iou[:, 1:].max(axis=1)


class Dissection:
    """The result of :func:`dissect`: labels, IoUs and top images of every unit of every layer.

    Parameters
    ----------
    layers : dict of str to LayerDissection
    labels : list of Concept
        The probe set's labels (``labels[i]`` has number ``i``).
    categories : list of str
    quantile, iou_threshold : float
    n_images : int
        Probe images seen.
    model, probe : dict
        Descriptions of the model and the probe set, for records.
    complete : bool
        False for the partial results shown while a run is still tallying.

    Examples
    --------
    >>> result = dissect(handle, ["_blocks.4"], probe_set(128))      # doctest: +SKIP
    >>> result.units("_blocks.4")[0]                                # doctest: +SKIP
    {'unit': 0, 'concept': 'green', 'category': 'color', 'iou': 0.061, 'interpretable': True, ...}
    >>> result.save("lite0.dissection")                            # doctest: +SKIP
    >>> Dissection.load("lite0.dissection").summary()               # doctest: +SKIP
    """

    def __init__(
        self,
        layers: dict[str, LayerDissection],
        labels: Sequence[Concept],
        categories: Sequence[str],
        *,
        quantile: float,
        iou_threshold: float,
        n_images: int,
        model: dict[str, Any] | None = None,
        probe: dict[str, Any] | None = None,
        complete: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._layers = dict(layers)
        self.labels = list(labels)
        self.categories = list(categories)
        self.quantile = float(quantile)
        self.iou_threshold = float(iou_threshold)
        self.n_images = int(n_images)
        self.model = dict(model or {})
        self.probe = dict(probe or {})
        self.complete = bool(complete)
        self.meta = dict(meta or {})

    # ----------------------------------------------------------------------------- access
    @property
    def layers(self) -> list[str]:
        """Names of the dissected layers, in the order given."""
        return list(self._layers)

    def __getitem__(self, layer: str) -> LayerDissection:
        try:
            return self._layers[layer]
        except KeyError:
            raise KeyError(
                f"layer {layer!r} was not dissected; dissected layers: {', '.join(self._layers)}"
            ) from None

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{s['layer']}: {s['interpretable']}/{s['units']}" for s in self.summary()
        )
        name = self.model.get("name", "?")
        return f"Dissection({name}, {self.n_images} images, interpretable units {parts})"

    def label_name(self, index: int) -> str:
        """Name of label number ``index``."""
        return self.labels[int(index)].name

    def with_iou_threshold(self, iou_threshold: float) -> Dissection:
        """The same result judged with another interpretability threshold (no recomputation)."""
        return Dissection(
            self._layers,
            self.labels,
            self.categories,
            quantile=self.quantile,
            iou_threshold=iou_threshold,
            n_images=self.n_images,
            model=self.model,
            probe=self.probe,
            complete=self.complete,
            meta=self.meta,
        )

    def unit(self, layer: str, unit: int, top: int = 5) -> dict[str, Any]:
        """Everything about one unit: its label, IoU, threshold, top images and runner-up
        concepts (``top`` best ``(concept, iou)`` pairs)."""
        ld = self[layer]
        if not 0 <= int(unit) < ld.units:
            raise IndexError(
                f"unit {unit} is out of range for layer {layer!r}: valid 0..{ld.units - 1}"
            )
        u = int(unit)
        order = np.argsort(-ld.iou[u, 1:], kind="stable")[:top] + 1
        best = int(ld.best_label[u])
        c = self.labels[best]
        return {
            "layer": layer,
            "unit": u,
            "concept": c.name,
            "category": c.category,
            "iou": float(ld.iou[u, best]),
            "interpretable": bool(ld.iou[u, best] >= self.iou_threshold),
            "threshold": float(ld.thresholds[u]),
            "threshold_error": float(ld.threshold_error[u]),
            "top_images": [int(i) for i in ld.top_images[u] if i >= 0],
            "top_concepts": [(self.labels[int(j)].name, float(ld.iou[u, j])) for j in order],
        }

    def units(self, layer: str) -> list[dict[str, Any]]:
        """One record per unit of ``layer``: ``unit``, ``concept``, ``category``, ``iou``,
        ``interpretable``, ``threshold``."""
        ld = self[layer]
        best, ious = ld.best_label, ld.best_iou
        out = []
        for u in range(ld.units):
            c = self.labels[int(best[u])]
            out.append(
                {
                    "unit": u,
                    "concept": c.name,
                    "category": c.category,
                    "iou": float(ious[u]),
                    "interpretable": bool(ious[u] >= self.iou_threshold),
                    "threshold": float(ld.thresholds[u]),
                }
            )
        return out

    def unique_detectors(self, layer: str) -> dict[str, list[str]]:
        """Per category, the distinct concepts (texture scales merged) detected by interpretable
        units of ``layer``."""
        ld = self[layer]
        found: dict[str, set[str]] = {c: set() for c in self.categories}
        for u in np.nonzero(ld.best_iou >= self.iou_threshold)[0]:
            c = self.labels[int(ld.best_label[u])]
            found.setdefault(c.category, set()).add(c.root)
        return {cat: sorted(names) for cat, names in found.items()}

    def summary(self) -> list[dict[str, Any]]:
        """Per layer: ``units``, ``interpretable`` (count), ``fraction``, ``unique`` (unique
        detectors per category) and ``by_category`` (interpretable units per category)."""
        rows = []
        for name, ld in self._layers.items():
            good = ld.best_iou >= self.iou_threshold
            by_cat = {c: 0 for c in self.categories}
            for u in np.nonzero(good)[0]:
                cat = self.labels[int(ld.best_label[u])].category
                by_cat[cat] = by_cat.get(cat, 0) + 1
            unique = {cat: len(v) for cat, v in self.unique_detectors(name).items()}
            rows.append(
                {
                    "layer": name,
                    "units": ld.units,
                    "interpretable": int(good.sum()),
                    "fraction": float(good.mean()) if ld.units else 0.0,
                    "unique": unique,
                    "by_category": by_cat,
                }
            )
        return rows

    # ----------------------------------------------------------------------------- export
    def to_csv(self, path: str | Path | None = None) -> str:
        """All units of all layers as CSV (``layer, unit, concept, category, iou,
        interpretable, threshold, threshold_error``); written to ``path`` when given."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "layer",
                "unit",
                "concept",
                "category",
                "iou",
                "interpretable",
                "threshold",
                "threshold_error",
            ]
        )
        for name, ld in self._layers.items():
            for rec in self.units(name):
                w.writerow(
                    [
                        name,
                        rec["unit"],
                        rec["concept"],
                        rec["category"],
                        f"{rec['iou']:.6f}",
                        int(rec["interpretable"]),
                        f"{rec['threshold']:.9g}",
                        f"{float(ld.threshold_error[rec['unit']]):.3g}",
                    ]
                )
        text = buf.getvalue()
        if path is not None:
            from ..cache import atomic_write_bytes

            atomic_write_bytes(path, text.encode())
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: settings, labels, summary (the arrays go to the npz)."""
        return {
            "version": SAVE_VERSION,
            "kind": "cnnvis_widgets.dissection",
            "layers": self.layers,
            "labels": [c.to_dict() for c in self.labels],
            "categories": self.categories,
            "quantile": self.quantile,
            "iou_threshold": self.iou_threshold,
            "n_images": self.n_images,
            "model": self.model,
            "probe": self.probe,
            "complete": self.complete,
            "meta": self.meta,
            "summary": self.summary(),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.json`` (settings, labels, summary) and ``<path>.npz`` (arrays)
        atomically; returns the JSON path. :meth:`load` reads them back."""
        from ..cache import atomic_write_bytes, save_json

        base = Path(path)
        if base.suffix in (".json", ".npz"):
            base = base.with_suffix("")
        arrays: dict[str, np.ndarray] = {}
        for i, ld in enumerate(self._layers.values()):
            for key in (
                "thresholds",
                "threshold_error",
                "iou",
                "top_images",
                "top_values",
                "activated",
            ):
                arrays[f"{i}/{key}"] = np.asarray(getattr(ld, key))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(base.with_name(base.name + ".npz"), buf.getvalue())
        return save_json(base.with_name(base.name + ".json"), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Dissection:
        """Read what :meth:`save` wrote (``path`` with or without ``.json``)."""
        from ..cache import load_json

        base = Path(path)
        if base.suffix in (".json", ".npz"):
            base = base.with_suffix("")
        meta = load_json(base.with_name(base.name + ".json"))
        if meta.get("kind") != "cnnvis_widgets.dissection":
            raise ValueError(f"{base}.json is not a saved dissection")
        with np.load(base.with_name(base.name + ".npz"), allow_pickle=False) as z:
            layers = {}
            for i, name in enumerate(meta["layers"]):
                layers[name] = LayerDissection(
                    name=name,
                    thresholds=z[f"{i}/thresholds"],
                    threshold_error=z[f"{i}/threshold_error"],
                    iou=z[f"{i}/iou"],
                    top_images=z[f"{i}/top_images"],
                    top_values=z[f"{i}/top_values"],
                    activated=z[f"{i}/activated"],
                )
        labels = [
            Concept(d["index"], d["name"], d["category"], d.get("parent")) for d in meta["labels"]
        ]
        return cls(
            layers,
            labels,
            meta["categories"],
            quantile=meta["quantile"],
            iou_threshold=meta["iou_threshold"],
            n_images=meta["n_images"],
            model=meta.get("model"),
            probe=meta.get("probe"),
            complete=meta.get("complete", True),
            meta=meta.get("meta"),
        )


# ==========================================================================================
# the dissection run


@contextlib.contextmanager
def _consume_outputs(handle: ModelHandle, layers: Sequence[str], consume: Any) -> Iterator[None]:
    """Forward hooks that hand each layer's output to ``consume(layer, output)`` as soon as it is
    computed (before any later in-place op can change it) and end the pass after the deepest
    layer. Only forward passes of the calling thread are seen; hooks are removed on exit."""
    owner = threading.get_ident()
    infos = [handle.layer(n) for n in layers]
    last = max(infos, key=lambda li: li.order).name
    hooks = []
    seen: set[str] = set()

    def make_hook(name: str) -> Any:
        def hook(module: torch.nn.Module, inputs: object, output: Any) -> None:
            if threading.get_ident() != owner or name in seen:
                return  # another thread's pass, or a module called twice: first call only
            seen.add(name)
            out = output[0] if isinstance(output, (tuple, list)) else output
            consume(name, out)
            if name == last:
                raise StopForward(name)

        return hook

    try:
        for name in dict.fromkeys(layers):
            hooks.append(handle.module(name).register_forward_hook(make_hook(name)))
        yield
    finally:
        for h in hooks:
            h.remove()


#: Weights of R, G, B in the grey image a one-channel model is shown (ITU-R BT.601 luma,
#: as PIL's ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)


def probe_channels(handle: ModelHandle) -> int:
    """The model's input channel count, when the colour probe images can be given to it: 3
    (as drawn) or 1 (their luminance, :data:`LUMA`); ``ValueError`` for any other count."""
    c = int(handle.in_channels)
    if c not in (1, 3):
        raise ValueError(
            f"model {handle.name!r} takes {c} input channels; the probe images are colour "
            "(RGB) pictures, which dissection gives to models with 3 channels as they are and "
            "to models with 1 channel as their luminance. Wrap the model so that it takes "
            "RGB or grey images to dissect it"
        )
    return c


def to_model_channels(handle: ModelHandle, images: torch.Tensor) -> torch.Tensor:
    """Probe images ``(B, 3, S, S)`` (or grey ``(B, 1, S, S)``) as float32 pixels with the
    model's channel count: colour kept for 3-channel models, luminance (:data:`LUMA`) for
    1-channel ones, grey repeated for 3-channel ones."""
    x = images.to(torch.float32)
    c = probe_channels(handle)
    if x.shape[1] == c:
        return x
    if x.shape[1] == 3 and c == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    if x.shape[1] == 1 and c == 3:
        return x.expand(-1, 3, -1, -1)
    raise ValueError(f"the probe images have {x.shape[1]} channels, the model takes {c}")


class Dissector:
    """A resumable dissection: holds the tallies between batches, so a stopped run continues.

    :meth:`steps` yields one :class:`~cnnvis_widgets.core.optimize.Step` per probe batch and
    stage (``image`` and ``loss`` are None; ``metrics`` has ``stage``, ``images``, ``of``) and
    the last step's ``metrics["result"]`` is the :class:`Dissection`. Stop it between steps
    (``stop_event`` or closing the generator) and call :meth:`steps` again to resume.

    Parameters are those of :func:`dissect`.
    """

    def __init__(
        self,
        handle: ModelHandle,
        layers: str | Sequence[str],
        probe: Probe,
        *,
        quantile: float = 0.005,
        iou_threshold: float = 0.04,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        top_k: int = 8,
        bins: int = 2048,
        refine: bool = False,
        distributed: bool | None = None,
        group: Any = None,
        prefetch: bool = True,
    ) -> None:
        names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        if not names:
            raise ValueError("give at least one layer to dissect")
        for name in names:
            info = handle.layer(name)  # KeyError listing the nearest names
            if not info.spatial:
                valid = [li.name for li in handle.conv_layers()][:8]
                raise ValueError(
                    f"layer {name!r} has no spatial output ({info.kind}, {info.channels} "
                    f"features); dissection needs feature maps, e.g. {', '.join(valid)}"
                )
        if device is not None and torch.device(device).type != handle.device.type:
            raise ValueError(
                f"the model is on {handle.device}, device={device!r} was asked for: load it "
                f"there with load_model(..., device={str(device)!r})"
            )
        if not 0.0 < quantile < 0.5:
            raise ValueError(f"quantile must be between 0 and 0.5, got {quantile}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be between 0 and 1, got {iou_threshold}")
        side = limits.check_side(probe.size, "probe image size")
        batch_size = limits.check_batch(batch_size, side, side, name="batch_size")
        top_k = limits.check_int(top_k, "top_k", minimum=1, limit="MAX_TOP_K")
        bins = limits.check_int(bins, "bins", maximum=1 << 16)
        probe_channels(handle)  # ValueError for channel counts the probe images cannot give
        if len(probe) < 1:
            raise ValueError("the probe set is empty")
        self.handle = handle
        self.layers = names
        self.probe = probe
        self.quantile = float(quantile)
        self.iou_threshold = float(iou_threshold)
        self.batch_size = int(batch_size)
        self.top_k = int(top_k)
        self.bins = int(bins)
        self.refine = bool(refine)
        self.prefetch = bool(prefetch)
        self.group = group
        self.rank, self.world = _dist_info(distributed, group)
        self.device = handle.device
        self.stages = ["quantile"] + (["refine"] if refine else []) + ["iou"]
        n = len(probe)
        bounds = [(lo, min(n, lo + self.batch_size)) for lo in range(0, n, self.batch_size)]
        nb = len(bounds)
        # contiguous, batch-aligned slices: rank r gets batches [r*nb/W, (r+1)*nb/W)
        first, last = self.rank * nb // self.world, (self.rank + 1) * nb // self.world
        self.batches = bounds[first:last]
        self.stage_index = 0
        self.cursor = 0
        self.result: Dissection | None = None
        self.elapsed = 0.0
        self._labels = probe.labels
        self._n_labels = len(probe.labels)
        self._label_cat = _category_of_labels(probe.labels, probe.categories).to(self.device)
        self._label_area = torch.zeros(self._n_labels, dtype=torch.int64, device=self.device)
        units = {name: handle.layer(name).channels for name in names}
        self._quant = {
            name: StreamingQuantile(units[name], self.bins, self.device) for name in names
        }
        self._top_val = {
            name: torch.full((units[name], self.top_k), -math.inf, device=self.device)
            for name in names
        }
        self._top_idx = {
            name: torch.full((units[name], self.top_k), -1, dtype=torch.int64, device=self.device)
            for name in names
        }
        self._tally = {
            name: IoUTally(
                units[name], self._n_labels, len(probe.categories), probe.mask_size, self.device
            )
            for name in names
        }
        self._thresholds: dict[str, torch.Tensor] = {}
        self._bounds: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------- progress
    @property
    def total_steps(self) -> int:
        """Steps of the whole run on this process (batches x stages)."""
        return len(self.batches) * len(self.stages)

    @property
    def steps_done(self) -> int:
        return self.stage_index * len(self.batches) + self.cursor

    @property
    def done(self) -> bool:
        """True once the result is complete."""
        return self.result is not None

    @property
    def stage(self) -> str:
        """The current stage (``"quantile"``, ``"refine"``, ``"iou"`` or ``"done"``)."""
        return self.stages[self.stage_index] if self.stage_index < len(self.stages) else "done"

    # ----------------------------------------------------------------------------- the run
    def steps(self, stop_event: threading.Event | None = None) -> Iterator[Step]:
        """Run (or resume) the dissection, yielding a step after every batch.

        With ``prefetch`` the next probe batch is drawn (or read) on a helper thread while the
        network runs on the current one."""
        total = self.total_steps
        pool = ThreadPoolExecutor(1, thread_name_prefix="cnnvis-probe") if self.prefetch else None
        try:
            while self.stage_index < len(self.stages):
                stage = self.stages[self.stage_index]
                if stage == "refine" and self.cursor == 0:
                    for q in self._quant.values():
                        if q._fine is None:
                            q.begin_refine(self.quantile)
                if not self.batches:  # more processes than batches: nothing local, still merge
                    self._finish_stage(stage)
                    continue
                ahead: Future | None = None
                while self.cursor < len(self.batches):
                    if stop_event is not None and stop_event.is_set():
                        return
                    t0 = time.perf_counter()
                    lo, hi = self.batches[self.cursor]
                    if ahead is not None:
                        batch = ahead.result()
                    else:
                        batch = self._load(stage, self.cursor)
                    ahead = None
                    if pool is not None and self.cursor + 1 < len(self.batches):
                        ahead = pool.submit(self._load, stage, self.cursor + 1)
                    self._process(stage, lo, hi, batch)
                    self.cursor += 1
                    metrics: dict[str, Any] = {
                        "stage": stage,
                        "stage_index": self.stage_index,
                        "stages": len(self.stages),
                        "images": hi - self.batches[0][0],
                        "of": self.batches[-1][1] - self.batches[0][0],
                    }
                    last = self.cursor == len(self.batches)
                    if last:
                        self._finish_stage(stage)  # merges, thresholds or the result; next stage
                        if self.result is not None:
                            metrics["result"] = self.result
                    self.elapsed += time.perf_counter() - t0
                    yield Step(
                        index=self.steps_done - 1 if self.result is None else total - 1,
                        loss=None,
                        image=None,
                        metrics=metrics,
                        total=total,
                    )
                    if last:
                        break
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, stage: str, cursor: int) -> ProbeBatch:
        lo, hi = self.batches[cursor]
        return self.probe.batch(range(lo, hi), masks=(stage == "iou"), device=self.device)

    def run(self, stop_event: threading.Event | None = None) -> Dissection:
        """Run to the end (or resume) and return the result."""
        for _ in self.steps(stop_event):
            pass
        if self.result is None:
            raise RuntimeError("the dissection was stopped before it finished; call run() again")
        return self.result

    def _finish_stage(self, stage: str) -> None:
        if stage in ("quantile", "refine"):
            if self.world > 1:
                for name in self.layers:
                    self._quant[name].all_reduce(self.group)
            for name in self.layers:
                if self._quant[name].count == 0:
                    raise RuntimeError("no probe image was processed")
                thr, bound = self._quant[name].quantile(self.quantile)
                self._thresholds[name], self._bounds[name] = thr, bound
        else:
            if self.world > 1:
                for t in self._tally.values():
                    t.all_reduce(self.group)
                for name in self.layers:
                    self._merge_top(name)
                _all_reduce(self._label_area, "sum", self.group)
            self.result = self._build(complete=True)
        self.stage_index += 1
        self.cursor = 0

    def _process(self, stage: str, lo: int, hi: int, batch: ProbeBatch) -> None:
        x = self.handle.normalize(to_model_channels(self.handle, batch.images))
        indices = batch.indices.to(self.device)

        def consume(name: str, out: torch.Tensor) -> None:
            if out.dim() != 4:
                raise ValueError(f"layer {name!r} gave a {out.dim()}-D output, expected 4-D")
            a = out.detach()
            if stage != "iou":
                try:
                    self._quant[name].update(a)
                except NonFiniteActivationError:
                    raise NonFiniteActivationError(
                        f"layer {name!r} gave NaN or infinite activations on probe images "
                        f"{lo}..{hi - 1}: check the model's weights and its input normalization"
                    ) from None
            else:
                area = self._tally[name].update(a, self._thresholds[name], batch)
                self._update_top(name, area, indices)

        with torch.inference_mode(), _consume_outputs(self.handle, self.layers, consume):
            try:
                self.handle.net(x)
            except StopForward:
                pass
        if stage == "iou":
            self._label_area += label_counts(batch, self._n_labels, self.probe.mask_size)

    def _update_top(self, name: str, area: torch.Tensor, indices: torch.Tensor) -> None:
        """Keep the images where each unit's thresholded map covers the most mask pixels (what
        the IoU counts; the peak activation would favour single hot spots, often at borders)."""
        score = area.t().to(torch.float32)  # (units, B)
        vals = torch.cat([self._top_val[name], score], dim=1)
        idx = torch.cat([self._top_idx[name], indices.view(1, -1).expand(score.shape[0], -1)], 1)
        self._top_val[name], self._top_idx[name] = _top_sorted(vals, idx, self.top_k)

    def _merge_top(self, name: str) -> None:
        vals = torch.cat(_all_gather(self._top_val[name], self.group), dim=1)
        idx = torch.cat(_all_gather(self._top_idx[name], self.group), dim=1)
        self._top_val[name], self._top_idx[name] = _top_sorted(vals, idx, self.top_k)

    # ----------------------------------------------------------------------------- results
    def partial_result(self) -> Dissection | None:
        """The result from the batches tallied so far (None before the IoU stage starts)."""
        if self.result is not None:
            return self.result
        if self.stage != "iou" or self.cursor == 0:
            return None
        return self._build(complete=False)

    def _build(self, complete: bool) -> Dissection:
        layers = {}
        for name in self.layers:
            iou = self._tally[name].iou(self._label_area, self._label_cat)
            layers[name] = LayerDissection(
                name=name,
                thresholds=self._thresholds[name].cpu().numpy(),
                threshold_error=self._bounds[name].cpu().numpy(),
                iou=iou.to(torch.float32).cpu().numpy(),
                top_images=self._top_idx[name].cpu().numpy(),
                top_values=self._top_val[name].cpu().numpy().astype(np.float32),
                activated=self._tally[name].activated.cpu().numpy(),
            )
        if complete:
            n_images = len(self.probe)
        else:
            n_images = self.batches[self.cursor - 1][1] - self.batches[0][0] if self.cursor else 0
        return Dissection(
            layers,
            self._labels,
            self.probe.categories,
            quantile=self.quantile,
            iou_threshold=self.iou_threshold,
            n_images=int(n_images),
            model=self.handle.describe(),
            probe=self.probe.describe(),
            complete=complete,
            meta={
                "bins": self.bins,
                "refine": self.refine,
                "batch_size": self.batch_size,
                "top_k": self.top_k,
                "world_size": self.world,
                "seconds": round(self.elapsed, 3),
            },
        )


def _top_sorted(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The ``k`` largest values per row with their indices; ties broken by the smaller index
    (deterministic whatever the order the candidates came in)."""
    order = torch.argsort(idx, dim=1, stable=True)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = torch.argsort(-vals, dim=1, stable=True)[:, :k]
    return vals.gather(1, order), idx.gather(1, order)


def dissect_steps(
    handle: ModelHandle,
    layers: str | Sequence[str],
    probe: Probe,
    *,
    stop_event: threading.Event | None = None,
    **kwargs: Any,
) -> Iterator[Step]:
    """Generator form of :func:`dissect`: yields progress steps; the last one carries the
    :class:`Dissection` in ``metrics["result"]``."""
    yield from Dissector(handle, layers, probe, **kwargs).steps(stop_event)


def dissect(
    handle: ModelHandle,
    layers: str | Sequence[str],
    probe: Probe,
    *,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    top_k: int = 8,
    bins: int = 2048,
    refine: bool = False,
    distributed: bool | None = None,
    group: Any = None,
    cache: bool = False,
    prefetch: bool = True,
) -> Dissection:
    """Dissect ``layers`` of a network on a probe set (Bau et al. 2017).

    Parameters
    ----------
    handle : ModelHandle
        The network (:func:`cnnvis_widgets.load_model`).
    layers : str or list of str
        Layers with spatial output (conv, activation, block).
    probe : ProbeSet or BrodenProbe
        :func:`cnnvis_widgets.data.concepts.probe_set` or
        :func:`cnnvis_widgets.data.broden.broden_probe`.
    quantile : float
        Fraction of the activations above each unit's threshold (0.005 = top 0.5 %).
    iou_threshold : float
        A unit is interpretable when its best IoU is at least this (0.04).
    batch_size : int
        Probe images per forward pass.
    device : str, optional
        Must be the model's device (``handle.device``, the default).
    top_k : int
        Top images kept per unit (those where its thresholded map covers the most pixels).
    bins : int
        Histogram bins per unit for the streaming quantile (power of two).
    refine : bool
        One more pass over the probe set to shrink the threshold error ``bins`` times.
    distributed : bool, optional
        Shard over the initialised ``torch.distributed`` process group (default: when one is
        initialised). Every process must call ``dissect`` with the same arguments; each gets
        the full result.
    group : optional
        The process group (default: the world).
    prefetch : bool
        Draw (or read) the next probe batch on a helper thread while the network runs.
    cache : bool
        Load the result from / save it to the results cache (``cnnvis_widgets.cache``), keyed by
        the model description, layers, probe and settings. Only safe when the model's name and
        weights label identify its weights (named models).

    Returns
    -------
    Dissection

    Examples
    --------
    >>> from cnnvis_widgets import load_model                        # doctest: +SKIP
    >>> from cnnvis_widgets.data.concepts import probe_set            # doctest: +SKIP
    >>> probe = probe_set(256)                                          # doctest: +SKIP
    >>> pretrained = dissect(load_model(), "_blocks.4", probe)          # doctest: +SKIP
    >>> random = dissect(load_model(weights=None), "_blocks.4", probe)  # doctest: +SKIP
    >>> compare_dissections([pretrained, random])                     # doctest: +SKIP
    """
    kwargs = dict(
        quantile=quantile,
        iou_threshold=iou_threshold,
        batch_size=batch_size,
        device=device,
        top_k=top_k,
        bins=bins,
        refine=refine,
        distributed=distributed,
        group=group,
        prefetch=prefetch,
    )
    path = None
    if cache:
        from ..cache import cache_key, entry_path, read_entry

        names = [layers] if isinstance(layers, str) else list(layers)
        key = cache_key(
            "dissection",
            model=handle.fingerprint(),
            layers=names,
            probe=probe.describe(),
            quantile=quantile,
            bins=bins,
            refine=refine,
            top_k=top_k,
            batch_size=batch_size,
        )
        path = entry_path("dissection", key, "")  # None: no usable cache folder (warned)

        def load_checked(p: Path) -> Dissection:
            d = Dissection.load(p)
            for name in d.layers:  # a garbled entry can load: its arrays must agree
                ld = d[name]
                n = ld.iou.shape[0]
                if ld.iou.shape[1:] != (len(d.labels),) or len(ld.thresholds) != n:
                    raise ValueError(f"layer {name!r}: arrays of inconsistent shapes")
            return d.with_iou_threshold(iou_threshold)

        hit = read_entry(path, load_checked)  # a damaged entry is a miss (warned)
        if hit is not None:
            return hit
    result = Dissector(handle, layers, probe, **kwargs).run()  # type: ignore[arg-type]
    if path is not None and _dist_info(distributed, group)[0] == 0:
        from ..cache import write_entry

        write_entry(path, result.save)
    return result


# ==========================================================================================
# comparison


@dataclass
class DissectionComparison:
    """Interpretable units per layer for several models (or checkpoints).

    Attributes
    ----------
    names : list of str
        One name per model.
    layers : list of str
        Layers dissected in every model.
    units : list of int
        Units per layer (of the first model).
    interpretable : list of list of int
        ``interpretable[m][l]``: interpretable units of model ``m`` in layer ``l``.
    unique : list of list of dict
        ``unique[m][l]``: unique detectors per category.
    categories : list of str
    """

    names: list[str]
    layers: list[str]
    units: list[int]
    interpretable: list[list[int]]
    unique: list[list[dict[str, int]]]
    categories: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: ``layer``, ``units`` and the interpretable count of every model."""
        out = []
        for li, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": layer, "units": self.units[li]}
            for m, name in enumerate(self.names):
                row[name] = self.interpretable[m][li]
            out.append(row)
        return out

    def to_csv(self) -> str:
        """The rows as CSV text."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["layer", "units", *self.names])
        for row in self.rows():
            w.writerow([row["layer"], row["units"], *(row[n] for n in self.names)])
        return buf.getvalue()

    def __repr__(self) -> str:
        width = max(12, *(len(n) for n in self.names))
        head = f"{'layer':<16}{'units':>6}  " + "  ".join(f"{n:>{width}}" for n in self.names)
        lines = [head]
        for row in self.rows():
            lines.append(
                f"{row['layer']:<16}{row['units']:>6}  "
                + "  ".join(f"{row[n]:>{width}}" for n in self.names)
            )
        return "\n".join(lines)


def compare_dissections(
    dissections: Sequence[Dissection], names: Sequence[str] | None = None
) -> DissectionComparison:
    """Interpretable units per layer of several dissections (pretrained vs random weights,
    checkpoints during training...), over the layers they share.

    Examples
    --------
    >>> cmp = compare_dissections([pretrained, random], ["imagenet", "random"])  # doctest: +SKIP
    >>> cmp.rows()[0]                                                          # doctest: +SKIP
    {'layer': '_blocks.4', 'units': 40, 'imagenet': 9, 'random': 2}
    """
    ds = list(dissections)
    if not ds:
        raise ValueError("give at least one dissection to compare")
    if names is None:
        names = []
        for d in ds:
            label = str(d.model.get("name", "model"))
            weights = d.model.get("weights")
            names.append(f"{label} [{weights}]" if weights else label)
    names = list(names)
    if len(names) != len(ds):
        raise ValueError(f"got {len(names)} names for {len(ds)} dissections")
    seen: dict[str, int] = {}
    unique_names = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique_names.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    layers = [name for name in ds[0].layers if all(name in d.layers for d in ds[1:])]
    if not layers:
        raise ValueError(
            "the dissections share no layer: "
            + "; ".join(f"{n}: {', '.join(d.layers)}" for n, d in zip(unique_names, ds))
        )
    interpretable, unique = [], []
    for d in ds:
        by_layer = {s["layer"]: s for s in d.summary()}
        interpretable.append([by_layer[name]["interpretable"] for name in layers])
        unique.append([by_layer[name]["unique"] for name in layers])
    return DissectionComparison(
        names=unique_names,
        layers=layers,
        units=[ds[0][name].units for name in layers],
        interpretable=interpretable,
        unique=unique,
        categories=list(ds[0].categories),
    )


# ==========================================================================================
# looking at a unit


@dataclass
class UnitExamples:
    """A unit's top probe images with its activation maps and its concept's masks.

    Attributes
    ----------
    layer : str
    unit : int
    indices : list of int
        Probe indices of the images.
    images : torch.Tensor
        ``(k, 3, S, S)`` pixel space (CPU).
    maps : torch.Tensor
        ``(k, S, S)`` the unit's activation, upsampled bilinearly to the image size.
    active : torch.Tensor
        ``(k, S, S)`` bool: ``maps > threshold``.
    concept_mask : torch.Tensor or None
        ``(k, S, S)`` bool mask of the unit's concept (None for label 0).
    concept : str
    iou : float
    threshold : float
    """

    layer: str
    unit: int
    indices: list[int]
    images: torch.Tensor
    maps: torch.Tensor
    active: torch.Tensor
    concept_mask: torch.Tensor | None
    concept: str
    iou: float
    threshold: float


def unit_examples(
    handle: ModelHandle,
    result: Dissection,
    probe: Probe,
    layer: str,
    unit: int,
    k: int | None = None,
    concept: str | None = None,
) -> UnitExamples:
    """Redraw a unit's top probe images and compute its thresholded maps and concept masks.

    ``concept`` overrides the unit's best concept (e.g. to look at a runner-up).
    """
    handle.check_unit(layer, int(unit))
    ld = result[layer]
    row = [
        (int(i), float(v))
        for i, v in zip(ld.top_images[int(unit)], ld.top_values[int(unit)])
        if i >= 0
    ][: (k or ld.top_images.shape[1])]
    # images where the unit is active at all; all of them when it never is
    idx = [i for i, v in row if v > 0] or [i for i, _ in row]
    if not idx:
        raise RuntimeError(f"no top images recorded for {layer}:{unit}")
    batch = probe.batch(idx, masks=True, device=handle.device)
    got: dict[str, torch.Tensor] = {}

    def consume(name: str, out: torch.Tensor) -> None:
        got[name] = out.detach()[:, int(unit)].float().clone()

    x = handle.normalize(to_model_channels(handle, batch.images))
    with torch.inference_mode(), _consume_outputs(handle, [layer], consume):
        try:
            handle.net(x)
        except StopForward:
            pass
    s = batch.images.shape[-1]
    maps = F.interpolate(got[layer].unsqueeze(1), size=(s, s), mode="bilinear", align_corners=False)
    maps = maps[:, 0].cpu()
    threshold = float(ld.thresholds[int(unit)])
    if concept is None:
        label = int(ld.best_label[int(unit)])
    else:
        label = next((c.index for c in result.labels if c.name == concept), -1)
        if label < 0:
            raise KeyError(f"unknown concept {concept!r}")
    mask = None
    if label > 0:
        m = torch.zeros(len(idx), probe.mask_size, probe.mask_size, dtype=torch.bool)
        if batch.masks is not None:
            m |= (batch.masks.cpu() == label).any(dim=1)
        if batch.scalars is not None and label < batch.scalars.shape[1]:
            m |= batch.scalars.cpu()[:, label].view(-1, 1, 1)
        mask = F.interpolate(m.unsqueeze(1).float(), size=(s, s), mode="nearest")[:, 0] > 0.5
    return UnitExamples(
        layer=layer,
        unit=int(unit),
        indices=idx,
        images=batch.images.cpu().float(),
        maps=maps,
        active=maps > threshold,
        concept_mask=mask,
        concept=result.labels[label].name if label > 0 else "-",
        iou=float(ld.iou[int(unit), label]) if label > 0 else 0.0,
        threshold=threshold,
    )


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels (2 px wide) of bool masks ``(k, S, S)``."""
    m = mask.float().unsqueeze(1)
    dil = F.max_pool2d(m, 3, 1, 1)
    ero = -F.max_pool2d(-m, 3, 1, 1)
    return (dil - ero)[:, 0] > 0


def render_examples(
    ex: UnitExamples,
    ncol: int | None = None,
    *,
    dim: float = 0.4,
    unit_color: tuple[float, float, float] = (1.0, 0.85, 0.0),
    concept_color: tuple[float, float, float] = (0.0, 0.9, 1.0),
) -> torch.Tensor:
    """A grid (pixel space ``(3, H, W)``) of the unit's top images: outside the unit's
    thresholded map the image is dimmed, the map's outline is yellow and the concept mask's
    outline cyan."""
    from .imaging import make_grid

    img = ex.images.clone()
    act = ex.active.unsqueeze(1)
    img = torch.where(act, img, img * dim)
    if ex.concept_mask is not None:
        edge = _outline(ex.concept_mask).unsqueeze(1)
        color = torch.tensor(concept_color).view(1, 3, 1, 1)
        img = torch.where(edge, color.expand_as(img), img)
    edge = _outline(ex.active).unsqueeze(1)
    color = torch.tensor(unit_color).view(1, 3, 1, 1)
    img = torch.where(edge, color.expand_as(img), img)
    return make_grid(img, ncol=ncol or min(len(ex.indices), 4))
