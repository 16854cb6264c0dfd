"""Bounds on what one call may ask of the machine, and the checks every public entry point uses.

A size of 20000 pixels or a batch of a million images would try to allocate many gigabytes and
fail late with a ``MemoryError`` (or swap the machine to a halt). Every public entry point of
:mod:`cnnvis_widgets.core` checks its sizes, batches, step counts and transform magnitudes
against the limits below first, and raises ``ValueError`` naming the limit and the value.

The limits are generous for real use (a 2048-pixel activation-maximization image; 256 images of
224 x 224 in one batch, which fits a 24 GB machine with gradients through EfficientNet-Lite0).
They are read at call time: on a bigger machine raise them, e.g.
``cnnvis_widgets.limits.MAX_BATCH_PIXELS *= 4``.

Integers are accepted in any form :func:`operator.index` accepts (``int``, ``numpy.int64``, a
one-element integer tensor); ``bool`` and ``float`` are refused with a ``TypeError``.

Examples
--------
>>> import numpy as np
>>> as_int(np.int64(7), "unit")
7
>>> check_side(20000)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: size=20000 is above the limit MAX_IMAGE_SIDE=2048 (cnnvis_widgets.limits...)
"""

from __future__ import annotations

import math
import operator
from typing import Any

__all__ = [
    "MIN_IMAGE_SIDE",
    "MAX_IMAGE_SIDE",
    "MAX_BATCH",
    "MAX_BATCH_PIXELS",
    "MAX_STEPS",
    "MAX_PAD",
    "MAX_JITTER",
    "MAX_SCALE",
    "MAX_ROTATE",
    "MAX_DATASET_IMAGES",
    "MAX_TOP_K",
    "as_int",
    "check_int",
    "check_float",
    "check_side",
    "check_batch",
    "check_steps",
    "check_transforms",
    "check_pixel_range",
    "format_range",
    "setting_value",
    "is_scalar",
]

#: Smallest image side (pixels) a method makes: below it the network's strides leave nothing.
MIN_IMAGE_SIDE = 8
#: Largest image side (pixels) any method makes or resizes to (activation maximization,
#: inversion, dissection probes, decoder training, photos fed to the model).
MAX_IMAGE_SIDE = 2048
#: Largest number of images in one batch, whatever their size.
MAX_BATCH = 1024
#: Largest number of pixels in one batch (images x height x width): 256 images of 224 x 224,
#: or 3 of 2048 x 2048. Fits a 24 GB machine with gradients through EfficientNet-Lite0.
MAX_BATCH_PIXELS = 256 * 224 * 224
#: Largest number of optimization steps of one run (activation maximization, inversion,
#: attacks, decoder training).
MAX_STEPS = 100_000
#: Largest padding (pixels) of the transformation-robustness stage (Lucid's default: 12).
MAX_PAD = 256
#: Largest jitter (pixels) of either jitter stage (Lucid's defaults: 8 and 4).
MAX_JITTER = 256
#: Largest half-width of the random scale range: factors 1 - s .. 1 + s (Lucid's default: 0.1).
MAX_SCALE = 0.9
#: Largest random rotation angle in degrees (Lucid's default: 10).
MAX_ROTATE = 180.0
#: Largest number of images of a generated or listed data set (probe sets, training sets).
MAX_DATASET_IMAGES = 10_000_000

#: Largest number of top images kept per unit (DeconvNet / top-k patches; the papers show 9).
MAX_TOP_K = 1000

_WHAT = {
    "MIN_IMAGE_SIDE": "the smallest image side in pixels",
    "MAX_IMAGE_SIDE": "the largest image side in pixels",
    "MAX_BATCH": "the most images in one batch",
    "MAX_BATCH_PIXELS": "the most pixels in one batch, images x height x width",
    "MAX_STEPS": "the most steps of one run",
    "MAX_PAD": "the largest padding in pixels",
    "MAX_JITTER": "the largest jitter in pixels",
    "MAX_SCALE": "the largest half-width of the scale range",
    "MAX_ROTATE": "the largest rotation in degrees",
    "MAX_DATASET_IMAGES": "the most images of one data set",
    "MAX_TOP_K": "the most top images kept per unit",
}


def _limit(name: str) -> Any:
    return globals()[name]


