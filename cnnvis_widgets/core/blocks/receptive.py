"""Exact receptive fields: which input pixels each output position of a layer depends on
(:func:`receptive_field`, :class:`ReceptiveField`).

Receptive fields are computed, not looked up: a backward pass through a *structural* copy of the
network (every weight positive, every rectifier passing everything, max pooling replaced by
average pooling, run with parameters swapped in by ``torch.func.functional_call``, so the model
itself is untouched) marks exactly the input pixels each output position depends on. That is
exact for any chain or graph of convolutions and pools (residual branches, strides, TensorFlow
"SAME" padding, borders included), and the tests check it against brute force on the real model.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...models.handle import ModelHandle
from ..attribution import relu_rule
from ..hooks import StopForward, capture

__all__ = ["ReceptiveField", "receptive_field"]


@dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels each output position of a layer depends on.

    The field of output position ``(y, x)`` is the box ``rows[y] x cols[x]`` (half-open
    ``[start, stop)`` intervals of input rows and columns), already clipped to the image: at the
    borders it is smaller. For a chain of convolutions and pools the dependency set is exactly
    that box.

    Attributes
    ----------
    layer : str
        The layer.
    input_size : (int, int)
        Input height and width the field was computed for.
    rows, cols : tuple of (int, int)
        One interval per output row / column.

    Examples
    --------
    >>> rf = ReceptiveField("conv", (8, 8), ((0, 2), (0, 3), (1, 4)), ((0, 2), (0, 3), (1, 4)))
    >>> rf.box(1, 2)
    (0, 1, 3, 4)
    >>> rf.size, rf.stride
    ((3, 3), (1, 1))
    """

    layer: str
    input_size: tuple[int, int]
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]

    @property
    def output_size(self) -> tuple[int, int]:
        """Height and width of the layer's output."""
        return len(self.rows), len(self.cols)

    @property
    def size(self) -> tuple[int, int]:
        """Largest extent in rows and columns (the interior field, unless clipped everywhere)."""
        return max(b - a for a, b in self.rows), max(b - a for a, b in self.cols)

    @property
    def stride(self) -> tuple[int, int]:
        """Typical shift of the field between neighbouring outputs (the layer's total stride)."""

        def one(iv: tuple[tuple[int, int], ...]) -> int:
            if len(iv) < 2:
                return 1
            mid = len(iv) // 2
            mids = [(a + b) / 2 for a, b in iv]
            return max(1, round(mids[mid] - mids[mid - 1]))

        return one(self.rows), one(self.cols)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of output position ``(y, x)`` (bottom/right exclusive)."""
        (top, bottom), (left, right) = self.rows[int(y)], self.cols[int(x)]
        return top, left, bottom, right

    def contains(self, y: int, x: int, py: int, px: int) -> bool:
        """Whether input pixel ``(py, px)`` lies in the field of output ``(y, x)``."""
        top, left, bottom, right = self.box(y, x)
        return top <= py < bottom and left <= px < right

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "layer": self.layer,
            "input_size": list(self.input_size),
            "rows": [list(r) for r in self.rows],
            "cols": [list(c) for c in self.cols],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReceptiveField:
        """Inverse of :meth:`to_dict`."""
        return cls(
            str(d["layer"]),
            (int(d["input_size"][0]), int(d["input_size"][1])),
            tuple((int(a), int(b)) for a, b in d["rows"]),
            tuple((int(a), int(b)) for a, b in d["cols"]),
        )


def _structural_tensors(model: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the structural network: every partial derivative positive."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.dim() >= 2:  # conv / linear weights: 1 / input channels (per group)
            fan_in = max(1, p.shape[1])
            out[name] = torch.full(p.shape, 1.0 / fan_in, dtype=dtype, device=p.device)
        elif name.rsplit(".", 1)[-1].startswith("bias"):
            out[name] = torch.zeros(p.shape, dtype=dtype, device=p.device)
        else:
            out[name] = torch.ones(p.shape, dtype=dtype, device=p.device)
    for name, b in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_mean":
            out[name] = torch.zeros(b.shape, dtype=dtype, device=b.device)
        elif leaf == "running_var":
            out[name] = torch.ones(b.shape, dtype=dtype, device=b.device)
        elif b.is_floating_point():
            out[name] = b.to(dtype)
    return out


Selection = tuple[list[int] | None, list[int] | None]  # output rows, columns (None: all)


def _dependency(
    handle: ModelHandle,
    layer: str,
    size: tuple[int, int],
    selections: Sequence[Selection],
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """One backward pass of the structural network for a batch of selections.

    Item ``b`` backpropagates from the output positions ``rows_b x cols_b`` (None: all) of
    ``layer``; returns the input rows ``(B, H)`` and columns ``(B, W)`` each item depends on, and
    the layer's output size.
    """
    model = handle.net
    n = len(selections)
    x = torch.ones(n, handle.in_channels, *size, dtype=dtype, device=handle.device)
    x.requires_grad_(True)
    tensors = _structural_tensors(model, dtype)
    with relu_rule(handle, "structural", strict=False), torch.enable_grad():
        with capture(handle, [layer], stop_early=True) as acts:
            try:
                torch.func.functional_call(model, tensors, (x,), strict=False)
            except StopForward:
                pass
        if layer not in acts:
            raise RuntimeError(f"layer {layer!r} did not run in the forward pass")
        out = acts[layer]
        if out.dim() != 4:
            raise ValueError(f"layer {layer!r} has no spatial output: no receptive field")
        h, w = out.shape[-2:]
        sel = torch.zeros(n, 1, h, w, dtype=dtype, device=out.device)
        for b, (rows, cols) in enumerate(selections):
            r = torch.arange(h) if rows is None else torch.as_tensor(rows)
            c = torch.arange(w) if cols is None else torch.as_tensor(cols)
            sel[b, 0, r[:, None], c[None, :]] = 1.0
        (g,) = torch.autograd.grad((out * sel).sum(), x)
    dep = g.detach() != 0
    return dep.any(dim=3).any(dim=1), dep.any(dim=2).any(dim=1), (int(h), int(w))


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Half-open intervals of consecutive True values of a 1-D bool tensor."""
    m = mask.to(torch.int8).tolist()
    out: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(m + [0]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


def _intervals(
    handle: ModelHandle, layer: str, size: tuple[int, int], dtype: torch.dtype
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    # 1. two neighbouring positions in the middle: the interior extent and shift of the field
    info = handle.layer(layer)
    if size == handle.input_size and info.height is not None and info.width is not None:
        h, w = info.height, info.width
    else:
        _, _, (h, w) = _dependency(handle, layer, size, [([0], [0])], dtype)
    mr, mc = h // 2, w // 2
    sels: list[Selection] = [([mr], [mc]), ([min(mr + 1, h - 1)], [min(mc + 1, w - 1)])]
    rows2, cols2, _ = _dependency(handle, layer, size, sels, dtype)

    def spacing(dep: torch.Tensor, n: int) -> int:
        a, b = _runs(dep[0]), _runs(dep[1])
        if len(a) != 1 or len(b) != 1:
            return n  # not a single interval: every position on its own
        length = a[0][1] - a[0][0]
        shift = max(1, b[0][0] - a[0][0], b[0][1] - a[0][1])
        return max(1, min(n, math.ceil(length / shift) + 1))

    dr, dc = spacing(rows2, h), spacing(cols2, w)
    # 2. combs: positions d apart have disjoint fields, so one backward pass separates them
    groups = max(dr, dc)
    combs: list[Selection] = []
    for o in range(groups):
        rs = list(range(o, h, dr)) if o < dr else None
        cs = list(range(o, w, dc)) if o < dc else None
        combs.append((rs, cs))
    rows_dep, cols_dep, _ = _dependency(handle, layer, size, combs, dtype)
    rows: list[tuple[int, int] | None] = [None] * h
    cols: list[tuple[int, int] | None] = [None] * w
    for o in range(groups):
        for dep, d, n, dst in ((rows_dep, dr, h, rows), (cols_dep, dc, w, cols)):
            if o >= d:
                continue
            positions = list(range(o, n, d))
            found = _runs(dep[o])
            if len(found) == len(positions):
                for p, iv in zip(positions, found):
                    dst[p] = iv
    # 3. anything ambiguous (touching fields): one position per batch item
    for dst, n, is_rows in ((rows, h, True), (cols, w, False)):
        missing = [i for i in range(n) if dst[i] is None]
        if missing:
            singles: list[Selection] = [([i], None) if is_rows else (None, [i]) for i in missing]
            rd, cd, _ = _dependency(handle, layer, size, singles, dtype)
            dep = rd if is_rows else cd
            for k, i in enumerate(missing):
                found = _runs(dep[k])
                if not found:
                    raise RuntimeError(f"output {i} of layer {layer!r} depends on no input pixel")
                dst[i] = (found[0][0], found[-1][1])
    return [r for r in rows if r is not None], [c for c in cols if c is not None]


_RF_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RF_LOCK = threading.Lock()


def receptive_field(
    handle: ModelHandle, layer: str, input_size: int | tuple[int, int] | None = None
) -> ReceptiveField:
    """The exact receptive field of every output position of ``layer``.

    Parameters
    ----------
    handle : ModelHandle
        The network (left untouched: the structural copy uses swapped-in parameters).
    layer : str
        A layer with a spatial output.
    input_size : int or (int, int), optional
        Input height and width (default: the model's input size). Fields depend on it at the
        borders and with "SAME" padding.

    Returns
    -------
    ReceptiveField
        Per output row and column, the interval of input rows and columns it depends on.
        Remembered per (model, layer, size) for the life of the model.

    Examples
    --------
    >>> rf = receptive_field(handle, "_blocks.4")                       # doctest: +SKIP
    >>> rf.size, rf.stride, rf.box(0, 0)                                 # doctest: +SKIP
    ((83, 83), (8, 8), (0, 0, 43, 43))
    """
    info = handle.layer(layer)
    if not info.spatial:
        raise ValueError(f"layer {layer!r} has no spatial output: no receptive field")
    if input_size is None:
        size = handle.input_size
    elif isinstance(input_size, int):
        size = (int(input_size), int(input_size))
    else:
        size = (int(input_size[0]), int(input_size[1]))
    with _RF_LOCK:
        per_model = _RF_CACHE.setdefault(handle.net, {})
        if (layer, size) in per_model:
            return per_model[(layer, size)]
    rows, cols = _intervals(handle, layer, size, torch.float32)
    rf = ReceptiveField(layer, size, tuple(rows), tuple(cols))
    with _RF_LOCK:
        _RF_CACHE.setdefault(handle.net, {})[(layer, size)] = rf
    return rf
