"""Layer grids: the activation-maximization image of every unit of a layer, and their cache.

:func:`layer_grid_steps` / :func:`layer_grid` optimize ``batch`` units at a time (one batch
through the network per step) and keep the result in the results cache per model weights, layer,
preset and settings (:func:`grid_cache_path`); a cancelled fill keeps its finished batches and
resumes from them. :func:`cached_unit_image` is how the ActivationMaximization widget reads the
same cache; :func:`render_grid` draws a grid with labelled cells.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ... import cache
from ...models.handle import ModelHandle
from .. import activation_max as am
from .. import objectives as O
from ..blocks.runs import Run
from ..imaging import make_grid, pil_to_tensor, to_pil
from ..optimize import Step
from .settings import _fingerprint, am_settings, settings_key

__all__ = [
    "LayerGrid",
    "grid_cache_path",
    "cached_unit_image",
    "layer_grid_steps",
    "layer_grid",
    "render_grid",
]


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
                    st.loss,
                    st.image,
                    {"units": chunk, "filled": int(grid.done.sum()), "partial": grid, **st.metrics},
                    total,
                )
                index += 1
            if run.result is None or last is None or last.index + 1 < settings.steps:
                return  # cancelled mid-batch: this batch is dropped, the others are kept
            pixels, act = run.result.image, run.result.activation
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
