"""Layer grids: the activation-maximization image of every unit of a layer, and their cache.

:func:`layer_grid_steps` / :func:`layer_grid` optimize ``batch`` units at a time (one batch
through the network per step) and keep the result in the results cache per model weights, layer,
preset and settings (:func:`grid_cache_path`); a cancelled fill keeps its finished batches and
resumes from them. :func:`cached_unit_image` is how the ActivationMaximization widget reads the
same cache; :func:`render_grid` draws a grid with labelled cells, :func:`order_units` sorts and
filters them, :func:`grid_view` is both with a caption (what the Atlas widget's layer view shows).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ... import cache
from ...models.handle import ModelHandle
from .. import activation_max as am
from .. import objectives as O
from ..blocks.runs import Run, finish
from ..imaging import make_grid, pil_to_tensor, to_pil
from ..optimize import Step
from .settings import am_settings, settings_key

__all__ = [
    "LayerGrid",
    "grid_cache_path",
    "cached_unit_image",
    "layer_grid_steps",
    "layer_grid",
    "render_grid",
    "SORTS",
    "order_units",
    "GridView",
    "grid_view",
]

#: the orders of :func:`order_units`
SORTS = ("unit", "activation", "iou", "label")


def _grid_key(
    handle: ModelHandle, layer: str, preset: str, settings: am.AMSettings, size: int, seed: int
) -> str:
    return cache.cache_key(
        "atlas-am",
        model=handle.fingerprint(),
        layer=layer,
        **settings_key(preset, settings, size, seed),
    )


def grid_cache_path(
    handle: ModelHandle, layer: str, preset: str, settings: am.AMSettings, size: int, seed: int
) -> Path:
    """Where the AM grid of ``layer`` for these settings is kept in the results cache."""
    return cache.cache_path(
        "atlas-am", _grid_key(handle, layer, preset, settings, size, seed), ".pt"
    )


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
    # None (warned once) when the cache folder cannot be used
    key = _grid_key(handle, layer, preset, settings, size, seed)
    return cache.entry_path("atlas-am", key, ".pt")


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
) -> Generator[Step, None, LayerGrid | None]:
    """Fill the AM grid of ``layer``: ``batch`` units optimized together per step.

    Yields every optimization step with a global ``index`` and ``total`` (all batches), the
    current batch's images as ``image`` and ``metrics["units"]`` (the batch's units),
    ``metrics["filled"]`` (units done) and ``metrics["partial"]`` (the grid being filled, for a
    live view), then a last Step; when everything was cached that is the only Step. Returns the
    :class:`LayerGrid` (``grid = yield from layer_grid_steps(...)``). A set ``stop_event`` ends
    it between two steps (it returns None); the finished batches are saved to the cache first.

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
    >>> run = Run(layer_grid_steps(h, "_blocks.4", steps=64))  # doctest: +SKIP
    >>> for s in run:                                           # doctest: +SKIP
    ...     print(s.index, s.total, s.metrics["filled"])
    >>> run.result.complete                                     # doctest: +SKIP
    True
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
                return None
            objective = O.channel(obj_layer, chunk)
            last: Step | None = None
            run = Run(
                am.maximize_steps(
                    handle,
                    objective,
                    preset=preset,
                    size=size,
                    batch=len(chunk),
                    seed=seed,
                    settings=dataclasses.replace(settings),
                    stop_event=stop_event,
                )
            )
            for st in run:
                last = st
                yield Step(
                    index,
                    st.loss_ref,
                    st.image,
                    {"units": chunk, "filled": int(grid.done.sum()), "partial": grid, **st.metrics},
                    total,
                )
                index += 1
            if run.result is None or last is None or last.index + 1 < settings.steps:
                return None  # cancelled mid-batch: this batch is dropped, the others are kept
            pixels, act = run.result.image, run.result.activation
            idx = torch.tensor(chunk)
            grid.images[idx] = pixels.mul(255).round().to(torch.uint8).cpu()
            grid.activation[idx] = act
            grid.done[idx] = True
            changed = True
    finally:
        if changed and path is not None:
            cache.write_entry(path, grid.save)
    yield Step(max(0, index - 1), None, None, {"filled": int(grid.done.sum())}, total)
    return grid


