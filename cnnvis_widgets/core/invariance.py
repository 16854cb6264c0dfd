"""Invariance (Zeiler & Fergus 2014, Fig. 5): how features and prediction change as an image moves.

An image is translated (vertically, as in the paper), scaled (zoomed about its centre) and rotated
over a range; for each transformed copy and each chosen layer, the distance of its feature vector
from the untransformed image's, and the probability of the image's class. The paper's finding:
transformations change the first layer a lot and the top layers little, and the output is stable
to translation and scale (less so to rotation, except for symmetric objects).

Layers differ in scale, so the distances are normalized per layer, in one of two ways:

* with ``reference`` images (other pictures: ``"photos"`` is the packaged photos), by the mean
  distance from the image's features to theirs, ``||f(T x) - f(x)|| / mean ||f(r) - f(x)||``: 1
  means "as far as a different picture", which compares layers fairly (the default of the widget
  and the finding test: on EfficientNet-Lite0 a 25% shift moves the first layer about 0.6 of the
  way to another photo and the pooled top layer about 0.2);
* without, by the length of the image's feature vector, ``||f(T x) - f(x)|| / ||f(x)||`` (a
  layer after a ReLU has a large mean, which makes its relative change look small).

Every value of one transformation goes through the network as one batch; outside the moved image
is filled with the mean of the image's border pixels (black for a digit on black).

Examples
--------
>>> import torch
>>> from cnnvis_widgets.models.handle import ModelHandle
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
...                           torch.nn.Linear(4, 2))
>>> h = ModelHandle(net, name="tiny", input_size=16, mean=(0.5,), std=(0.5,))
>>> res = invariance(h, torch.rand(1, 1, 16, 16), layers=["1", "2"], steps=5)
>>> sorted(res.curves), res.curves["rotate"].values[:2]
(['rotate', 'scale', 'translate'], [-180.0, -90.0])
>>> len(res.curves["scale"].distances["1"])
5
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .. import limits
from ..models.handle import ModelHandle
from .blocks.hooks import capture, forward_to
from .blocks.optimize import Step
from .blocks.runs import finish

__all__ = [
    "TRANSFORMS",
    "DEFAULT_RANGES",
    "Curve",
    "Invariance",
    "transform_batch",
    "default_layers",
    "invariance",
    "invariance_steps",
]

#: The transformations, in the paper's order.
TRANSFORMS = ("translate", "scale", "rotate")
#: Default ranges (Zeiler & Fergus, Fig. 5): vertical translation as a fraction of the image
#: side (their -60..60 pixels of 224 is about +-0.27), scale factor (zooming in, 1 to 1.8 as
#: theirs; values spaced evenly in log scale), rotation in degrees.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "translate": (-0.25, 0.25),
    "scale": (1.0, 1.8),
    "rotate": (-180.0, 180.0),
}
_UNITS = {"translate": "shift (fraction of the side)", "scale": "scale factor", "rotate": "degrees"}


def _theta(kind: str, v: float) -> list[list[float]]:
    """The affine map from output to input coordinates (``affine_grid``'s convention)."""
    if kind == "translate":  # content moves down by v of the side: read from v above
        return [[1.0, 0.0, 0.0], [0.0, 1.0, -2.0 * v]]
    if kind == "scale":  # zoom about the centre by v
        return [[1.0 / v, 0.0, 0.0], [0.0, 1.0 / v, 0.0]]
    a = math.radians(v)
    return [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]


def _border_mean(pixels: torch.Tensor) -> torch.Tensor:
    """``(1, C, 1, 1)`` mean of the outermost ring of pixels."""
    p = pixels[0]
    ring = torch.cat([p[:, 0], p[:, -1], p[:, :, 0], p[:, :, -1]], dim=1)
    return ring.mean(1).view(1, -1, 1, 1)


def transform_batch(
    pixels: torch.Tensor, kind: str, values: Sequence[float], fill: torch.Tensor | None = None
) -> torch.Tensor:
    """``(len(values), C, H, W)``: the pixel image ``(1, C, H, W)`` under each value of one
    transformation (bilinear; outside filled with ``fill``, default the border mean)."""
    if kind not in TRANSFORMS:
        raise ValueError(f"transformation must be one of {TRANSFORMS}, got {kind!r}")
    if kind == "scale" and any(v <= 0 for v in values):
        raise ValueError(f"scale factors must be > 0, got {list(values)}")
    x = pixels.float()
    fill = _border_mean(x) if fill is None else fill.view(1, -1, 1, 1).to(x)
    theta = torch.tensor([_theta(kind, float(v)) for v in values], dtype=x.dtype, device=x.device)
    n = len(values)
    grid = F.affine_grid(theta, [n, *x.shape[1:]], align_corners=False)
    out = F.grid_sample(
        (x - fill).expand(n, -1, -1, -1),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return (out + fill).clamp(0, 1)


def default_layers(handle: ModelHandle, count: int = 4) -> list[str]:
    """``count`` layers spread from the first to the last conv-like layer (activations and pools;
    in a network of blocks the whole blocks, not the layers inside them), plus the last
    non-spatial layer before the output (the fully connected features) when there is one."""
    convs = handle.conv_layers()
    blocks = [li for li in convs if li.kind == "block"]
    leaves = [b for b in blocks if not any(o.name.startswith(b.name + ".") for o in blocks)]
    if len(leaves) >= count:  # a network of blocks (EfficientNet's): whole blocks, not inside
        inside = tuple(b.name + "." for b in blocks)
        spatial = [
            li
            for li in convs
            if (li in leaves or li.kind in ("act", "pool")) and not li.name.startswith(inside)
        ]
    else:  # a plain stack (a Sequential of conv-ReLU-pool): its activations and pools
        spatial = [li for li in convs if li.kind in ("act", "pool")]
    spatial = spatial or convs
    if not spatial:
        raise ValueError(f"{handle.name} has no conv-like layers: pass layers=[...]")
    picks = sorted({round(i * (len(spatial) - 1) / max(1, count - 1)) for i in range(count)})
    names = [spatial[i].name for i in picks]
    flat = [
        li
        for li in handle.layers.values()
        if not li.spatial and li.kind in ("act", "linear") and li.order > spatial[-1].order
    ]
    if len(flat) > 1:  # the last linear is the output itself: the one before it
        names.append(flat[-2].name)
    return names


@dataclass
class Curve:
    """One transformation over its range.

    Attributes
    ----------
    kind : str
        ``"translate"``, ``"scale"`` or ``"rotate"``.
    values : list of float
        The transformation's values (x axis).
    distances : dict
        Layer -> normalized feature distance per value.
    probability : list of float
        The probability of the class per value.
    images : torch.Tensor
        ``(S, C, H, W)`` the transformed pixel images.
    """

    kind: str
    values: list[float]
    distances: dict[str, list[float]]
    probability: list[float]
    images: torch.Tensor

    @property
    def unit(self) -> str:
        """What the values measure."""
        return _UNITS[self.kind]

    def mean_distance(self, layer: str) -> float:
        """The layer's distance averaged over the range."""
        d = self.distances[layer]
        return sum(d) / len(d)

    def series(self, probability: bool = True) -> dict[str, Any]:
        """The chart value (``{"series": [...]}``): one line per layer, the probability dashed."""
        out: list[dict[str, Any]] = [
            {"name": layer, "points": [[v, d] for v, d in zip(self.values, ds, strict=True)]}
            for layer, ds in self.distances.items()
        ]
        if probability:
            pts = [[v, p] for v, p in zip(self.values, self.probability, strict=True)]
            out.append({"name": "p(class)", "points": pts, "dashed": True})
        return {"series": out}


@dataclass
class Invariance:
    """Feature distances and class probability of one image under each transformation."""

    layers: list[str]
    target: int
    class_name: str
    probability: float
    curves: dict[str, Curve]
    normalized: str = "feature length"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (without the images)."""
        return {
            "layers": self.layers,
            "target": self.target,
            "class_name": self.class_name,
            "probability": self.probability,
            "normalized": self.normalized,
            "curves": {
                k: {"values": c.values, "distances": c.distances, "probability": c.probability}
                for k, c in self.curves.items()
            },
        }


def _values(kind: str, bounds: tuple[float, float], steps: int) -> list[float]:
    lo, hi = (float(v) for v in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"the {kind} range must be finite numbers low <= high, got {bounds}")
    if kind == "scale":
        if lo <= 0:
            raise ValueError(f"scale factors must be > 0, got {bounds}")
        return [lo * (hi / lo) ** (i / (steps - 1)) for i in range(steps)]
    limit = {"translate": 1.0, "rotate": 360.0}[kind]
    if max(abs(lo), abs(hi)) > limit:
        raise ValueError(f"the {kind} range must be within +-{limit:g}, got {bounds}")
    return [lo + (hi - lo) * i / (steps - 1) for i in range(steps)]


def _pixels(handle: ModelHandle, image: Image.Image | torch.Tensor) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return handle.to_pixels(image).to(handle.device)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a PIL image or a pixel tensor, got {type(image).__name__}")
    t = image if image.dim() == 4 else image.unsqueeze(0)
    if t.shape[0] != 1 or t.shape[1] != handle.in_channels or t.dim() != 4:
        raise ValueError(
            f"image must be one (1, {handle.in_channels}, H, W) pixel image, got "
            f"{tuple(image.shape)}"
        )
    limits.check_pixel_range(t, "image")
    if tuple(t.shape[-2:]) != handle.input_size:
        t = F.interpolate(t.float(), size=handle.input_size, mode="bilinear", align_corners=False)
    return t.float().to(handle.device)


def invariance_steps(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    transforms: Sequence[str] = TRANSFORMS,
    ranges: dict[str, tuple[float, float]] | None = None,
    steps: int = 9,
    target: int | None = None,
    reference: Any = None,
) -> Generator[Step, None, Invariance]:
    """Steps of :func:`invariance` (one per transformation, ``image`` the transformed batch);
    returns the :class:`Invariance`."""
    names = default_layers(handle) if layers is None else list(dict.fromkeys(layers))
    for n in names:
        handle.layer(n)
    steps = limits.check_int(steps, "steps", minimum=2, maximum=64)
    rng = {**DEFAULT_RANGES, **(ranges or {})}
    kinds = list(dict.fromkeys(transforms))
    for k in kinds:
        if k not in TRANSFORMS:
            raise ValueError(f"transformation must be one of {TRANSFORMS}, got {k!r}")
    if not kinds:
        raise ValueError("no transformations to apply")
    grids = {k: _values(k, rng[k], steps) for k in kinds}
    h, w = handle.input_size
    limits.check_batch(steps + 1, h, w, name="steps")
    x0 = _pixels(handle, image)
    others = None if reference is None else _references(handle, reference, x0)
    curves: dict[str, Curve] = {}
    with torch.no_grad(), capture(handle, names) as acts:
        logits = forward_to(handle, handle.normalize(x0), acts, needs_logits=True)
        ref = {n: acts[n].flatten(1).float() for n in names}
        p0 = torch.softmax(logits.float(), -1)[0]
        scale = {n: ref[n].norm().clamp(min=1e-12) for n in names}
        if others is not None:
            forward_to(handle, handle.normalize(others), acts, needs_logits=True)
            for n in names:
                d = (acts[n].flatten(1).float() - ref[n]).norm(dim=1).mean()
                scale[n] = d.clamp(min=1e-12)
        cls = int(p0.argmax()) if target is None else target
        handle.check_class(cls)
        for i, kind in enumerate(kinds):
            values = grids[kind]
            batch = transform_batch(x0, kind, values)
            out = forward_to(handle, handle.normalize(batch), acts, needs_logits=True)
            dist = {}
            for n in names:
                f = acts[n].flatten(1).float()
                dist[n] = ((f - ref[n]).norm(dim=1) / scale[n]).tolist()
            prob = torch.softmax(out.float(), -1)[:, cls].tolist()
            curves[kind] = Curve(kind, values, dist, prob, batch.detach().cpu())
            yield Step(i, None, batch, {"transform": kind}, len(kinds))
    normalized = "feature length" if others is None else f"{len(others)} other images"
    return Invariance(names, cls, handle.class_name(cls), float(p0[cls]), curves, normalized)


def invariance(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    transforms: Sequence[str] = TRANSFORMS,
    ranges: dict[str, tuple[float, float]] | None = None,
    steps: int = 9,
    target: int | None = None,
    reference: Any = None,
) -> Invariance:
    """Feature distances per layer and the class probability as ``image`` is transformed.

    Parameters
    ----------
    handle : ModelHandle
    image : PIL image or pixel tensor ``(1, C, H, W)``
        Resized to the model's input size.
    layers : list of str, optional
        Default :func:`default_layers`.
    transforms : sequence of str
        Any of ``"translate"``, ``"scale"``, ``"rotate"``.
    ranges : dict, optional
        ``kind -> (low, high)``, overriding :data:`DEFAULT_RANGES`.
    steps : int
        Values per transformation, evenly spaced from low to high (2..64).
    target : int, optional
        The class whose probability is charted (default: the untransformed image's top class).
    reference : pixel tensor ``(N, C, H, W)``, list of PIL images, or "photos", optional
        Other pictures: distances are divided by the mean distance to their features (images
        equal to ``image`` are left out); default: by the length of the image's features.

    Returns
    -------
    Invariance
    """
    return finish(
        invariance_steps(
            handle,
            image,
            layers,
            transforms=transforms,
            ranges=ranges,
            steps=steps,
            target=target,
            reference=reference,
        )
    )


def _references(handle: ModelHandle, reference: Any, x0: torch.Tensor) -> torch.Tensor:
    """The reference pictures as one pixel batch at the input size, without copies of ``x0``."""
    if isinstance(reference, str):
        if reference != "photos":
            raise ValueError(f"reference must be 'photos', images or a tensor, got {reference!r}")
        from ..data import sample_images

        reference = list(sample_images().values())
    if isinstance(reference, torch.Tensor):
        items = list(reference if reference.dim() == 4 else reference.unsqueeze(0))
    else:
        items = list(reference)
    if len(items) > limits.MAX_BATCH:
        raise ValueError(f"at most {limits.MAX_BATCH} reference images, got {len(items)}")
    batch = torch.cat([_pixels(handle, im) for im in items]) if items else x0[:0]
    batch = batch[(batch - x0).abs().flatten(1).amax(1) > 1e-6]
    if batch.shape[0] == 0:
        raise ValueError("no reference image differs from the image")
    h, w = handle.input_size
    limits.check_batch(batch.shape[0], h, w, name="reference images")
    return batch