def _above(what: str, value: Any, limit: str, hint: str = "") -> ValueError:
    return ValueError(
        f"{what}={value} is above the limit {limit}={_limit(limit)} "
        f"(cnnvis_widgets.limits.{limit}: {_WHAT[limit]}){hint}"
    )


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int: anything :func:`operator.index` accepts (numpy and torch
    integers included); ``TypeError`` naming ``name`` for bools, floats and everything else.

    Examples
    --------
    >>> as_int(3.0, "steps")
    Traceback (most recent call last):
    ...
    TypeError: steps must be an integer, got 3.0 (float)
    """
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
        raise TypeError(f"{name} must be an integer, got {value!r} (a bool)")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__})"
        ) from None


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    limit: str | None = None,
) -> int:
    """:func:`as_int`, then ``minimum <= value`` and ``value <= maximum`` (or the module limit
    named ``limit``), ``ValueError`` naming the bound otherwise."""
    v = as_int(value, name)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {v}")
    if limit is not None and v > _limit(limit):
        raise _above(name, v, limit)
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v}")
    return v


def is_scalar(value: Any) -> bool:
    """True for one value (a number, a 0-d array or tensor), False for sequences, arrays and
    tensors of values: tells ``unit=3`` from ``units=[3, 5]`` whatever the integer type."""
    if value is None:
        return False
    if hasattr(value, "ndim"):
        return int(value.ndim) == 0
    return not hasattr(value, "__iter__")


def setting_value(current: Any, value: Any, name: str) -> Any:
    """``value`` converted to the type of a settings field's ``current`` value: integers through
    :func:`as_int` (``steps=2.5`` is a ``TypeError``, not 2), other types by their constructor.
    """
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, int):
        return as_int(value, name)
    return type(current)(value)


def check_float(
    value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    """A finite real number (bools refused) within the bounds given."""
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
        raise TypeError(f"{name} must be a number, got {value!r} (a bool)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})"
        ) from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {v:g}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, got {v:g}")
    return v


def check_side(value: Any, name: str = "size") -> int:
    """An image side in pixels: an integer in ``MIN_IMAGE_SIDE .. MAX_IMAGE_SIDE``."""
    v = as_int(value, name)
    if v < MIN_IMAGE_SIDE:
        raise ValueError(f"{name} must be at least {MIN_IMAGE_SIDE} pixels, got {v}")
    if v > MAX_IMAGE_SIDE:
        raise _above(name, v, "MAX_IMAGE_SIDE")
    return v


def check_batch(
    value: Any, height: int | None = None, width: int | None = None, name: str = "batch"
) -> int:
    """A batch size: an integer in ``1 .. MAX_BATCH`` whose pixels (``value * height * width``,
    when the size is given) fit ``MAX_BATCH_PIXELS``."""
    v = as_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be at least 1, got {v}")
    if v > MAX_BATCH:
        raise _above(name, v, "MAX_BATCH")
    if height is not None:
        w = height if width is None else width
        px = v * int(height) * int(w)
        if px > MAX_BATCH_PIXELS:
            most = max(1, MAX_BATCH_PIXELS // (int(height) * int(w)))
            raise ValueError(
                f"{name}={v} images of {int(height)} x {int(w)} pixels is {px:,} pixels, above "
                f"the limit MAX_BATCH_PIXELS={MAX_BATCH_PIXELS:,} (cnnvis_widgets.limits."
                f"MAX_BATCH_PIXELS: {_WHAT['MAX_BATCH_PIXELS']}); at this size use {name} <= "
                f"{most}"
            )
    return v


def check_steps(value: Any, name: str = "steps", minimum: int = 1) -> int:
    """A number of steps: an integer in ``minimum .. MAX_STEPS``."""
    return check_int(value, name, minimum=minimum, limit="MAX_STEPS")


def check_transforms(
    pad: Any = 0, jitter: Any = 0, scale: Any = 0.0, rotate: Any = 0.0, jitter2: Any = 0
) -> None:
    """The magnitudes of the transformation-robustness stages (pixels, scale half-width,
    degrees): each at least 0 and within ``MAX_PAD``, ``MAX_JITTER``, ``MAX_SCALE``,
    ``MAX_ROTATE``."""
    for name, v, limit in (
        ("pad", pad, "MAX_PAD"),
        ("jitter", jitter, "MAX_JITTER"),
        ("jitter2", jitter2, "MAX_JITTER"),
    ):
        n = as_int(v, name)
        if n < 0:
            raise ValueError(f"{name} must be at least 0 pixels, got {n}")
        if n > _limit(limit):
            raise _above(name, n, limit)
    for name, v, limit in (("scale", scale, "MAX_SCALE"), ("rotate", rotate, "MAX_ROTATE")):
        f = check_float(v, name, minimum=0.0)
        if f > _limit(limit):
            raise _above(name, f"{f:g}", limit)


def format_range(lo: float, hi: float) -> str:
    """``"[lo, hi]"`` with enough digits that a value a hair outside [0, 1] does not print as
    0 or 1.

    Examples
    --------
    >>> format_range(-1e-7, 1.0000002)
    '[-1e-07, 1.0000002]'
    """

    def fmt(v: float) -> str:
        for digits in range(4, 18):
            s = f"{v:.{digits}g}"
            p = float(s)
            if (p < 0) == (v < 0) and (p > 1) == (v > 1):  # printed on the same side as v
                return s
        return repr(v)

    return f"[{fmt(lo)}, {fmt(hi)}]"


def check_pixel_range(pixels: Any, name: str = "image") -> None:
    """``ValueError`` when a pixel-space tensor has values outside [0, 1], printing the real
    range and the likely fix (``/ 255`` for 0-255 data, ``handle.denormalize`` for model-input
    space)."""
    if not bool(pixels.isfinite().all()):
        raise ValueError(
            f"{name} contains NaN or infinite values; clean it first (pixels in [0, 1], e.g. "
            "torch.nan_to_num(x).clamp(0, 1))"
        )
    lo, hi = float(pixels.min()), float(pixels.max())
    if lo >= 0.0 and hi <= 1.0:
        return
    if lo >= 0.0 and 1.5 < hi <= 255.0:
        fix = f"these look like 0-255 values: pass {name} / 255"
    elif lo < -0.05:
        fix = (
            "these look like model-input space (normalized values): pass "
            "handle.denormalize(x).clamp(0, 1), or handle.to_pixels(photo)"
        )
    else:
        fix = f"clip it with {name}.clamp(0, 1) if that is what you mean"
    raise ValueError(
        f"{name} must be pixel values in [0, 1], got values in {format_range(lo, hi)}; {fix}"
    )
