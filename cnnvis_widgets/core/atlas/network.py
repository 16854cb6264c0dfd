"""The network view: one row per layer with its shape, the share of interpretable units
(Network Dissection on the generated probe set), the normalized feature error of a regularized
inversion of a reference photo (Mahendran & Vedaldi), and a strip of thumbnails (the
reconstruction, then the most active feature maps of the photo).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ... import cache
from ...models.handle import ModelHandle
from ...models.layers import atlas_layers as default_atlas_layers
from ..blocks.runs import Run
from ..hooks import capture, forward_to
from ..imaging import colorize
from ..optimize import Step
from .grid import _completed

__all__ = [
    "LayerSummary",
    "NetworkSummary",
    "default_atlas_layers",
    "network_summary_steps",
    "network_summary",
]


@dataclass
class LayerSummary:
    """One row of the network view.

    Attributes
    ----------
    layer, kind : str
    channels : int
    height, width : int or None
    interpretable : float or None
        Share of units whose best IoU reaches the dissection threshold (None: not dissected).
    interpretable_units : int or None
    feature_error : float or None
        ``||phi(x)-phi0||^2/||phi0||^2`` of the regularized inversion of the reference photo.
    strip : torch.Tensor or None
        ``(3, T, k*T)`` thumbnails: the reconstruction, then the most active feature maps.
    """

    layer: str
    kind: str
    channels: int
    height: int | None
    width: int | None
    interpretable: float | None = None
    interpretable_units: int | None = None
    feature_error: float | None = None
    strip: torch.Tensor | None = None

    def row(self) -> dict[str, Any]:
        """JSON-able table row."""
        shape = f"{self.channels}x{self.height}x{self.width}" if self.height else f"{self.channels}"
        return {
            "layer": self.layer,
            "kind": self.kind,
            "shape": shape,
            "channels": self.channels,
            "interpretable": (
                None if self.interpretable is None else round(float(self.interpretable), 4)
            ),
            "feature_error": (
                None if self.feature_error is None else round(float(self.feature_error), 4)
            ),
        }


@dataclass
class NetworkSummary:
    """Result of :func:`network_summary`: one :class:`LayerSummary` per layer, the dissection
    (or None), the reference photo (pixels) and the probe set of the dissection (None when it
    was given, not made)."""

    layers: list[LayerSummary]
    dissection: Any = None
    reference: torch.Tensor | None = None
    probe: Any = None

    def rows(self) -> list[dict[str, Any]]:
        """Table rows, one per layer."""
        return [s.row() for s in self.layers]

    def labels(self, layer: str) -> dict[int, tuple[str, float]]:
        """Unit -> ``(concept, IoU)`` of ``layer`` from the dissection (empty when the layer
        was not dissected)."""
        d = self.dissection
        if d is None or layer not in d.layers:
            return {}
        return {r["unit"]: (r["concept"], r["iou"]) for r in d.units(layer)}

    def strips(self, thumb: int = 48) -> torch.Tensor:
        """All strips stacked, one row per layer (``(3, n*thumb', W)``)."""
        rows = [s.strip for s in self.layers if s.strip is not None]
        if not rows:
            return torch.full((3, thumb, thumb), 0.93)
        width = max(r.shape[-1] for r in rows)
        padded = [F.pad(r, (0, width - r.shape[-1], 0, 2), value=1.0) for r in rows]
        return torch.cat(padded, dim=1)


def _reference_pixels(handle: ModelHandle, reference: Any, size: int) -> torch.Tensor:
    from ..inversion import target_pixels

    if reference is None or isinstance(reference, str):
        from ...data import sample_image

        reference = sample_image(reference or "cat")
    return target_pixels(handle, reference, size)


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().float().mul(255).round().numpy().tobytes()).hexdigest()[
        :16
    ]


def _thumb(x: torch.Tensor, size: int) -> torch.Tensor:
    x = x.float()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)


