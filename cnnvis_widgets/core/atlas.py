"""The unit atlas: layer- and network-level views that link every method (beyond single neurons).

Qin et al. (2018) close their survey with the observation that the classic methods explain single
neurons, and that visualizing whole layers and networks is the open problem. This module computes,
in batches on the model's device and cancellably (every function has a ``*_steps`` generator that
checks a ``stop_event`` between steps):

* :func:`layer_grid_steps` / :func:`layer_grid`: the activation-maximization image of **every**
  unit of a layer, optimized ``batch`` units at a time (one batch through the network per step),
  kept in the results cache (:mod:`cnnvis_widgets.cache`) per model weights, layer, preset and
  settings. A cancelled fill keeps its finished batches and resumes from them. The
  ActivationMaximization widget consults the same cache (:func:`cached_unit_image`): a unit shown
  here with the same preset and settings appears there at once.
* :func:`network_summary_steps` / :func:`network_summary`: one row per layer with its shape, the
  share of interpretable units (Network Dissection on the generated probe set), the normalized
  feature error of a regularized inversion of a reference photo (Mahendran & Vedaldi), and a strip
  of thumbnails (the reconstruction, then the most active feature maps of the photo).
* :func:`unit_card_steps` / :func:`unit_card`: everything about one unit side by side: its AM
  image and diversity variants, its top-9 dataset patches and their DeconvNet projections (the
  top-k pass shared with the DeconvNet widget's cache), its dissection label, IoU and top probe
  images, and the classes whose logits it feeds most (:func:`class_contributions`).

Examples
--------
>>> from cnnvis_widgets import load_model                        # doctest: +SKIP
>>> from cnnvis_widgets.core import atlas                        # doctest: +SKIP
>>> h = load_model()                                             # doctest: +SKIP
>>> grid = atlas.layer_grid(h, "_blocks.4", steps=64, size=64)   # doctest: +SKIP
>>> grid.images.shape                                            # doctest: +SKIP
torch.Size([40, 3, 64, 64])
>>> card = atlas.unit_card(h, "_blocks.4", 7, steps=64, size=64)  # doctest: +SKIP
>>> card.classes[:2]                                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from .. import cache
from ..models.handle import ModelHandle
from . import activation_max as am
from . import objectives as O
from .hooks import capture, forward_to
from .imaging import colorize, make_grid, pil_to_tensor, to_pil
from .optimize import Step

__all__ = [
    "LayerGrid",
    "LayerSummary",
    "NetworkSummary",
    "UnitCard",
    "am_settings",
    "settings_key",
    "grid_cache_path",
    "cached_unit_image",
    "layer_grid_steps",
    "layer_grid",
    "default_atlas_layers",
    "network_summary_steps",
    "network_summary",
    "class_contributions",
    "unit_card_steps",
    "unit_card",
    "render_grid",
]


# ------------------------------------------------------------------------------------------------
# settings and the cache


def am_settings(
    preset: str = "lucid", steps: int | None = None, lr: float | None = None, **overrides: Any
) -> am.AMSettings:
    """The :class:`~cnnvis_widgets.core.activation_max.AMSettings` of ``preset`` with overrides,
    built like the ActivationMaximization widget builds them (the second jitter follows the
    first, on when ``jitter > 1``, unless ``jitter2`` is given: an explicit setting always wins
    over the preset)."""
    if preset not in am.PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {', '.join(am.PRESETS)}")
    s = dataclasses.replace(am.PRESETS[preset].settings)
    s.update(**overrides)
    if steps is not None:
        s.steps = int(steps)
    if lr is not None:
        s.lr = float(lr)
    if "jitter2" not in overrides:
        s.jitter2 = 4 if s.jitter > 1 else 0
    return s


def settings_key(preset: str, settings: am.AMSettings, size: int, seed: int) -> dict[str, Any]:
    """Everything an AM image depends on besides the model, layer and unit (JSON-able).

    The diversity weight is left out: grid images are optimized without it (each image of a
    batch is another unit). The batch size is left out too: a unit's image from a batch of 32 is
    an equally valid result of the same recipe as one optimized alone (only the random draws of
    the initialization differ).
    """
    d = dataclasses.asdict(settings)
    d.pop("diversity", None)
    d = {k: (round(v, 10) if isinstance(v, float) else v) for k, v in d.items()}
    return {"preset": preset, "size": int(size), "seed": int(seed), "settings": d}


def _fingerprint(handle: ModelHandle) -> str:
    return handle.fingerprint()


def grid_cache_path(
    handle: ModelHandle, layer: str, preset: str, settings: am.AMSettings, size: int, seed: int
) -> Path:
    """Where the AM grid of ``layer`` for these settings is kept in the results cache."""
    key = cache.cache_key(
        "atlas-am",
        model=_fingerprint(handle),
        layer=layer,
        **settings_key(preset, settings, size, seed),
    )
    return cache.cache_path("atlas-am", key, ".pt")


# ------------------------------------------------------------------------------------------------
# layer grids


@dataclass
class LayerGrid:
    """The activation-maximization images of the units of one layer.

    Attributes
    ----------
    layer : str
    images : torch.Tensor
        ``(U, C, S, S)`` uint8 pixel images, one per unit (zeros where not done).
    activation : torch.Tensor
        ``(U,)`` objective value of each final image without transforms (NaN where not done).
    done : torch.Tensor
        ``(U,)`` bool: the unit's image is computed.
    key : dict
        The settings the images depend on (:func:`settings_key`).
    """

    layer: str
    images: torch.Tensor
    activation: torch.Tensor
    done: torch.Tensor
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> int:
        """Number of units of the layer."""
        return int(self.images.shape[0])

    @property
    def complete(self) -> bool:
        """Every unit's image is computed."""
        return bool(self.done.all())

    def pixels(self, unit: int) -> torch.Tensor:
        """The unit's image, pixel space ``(C, S, S)`` float on the CPU."""
        if not 0 <= int(unit) < self.units:
            raise IndexError(
                f"unit {unit} is out of range for layer {self.layer!r}: valid 0..{self.units - 1}"
            )
        if not bool(self.done[int(unit)]):
            raise KeyError(f"unit {unit} of {self.layer!r} is not computed yet")
        return self.images[int(unit)].float().div(255)

    def save(self, path: str | Path) -> Path:
        """Write atomically (tensors and plain values only)."""
        return cache.save_tensors(
            path,
            {
                "format": "cnnvis-atlas-grid-1",
                "layer": self.layer,
                "images": self.images,
                "activation": self.activation,
                "done": self.done,
                "key": repr(self.key),
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> LayerGrid:
        """Read what :meth:`save` wrote (``weights_only=True``)."""
        d = cache.load_tensors(path)
        if not isinstance(d, dict) or d.get("format") != "cnnvis-atlas-grid-1":
            raise ValueError(f"{str(path)!r} is not a saved atlas grid")
        return cls(d["layer"], d["images"], d["activation"], d["done"].bool(), {})


def _load_grid(path: Path | None) -> LayerGrid | None:
    # no entry, a damaged one (warned once: recomputed and overwritten) or no cache folder
    return cache.read_entry(path, LayerGrid.load)


def _grid_entry(
    handle: ModelHandle, layer: str, preset: str, settings: am.AMSettings, size: int, seed: int
) -> Path | None:
    try:
        return grid_cache_path(handle, layer, preset, settings, size, seed)
    except OSError:
        return cache.entry_path("atlas-am", "unusable", ".pt")  # None, with the warning


def cached_unit_image(
    handle: ModelHandle,
    layer: str,
    unit: int,
    *,
    preset: str,
    settings: am.AMSettings,
    size: int,
    seed: int,
) -> torch.Tensor | None:
    """The unit's AM image ``(1, C, S, S)`` from the atlas cache, or None when not computed
    with exactly these settings (used by the ActivationMaximization widget)."""
    try:
        path = grid_cache_path(handle, layer, preset, settings, size, seed)
    except Exception:  # noqa: BLE001 - never let the cache break a run
        return None
    grid = _load_grid(path)
    if grid is None or not 0 <= int(unit) < grid.units or not bool(grid.done[int(unit)]):
        return None
    return grid.pixels(int(unit)).unsqueeze(0)


def layer_grid_steps(
    handle: ModelHandle,
    layer: str,
    *,
    preset: str = "lucid",
    steps: int | None = 128,
    size: int = 64,
    batch: int = 32,
    seed: int = 0,
    lr: float | None = None,
    units: Sequence[int] | None = None,
    use_cache: bool = True,
    stop_event: threading.Event | None = None,
    **overrides: Any,
) -> Iterator[Step]:
    """Fill the AM grid of ``layer``: ``batch`` units optimized together per step.

    Yields every optimization step with a global ``index`` and ``total`` (all batches), the
    current batch's images as ``image`` and ``metrics["units"]`` (the batch's units),
    ``metrics["filled"]`` (units done). The last Step carries ``metrics["grid"]`` (a
    :class:`LayerGrid`); when everything was cached it is the only Step. A set ``stop_event``
    ends it between two steps; the finished batches are saved to the cache first.

    Parameters
    ----------
    handle : ModelHandle
    layer : str
        A layer (``KeyError`` lists the nearest names).
    preset, steps, lr, **overrides
        The recipe (:data:`~cnnvis_widgets.core.activation_max.PRESETS`, fields of AMSettings).
    size : int
        Side of every image.
    batch : int
        Units per batch (memory: ``batch`` images of ``size`` through the network at once).
    seed : int
        Seeds every batch.
    units : sequence of int, optional
        Only these units (default all); the others stay not done.
    use_cache : bool
        Read and write the results cache.

    Examples
    --------
    >>> for s in layer_grid_steps(h, "_blocks.4", steps=64):  # doctest: +SKIP
    ...     print(s.index, s.total, s.metrics["filled"])
    """
    info = handle.layer(layer)
    n = info.channels
    settings = am_settings(preset, steps, lr, **overrides)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    todo_units = list(range(n)) if units is None else [int(u) for u in units]
    for u in todo_units:
        handle.check_unit(layer, u)
    key = settings_key(preset, settings, size, seed)
    path = _grid_entry(handle, layer, preset, settings, size, seed) if use_cache else None
    grid = _load_grid(path)
    if grid is None or grid.units != n or tuple(grid.images.shape[-2:]) != (size, size):
        grid = LayerGrid(
            layer,
            torch.zeros(n, handle.in_channels, size, size, dtype=torch.uint8),
            torch.full((n,), float("nan")),
            torch.zeros(n, dtype=torch.bool),
            key,
        )
    grid.key = key
    todo = [u for u in todo_units if not bool(grid.done[u])]
    chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    total = len(chunks) * settings.steps
    index = 0
    changed = False
    obj_layer = layer
    try:
        for chunk in chunks:
            if stop_event is not None and stop_event.is_set():
                return
            objective = O.channel(obj_layer, chunk)
            last: Step | None = None
            for st in am.maximize_steps(
                handle,
                objective,
                preset=preset,
                size=size,
                batch=len(chunk),
                seed=seed,
                settings=dataclasses.replace(settings),
                stop_event=stop_event,
            ):
                last = st
                yield Step(
                    index,
                    st.loss,
                    st.image,
                    {"units": chunk, "filled": int(grid.done.sum()), "partial": grid, **st.metrics},
                    total,
                )
                index += 1
            if last is None or last.image is None or last.index + 1 < settings.steps:
                return  # cancelled mid-batch: this batch is dropped, the others are kept
            pixels = last.image.detach().clamp(0, 1)
            act = am.evaluate(handle, objective, pixels)
            idx = torch.tensor(chunk)
            grid.images[idx] = pixels.mul(255).round().to(torch.uint8).cpu()
            grid.activation[idx] = act
            grid.done[idx] = True
            changed = True
    finally:
        if changed and path is not None:
            cache.write_entry(path, grid.save)
    yield Step(max(0, index - 1), None, None, {"grid": grid, "filled": int(grid.done.sum())}, total)


def layer_grid(handle: ModelHandle, layer: str, **kwargs: Any) -> LayerGrid:
    """Run :func:`layer_grid_steps` to the end and return the :class:`LayerGrid`."""
    grid = None
    for st in layer_grid_steps(handle, layer, **kwargs):
        grid = st.metrics.get("grid", grid)
    if grid is None:
        raise RuntimeError("the grid was not completed (stopped)")
    return grid


def _wrap_label(text: str, width_px: int, measure) -> list[str]:
    """``text`` broken into lines no wider than ``width_px`` (at spaces; a word that alone is too
    wide is broken inside), so nothing burnt into a cell is cut."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if measure(candidate) <= width_px:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:  # hard break of a word wider than the cell
            if measure(line + ch) > width_px and line:
                lines.append(line)
                line = ""
            line += ch
    if line:
        lines.append(line)
    return lines


def _label_cells(cells: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """Draw each cell's label at its bottom (white text on a dark band), wrapped onto as many
    lines as it needs: a label is never cut (the band grows, up to the whole cell)."""
    from PIL import ImageDraw

    out = []
    for img, text in zip(cells, labels):
        pil = to_pil(img)
        if text:
            d = ImageDraw.Draw(pil)
            w, h = pil.size
            lines = _wrap_label(text, w - 4, d.textlength)
            line_h = 10
            band = min(h, line_h * len(lines) + 1)
            d.rectangle([0, h - band, w, h], fill=(0, 0, 0))
            for i, line in enumerate(lines):
                d.text((2, h - band + i * line_h), line, fill=(255, 255, 255))
        out.append(pil_to_tensor(pil)[0])
    return torch.stack(out)


def render_grid(
    grid: LayerGrid,
    units: Sequence[int] | None = None,
    *,
    labels: dict[int, str] | None = None,
    cell: int = 64,
    ncol: int | None = None,
) -> tuple[torch.Tensor, int, int]:
    """The grid image of ``units`` (default all) in that order: ``(pixels (3, H, W), rows, cols)``.

    Cells of units not computed yet are grey; each cell is labelled with the unit number and its
    label in ``labels`` (e.g. the dissection concept).
    """
    order = list(range(grid.units)) if units is None else [int(u) for u in units]
    if not order:
        return torch.full((3, cell, cell), 0.93), 1, 1
    imgs = grid.images[order].float().div(255)
    if imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1)
    imgs = torch.where(grid.done[order].view(-1, 1, 1, 1), imgs, torch.full_like(imgs, 0.5))
    if imgs.shape[-1] != cell:
        imgs = F.interpolate(imgs, size=(cell, cell), mode="bilinear", antialias=True)
    names = [f"{u} {(labels or {}).get(u, '')}".strip() for u in order]
    imgs = _label_cells(imgs.clamp(0, 1), names)
    import math

    cols = ncol or math.ceil(math.sqrt(len(order)))
    rows = math.ceil(len(order) / cols)
    return make_grid(imgs, ncol=cols, pad=2), rows, cols


# ------------------------------------------------------------------------------------------------
# network summary


def default_atlas_layers(handle: ModelHandle, limit: int = 24) -> list[str]:
    """The network's top-level blocks (or its conv-like layers), at most ``limit`` of them."""
    layers = handle.conv_layers()
    if not layers:
        raise ValueError(f"model {handle.name!r} has no layer with a spatial output")
    picks: list[Any] = []
    for kind in ("block", "act", "conv"):
        picks = [li for li in layers if li.kind == kind and li.name.count(".") <= 1]
        picks = [li for li in picks if not any(li.name.startswith(o.name + ".") for o in picks)]
        if len(picks) >= 2:
            break
    if len(picks) < 2:
        picks = layers
    if len(picks) > limit:
        picks = [picks[round(i * (len(picks) - 1) / (limit - 1))] for i in range(limit)]
    return [li.name for li in picks]


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
    (or None) and the reference photo (pixels)."""

    layers: list[LayerSummary]
    dissection: Any = None
    reference: torch.Tensor | None = None

    def rows(self) -> list[dict[str, Any]]:
        """Table rows, one per layer."""
        return [s.row() for s in self.layers]

    def strips(self, thumb: int = 48) -> torch.Tensor:
        """All strips stacked, one row per layer (``(3, n*thumb', W)``)."""
        rows = [s.strip for s in self.layers if s.strip is not None]
        if not rows:
            return torch.full((3, thumb, thumb), 0.93)
        width = max(r.shape[-1] for r in rows)
        padded = [F.pad(r, (0, width - r.shape[-1], 0, 2), value=1.0) for r in rows]
        return torch.cat(padded, dim=1)


def _reference_pixels(handle: ModelHandle, reference: Any, size: int) -> torch.Tensor:
    from .inversion import target_pixels

    if reference is None or isinstance(reference, str):
        from ..data import sample_image

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
) -> Iterator[Step]:
    """Compute the network view; yields progress Steps (``image`` None), the last one carries
    ``metrics["summary"]`` (a :class:`NetworkSummary`).

    Stages: a dissection of all ``layers`` in one pass over the generated probe set
    (``dissection=True``; or pass a :class:`~cnnvis_widgets.core.dissection.Dissection`; False
    skips it), a batched regularized inversion of ``reference`` from every layer
    (``inversion_steps`` steps at ``inversion_size``), one forward pass for the feature-map
    thumbnails. Dissection and inversion results are cached per model weights and settings.
    """
    from . import dissection as nd
    from . import inversion as inv

    names = list(layers) if layers is not None else default_atlas_layers(handle)
    infos = [handle.layer(n) for n in names]
    rows = [LayerSummary(i.name, i.kind, i.channels, i.height, i.width) for i in infos]
    spatial = [i.name for i in infos if i.spatial]
    result: Any = None
    fp = _fingerprint(handle)
    index = 0
    total = (1 if dissection is True else 0) + (inversion_steps if inversion else 0) + 1

    # 1. dissection
    if dissection is True and spatial:
        from ..data.concepts import probe_set

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
            for st in nd.dissect_steps(
                handle, spatial, probe, stop_event=stop_event, batch_size=16
            ):
                if "result" in st.metrics and st.metrics["result"] is not None:
                    result = st.metrics["result"]
                yield Step(index, None, None, {"stage": "dissection"}, total)
            if stop_event is not None and stop_event.is_set():
                return
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
                yield Step(index, st.loss, None, {"stage": "inversion"}, total)
                index += 1
            if stop_event is not None and stop_event.is_set():
                return
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
    yield Step(
        index,
        None,
        None,
        {"stage": "done", "summary": NetworkSummary(rows, result, target.cpu())},
        total,
    )


def network_summary(handle: ModelHandle, layers: Sequence[str] | None = None, **kwargs: Any):
    """Run :func:`network_summary_steps` to the end and return the :class:`NetworkSummary`.

    Examples
    --------
    >>> s = network_summary(h, ["_blocks.2", "_blocks.8"], inversion_steps=32)  # doctest: +SKIP
    >>> s.rows()[0]["feature_error"]                                        # doctest: +SKIP
    """
    out = None
    for st in network_summary_steps(handle, layers, **kwargs):
        out = st.metrics.get("summary", out)
    if out is None:
        raise RuntimeError("the summary was not completed (stopped)")
    return out


# ------------------------------------------------------------------------------------------------
# unit cards


_JVP_LOCK = threading.Lock()
_JVP_READY = False


def _load_jvp_decompositions() -> None:
    """Import torch's forward-AD decompositions once, without its ``FutureWarning``.

    torch's first ``fwAD.make_dual`` imports ``torch._decomp.decompositions_for_jvp``, which calls
    the deprecated ``torch.jit.script`` and warns "`torch.jit.script` is deprecated" (a red cell
    output in a notebook). Only that warning, only for that import, is silenced here.
    """
    global _JVP_READY
    with _JVP_LOCK:
        if _JVP_READY:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
            )
            try:
                from torch._decomp import decompositions_for_jvp  # noqa: F401
            except ImportError:  # a torch without it: make_dual does not load it either
                pass
        _JVP_READY = True


def class_contributions(
    handle: ModelHandle, layer: str, unit: int, pixels: torch.Tensor
) -> torch.Tensor:
    """How much ``unit`` of ``layer`` feeds every logit, averaged over ``pixels``, ``(classes,)``.

    Gradient-based (first-order Taylor, "gradient x activation"): for each class ``c`` the sum
    over positions of ``a_u(y, x) * d logit_c / d a_u(y, x)``, i.e. the change of the logit
    predicted by the gradient when the unit is switched off. All classes come from **one**
    forward-mode pass (the activation map of the unit is the tangent), not one backward pass
    per class. When the layer reaches the logits through global average pooling and one linear
    layer this equals ``w[c, u] * mean(a_u)`` exactly (the weight-based reading). Models with an
    operation that forward-mode AD does not support fall back to the exact ablation difference
    ``logit(x) - logit(x with the unit zeroed)`` (two forward passes).
    """
    handle.check_unit(layer, int(unit))
    x = handle.normalize(pixels.to(handle.device, torch.float32))
    module = handle.module(layer)
    u = int(unit)

    def run(mode: str) -> torch.Tensor:
        def hook(mod: torch.nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros_like(out)
            mask[:, u] = 1.0
            if mode == "jvp":
                return fwAD.make_dual(out.detach(), out.detach() * mask)
            if mode == "ablate":
                return out * (1 - mask)
            return out

        h = module.register_forward_hook(hook)
        try:
            if mode == "jvp":
                _load_jvp_decompositions()
                with fwAD.dual_level():
                    logits = handle.net(x)
                    if isinstance(logits, (tuple, list)):
                        logits = logits[0]
                    tangent = fwAD.unpack_dual(logits).tangent
                    if tangent is None:
                        return torch.zeros(logits.shape[-1], device=logits.device)
                    return tangent.detach().float().mean(0)
            logits = handle.net(x)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            return logits.detach().float()
        finally:
            h.remove()

    with torch.no_grad():
        try:
            return run("jvp").cpu()
        except (RuntimeError, NotImplementedError):
            full, ablated = run("plain"), run("ablate")
            return (full - ablated).mean(0).cpu()


@dataclass
class UnitCard:
    """Everything about one unit (see :func:`unit_card`).

    Attributes
    ----------
    layer : str
    unit : int
    am_image : torch.Tensor
        ``(C, S, S)`` its activation-maximization image (from the layer grid when cached).
    variants : torch.Tensor
        ``(V, C, S, S)`` diverse AM images of the same unit (diversity term across the batch).
    entries : list
        Its top-9 dataset images (:class:`~cnnvis_widgets.core.topk.Entry`).
    patches : list of torch.Tensor
        The receptive-field patches of those images, best first.
    projections : list of torch.Tensor
        Their DeconvNet projections (pixel-coloured), cropped like the patches.
    projection_note : str
        Empty, or why there are no projections (e.g. an activation DeconvNet cannot pass).
    dissection : dict or None
        ``Dissection.unit(...)``: concept, category, IoU, top concepts.
    probe_examples : torch.Tensor or None
        Its top probe images with the thresholded map and concept outlines (3, H, W).
    classes : list of (int, str, float)
        The classes its activation feeds most (:func:`class_contributions` over the top-9
        images), largest first.
    """

    layer: str
    unit: int
    am_image: torch.Tensor
    variants: torch.Tensor
    entries: list[Any]
    patches: list[torch.Tensor]
    projections: list[torch.Tensor]
    projection_note: str = ""
    dissection: dict[str, Any] | None = None
    probe_examples: torch.Tensor | None = None
    classes: list[tuple[int, str, float]] = field(default_factory=list)

    def text(self) -> str:
        """A plain-text description."""
        lines = [f"{self.layer} unit {self.unit}"]
        if self.dissection:
            d = self.dissection
            lines.append(
                f"dissection: {d['concept']} ({d['category']}), IoU {d['iou']:.3f}"
                + (" - interpretable" if d["interpretable"] else " - below the threshold")
            )
            runners = ", ".join(f"{c} {v:.3f}" for c, v in d["top_concepts"][1:4])
            if runners:
                lines.append(f"  runners-up: {runners}")
        else:
            lines.append("dissection: not computed for this layer")
        if self.entries:
            lines.append(
                "top images: " + ", ".join(f"{e.name} ({e.value:.3g})" for e in self.entries[:9])
            )
        if self.projection_note:
            lines.append(f"projections: {self.projection_note}")
        if self.classes:
            lines.append("feeds most: " + ", ".join(f"{n} ({v:+.3g})" for _, n, v in self.classes))
        return "\n".join(lines)


def _square(p: torch.Tensor, size: int) -> torch.Tensor:
    from .imaging import letterbox

    return letterbox(p.float().clamp(0, 1), size)


def unit_card_steps(
    handle: ModelHandle,
    layer: str,
    unit: int,
    *,
    preset: str = "lucid",
    steps: int | None = 128,
    size: int = 64,
    seed: int = 0,
    lr: float | None = None,
    variants: int = 4,
    diversity: float = 1.0,
    dataset: Any = None,
    n_images: int = 64,
    dissection: Any = None,
    probe: Any = None,
    top_classes: int = 5,
    use_cache: bool = True,
    stop_event: threading.Event | None = None,
) -> Iterator[Step]:
    """Compute a :class:`UnitCard`; yields a Step per optimization step of the variants run
    (``image``: the variants) and one per top-k batch; the last carries ``metrics["card"]``.

    ``dataset``: the top-9 dataset (default ``augmented_samples(n_images)``, the DeconvNet
    widget's default); its pass is shared through the results cache. ``dissection``: a
    :class:`~cnnvis_widgets.core.dissection.Dissection` covering ``layer`` (and ``probe``, its
    probe set, for the top probe images), or None.
    """
    from ..data.datasets import as_dataset, augmented_samples
    from . import dissection as nd
    from . import topk as T
    from .projections import unit_projections

    handle.check_unit(layer, int(unit))
    u = int(unit)
    settings = am_settings(preset, steps, lr)
    # 1. AM image (atlas cache) and diversity variants (cached too)
    main = (
        cached_unit_image(handle, layer, u, preset=preset, settings=settings, size=size, seed=seed)
        if use_cache
        else None
    )
    vkey = cache.cache_key(
        "atlas-variants",
        model=_fingerprint(handle),
        layer=layer,
        unit=u,
        variants=int(variants),
        diversity=float(diversity),
        **settings_key(preset, settings, size, seed),
    )
    vpath = cache.entry_path("atlas-variants", vkey, ".pt") if use_cache else None
    var = cache.read_entry(vpath, lambda p: cache.load_tensors(p)["images"].float().div(255))
    index = 0
    if var is None:
        last: Step | None = None
        vs = dataclasses.replace(settings)
        vs.diversity = float(diversity)
        for st in am.maximize_steps(
            handle,
            O.channel(layer, [u] * max(1, variants)),
            preset=preset,
            size=size,
            batch=max(1, variants),
            seed=seed,
            settings=vs,
            stop_event=stop_event,
        ):
            last = st
            yield Step(index, st.loss, st.image, {"stage": "variants"}, 0)
            index += 1
        if stop_event is not None and stop_event.is_set():
            return
        assert last is not None and last.image is not None
        var = last.image.detach().clamp(0, 1).cpu()
        images = var.mul(255).round().to(torch.uint8)
        cache.write_entry(vpath, lambda p: cache.save_tensors(p, {"images": images}))
    if main is None:
        main = var[:1]
    # 2. top-9 patches (one pass ranks every unit; shared with the DeconvNet widget) + projections
    info = handle.layer(layer)
    entries: list[Any] = []
    patches: list[torch.Tensor] = []
    projections: list[torch.Tensor] = []
    note = ""
    imgs = None
    if info.spatial:
        ds = as_dataset(dataset) if dataset is not None else None
        if ds is None:
            ds = augmented_samples(n=n_images, size=max(handle.input_size), seed=0)
        top = T.load_cached_topk(handle, layer, ds.key, 9, None) if use_cache else None
        if top is None:
            for st in T.top_k_steps(handle, layer, ds, k=9, stop_event=stop_event):
                if "topk" in st.metrics:
                    top = st.metrics["topk"]
                yield Step(index, None, None, {"stage": "top-9"}, 0)
                index += 1
            if stop_event is not None and stop_event.is_set():
                return
            assert top is not None
            if use_cache:
                T.save_cached_topk(handle, layer, ds.key, 9, None, top)
        try:
            up = unit_projections(handle, top, u, ds, "deconvnet")
        except ValueError as exc:
            up = unit_projections(handle, top, u, ds, "deconvnet", project=False)
            up.note = str(exc)
        entries, imgs, patches = up.entries, up.images, up.patches
        projections, note = up.projection_patches, up.note
    if stop_event is not None and stop_event.is_set():
        return
    # 3. dissection
    dinfo = None
    examples = None
    if dissection is not None and layer in getattr(dissection, "layers", []):
        dinfo = dissection.unit(layer, u)
        if probe is not None:
            try:
                ex = nd.unit_examples(handle, dissection, probe, layer, u, k=4)
                examples = nd.render_examples(ex, ncol=4)
            except (RuntimeError, KeyError):
                examples = None
    # 4. classes
    classes: list[tuple[int, str, float]] = []
    if top_classes > 0:
        src = imgs if imgs is not None and len(imgs) else main
        contrib = class_contributions(handle, layer, u, src)
        k = min(int(top_classes), contrib.numel())
        vals, idx = contrib.topk(k)
        classes = [(int(i), handle.class_name(int(i)), float(v)) for v, i in zip(vals, idx)]
    card = UnitCard(
        layer,
        u,
        main[0],
        var,
        entries,
        patches,
        projections,
        note,
        dinfo,
        examples,
        classes,
    )
    yield Step(index, None, None, {"stage": "done", "card": card}, index + 1)


def unit_card(handle: ModelHandle, layer: str, unit: int, **kwargs: Any) -> UnitCard:
    """Run :func:`unit_card_steps` to the end and return the :class:`UnitCard`.

    Examples
    --------
    >>> card = unit_card(h, "_blocks.4", 7, steps=64, size=64)   # doctest: +SKIP
    >>> print(card.text())                                      # doctest: +SKIP
    """
    card = None
    for st in unit_card_steps(handle, layer, unit, **kwargs):
        card = st.metrics.get("card", card)
    if card is None:
        raise RuntimeError("the unit card was not completed (stopped)")
    return card


def card_images(card: UnitCard, cell: int = 64) -> dict[str, torch.Tensor]:
    """Pixel images of a card for display: ``am`` (the image, then the variants), ``patches``
    and ``projections`` (3x3 grids), ``probe`` (top probe images, when dissected)."""
    out: dict[str, torch.Tensor] = {}
    am_pics = [_square(card.am_image, cell)] + [_square(v, cell) for v in card.variants]
    out["am"] = make_grid(torch.stack(am_pics), ncol=len(am_pics))
    blank = torch.full((3, cell, cell), 0.93)
    for name, pics in (("patches", card.patches), ("projections", card.projections)):
        cells = [_square(p, cell) for p in pics[:9]]
        cells += [blank] * (9 - len(cells))
        out[name] = make_grid(torch.stack(cells), ncol=3)
    if card.probe_examples is not None:
        out["probe"] = card.probe_examples
    return out