def _completed(steps: Generator[Step, Any, Any], what: str) -> Any:
    """The result of a steps generator run to its end (:func:`~..blocks.runs.finish`), or a
    ``RuntimeError`` saying that ``what`` was not completed (a stop event ended it)."""
    result = finish(steps)
    if result is None:
        raise RuntimeError(f"the {what} was not completed (stopped)")
    return result


def layer_grid(handle: ModelHandle, layer: str, **kwargs: Any) -> LayerGrid:
    """Run :func:`layer_grid_steps` to the end and return the :class:`LayerGrid`."""
    return _completed(layer_grid_steps(handle, layer, **kwargs), "grid")


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
    cols = ncol or math.ceil(math.sqrt(len(order)))
    rows = math.ceil(len(order) / cols)
    return make_grid(imgs, ncol=cols, pad=2), rows, cols


def order_units(
    grid: LayerGrid,
    labels: dict[int, tuple[str, float]] | None = None,
    sort: str = "unit",
    contains: str = "",
) -> list[int]:
    """The units of ``grid`` in display order: those whose label contains ``contains`` (case
    ignored; all when empty), sorted by ``sort`` (one of :data:`SORTS`).

    ``labels`` maps a unit to its ``(concept, IoU)`` (a dissection); "activation" puts units
    not computed yet last, "iou" and "label" put unlabelled units last.

    Examples
    --------
    >>> g = LayerGrid("l", torch.zeros(3, 3, 4, 4, dtype=torch.uint8),
    ...               torch.tensor([1.0, 3.0, 2.0]), torch.tensor([True, True, False]))
    >>> order_units(g, sort="activation")
    [1, 0, 2]
    >>> order_units(g, {0: ("striped", 0.1), 2: ("Stripes", 0.3)}, "iou", contains="strip")
    [2, 0]
    """
    if sort not in SORTS:
        raise ValueError(f"unknown order {sort!r}: use one of {', '.join(SORTS)}")
    labels = labels or {}
    units = list(range(grid.units))
    text = contains.strip().lower()
    if text:
        units = [u for u in units if text in labels.get(u, ("", 0.0))[0].lower()]
    if sort == "activation":
        act, done = grid.activation, grid.done
        units.sort(key=lambda u: -float(act[u]) if bool(done[u]) else float("inf"))
    elif sort == "iou":
        units.sort(key=lambda u: -labels.get(u, ("", 0.0))[1])
    elif sort == "label":
        units.sort(key=lambda u: (labels.get(u, ("~", 0.0))[0], u))
    return units


@dataclass
class GridView:
    """What :func:`grid_view` shows: the picture, its ``rows`` x ``cols`` cells, the unit of
    each cell in order, the units done and a caption."""

    image: torch.Tensor
    rows: int
    cols: int
    units: list[int]
    filled: int
    text: str


def grid_view(
    grid: LayerGrid,
    labels: dict[int, tuple[str, float]] | None = None,
    *,
    sort: str = "unit",
    contains: str = "",
    cell: int = 64,
) -> GridView:
    """The grid of the units :func:`order_units` keeps, each cell labelled with its concept,
    and a caption (units done, order, filter).

    Examples
    --------
    >>> g = LayerGrid("l", torch.zeros(3, 3, 4, 4, dtype=torch.uint8),
    ...               torch.zeros(3), torch.tensor([True, False, True]))
    >>> v = grid_view(g, sort="activation", cell=16)
    >>> v.units, (v.rows, v.cols), v.text
    ([0, 2, 1], (2, 2), 'l: 2/3 units done; showing 3 sorted by activation')
    """
    order = order_units(grid, labels, sort, contains)
    concepts = {u: c for u, (c, _) in (labels or {}).items()}
    image, rows, cols = render_grid(grid, order, labels=concepts, cell=cell)
    filled = int(grid.done.sum())
    text = (
        f"{grid.layer}: {filled}/{grid.units} units done{' (labels: dissection)' if labels else ''}"
        f"; showing {len(order)} sorted by {sort}"
        + (f", label contains {contains!r}" if contains else "")
    )
    return GridView(image, rows, cols, order, filled, text)