def network_summary_steps(
    handle: ModelHandle,
    layers: Sequence[str] | None = None,
    *,
    reference: Any = "cat",
    dissection: bool | Any = True,
    probe_images: int = 64,
    probe_size: int | None = None,
    inversion: bool = True,
    inversion_steps: int = 64,
    inversion_size: int = 96,
    thumbs: int = 4,
    thumb: int = 48,
    use_cache: bool = True,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, NetworkSummary | None]:
    """Compute the network view; yields progress Steps (``image`` None, ``metrics["stage"]``)
    and returns the :class:`NetworkSummary` (None when ``stop_event`` ended it).

    Stages: a dissection of all ``layers`` in one pass over the generated probe set
    (``dissection=True``; or pass a :class:`~cnnvis_widgets.core.dissection.Dissection`; False
    skips it), a batched regularized inversion of ``reference`` from every layer
    (``inversion_steps`` steps at ``inversion_size``), one forward pass for the feature-map
    thumbnails. Dissection and inversion results are cached per model weights and settings.
    """
    from .. import dissection as nd
    from .. import inversion as inv

    names = list(layers) if layers is not None else default_atlas_layers(handle)
    infos = [handle.layer(n) for n in names]
    rows = [LayerSummary(i.name, i.kind, i.channels, i.height, i.width) for i in infos]
    spatial = [i.name for i in infos if i.spatial]
    result: Any = None
    probe: Any = None
    fp = handle.fingerprint()
    index = 0
    total = (1 if dissection is True else 0) + (inversion_steps if inversion else 0) + 1

    # 1. dissection
    if dissection is True and spatial:
        from ...data.concepts import probe_set

        psize = int(probe_size or max(handle.input_size))
        probe = probe_set(probe_images, size=psize, seed=0)
        path = None
        if use_cache:
            key = cache.cache_key(
                "atlas-dissection", model=fp, layers=spatial, probe=probe.describe()
            )
            path = cache.entry_path("atlas-dissection", key, "")
            result = cache.read_entry(path, nd.Dissection.load)
        if result is None:
            run = Run(
                nd.dissect_steps(handle, spatial, probe, stop_event=stop_event, batch_size=16)
            )
            for _ in run:
                yield Step(index, None, None, {"stage": "dissection"}, total)
            result = run.result
            if stop_event is not None and stop_event.is_set():
                return None
            if result is None or not getattr(result, "complete", True):
                raise RuntimeError("the dissection did not complete")
            cache.write_entry(path, result.save)
        index += 1
    elif dissection not in (True, False, None):
        result = dissection
    if result is not None:
        for s in rows:
            if s.layer in result.layers:
                ld = result[s.layer]
                good = ld.best_iou >= result.iou_threshold
                s.interpretable = float(good.mean()) if ld.units else 0.0
                s.interpretable_units = int(good.sum())

    # 2. inversion of the reference photo from every layer (one batch)
    target = _reference_pixels(handle, reference, inversion_size)
    recon: dict[str, torch.Tensor] = {}
    if inversion and spatial:
        key = cache.cache_key(
            "atlas-inversion",
            model=fp,
            layers=spatial,
            reference=_digest(target),
            steps=inversion_steps,
            size=inversion_size,
        )
        path = cache.entry_path("atlas-inversion", key, ".pt") if use_cache else None

        def load_inversion(p: Path) -> dict:
            d = cache.load_tensors(p)
            if d["images"].shape[0] != len(spatial) or d["errors"].shape != (len(spatial),):
                raise ValueError("entry of another shape")
            return d

        saved = cache.read_entry(path, load_inversion)
        if saved is None:
            last: Step | None = None
            for st in inv.invert_layers_steps(
                handle,
                target,
                spatial,
                steps=inversion_steps,
                stop_event=stop_event,
            ):
                last = st
                yield Step(index, st.loss_ref, None, {"stage": "inversion"}, total)
                index += 1
            if stop_event is not None and stop_event.is_set():
                return None
            assert last is not None and last.image is not None
            images = last.image.detach().clamp(0, 1)
            errors = []
            for i, name in enumerate(spatial):
                phi0 = inv.layer_features(handle, target, name)[name]
                errors.append(float(inv.feature_error(handle, images[i : i + 1], name, phi0)[0]))
            saved = {"images": images.cpu(), "errors": torch.tensor(errors)}
            cache.write_entry(path, lambda p: cache.save_tensors(p, saved))
        else:
            index += inversion_steps
        for i, name in enumerate(spatial):
            recon[name] = saved["images"][i]
            for s in rows:
                if s.layer == name:
                    s.feature_error = float(saved["errors"][i])

    # 3. thumbnails: the reconstruction, then the most active feature maps of the photo
    with torch.no_grad(), capture(handle, spatial, stop_early=True) as acts:
        forward_to(handle, handle.normalize(target), acts, needs_logits=False)
        feats = {n: acts[n].detach().float().cpu() for n in spatial}
    for s in rows:
        if s.layer not in feats:
            continue
        a = feats[s.layer][0]
        pics = [_thumb(recon[s.layer], thumb)] if s.layer in recon else [_thumb(target[0], thumb)]
        top = a.flatten(1).mean(1).topk(min(thumbs, a.shape[0])).indices
        for c in top.tolist():
            m = a[c]
            m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
            heat = colorize(m.unsqueeze(0))
            pics.append(_thumb(heat[0] if heat.dim() == 4 else heat, thumb))
        strip = torch.cat([F.pad(p, (1, 1, 1, 1), value=1.0) for p in pics], dim=2)
        s.strip = strip
    yield Step(index, None, None, {"stage": "done"}, total)
    return NetworkSummary(rows, result, target.cpu(), probe)


def network_summary(handle: ModelHandle, layers: Sequence[str] | None = None, **kwargs: Any):
    """Run :func:`network_summary_steps` to the end and return the :class:`NetworkSummary`.

    Examples
    --------
    >>> s = network_summary(h, ["_blocks.2", "_blocks.8"], inversion_steps=32)  # doctest: +SKIP
    >>> s.rows()[0]["feature_error"]                                        # doctest: +SKIP
    """
    return _completed(network_summary_steps(handle, layers, **kwargs), "summary")
