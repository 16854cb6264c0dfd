"""Per-unit streaming quantiles on a power-of-two histogram grid (:class:`StreamingQuantile`).

One pass, no activation kept, an error bound per unit, and histograms that merge exactly across
processes (``torch.distributed``): the threshold of Network Dissection
(:mod:`cnnvis_widgets.core.dissection`) is the top 0.5 % quantile of each unit.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["StreamingQuantile", "NonFiniteActivationError"]


class NonFiniteActivationError(FloatingPointError):
    """A dissected layer produced NaN or infinite activations; the message says where."""


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
        lo, hi = torch.minimum(self.vmin, bmin), torch.maximum(self.vmax, bmax)
        # one transfer per batch for both questions: finite? a wider range?
        finite, wider = torch.stack(
            [
                torch.isfinite(bmin).all() & torch.isfinite(bmax).all(),
                (lo < self.vmin).any() | (hi > self.vmax).any(),
            ]
        ).tolist()
        if not finite:
            raise NonFiniteActivationError("activations contain NaN or infinite values")
        if self._fine is not None:
            self._update_fine(v)
            self.count += n
            return
        if self.count == 0 or wider:
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
