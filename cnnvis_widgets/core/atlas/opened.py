"""A built atlas (:mod:`.store`) opened in a session: what it has is shown at once, what it lacks
is computed by the usual functions.

* :func:`completed_grid_steps`: a layer's AM grid from the atlas; only the units it has no
  image of are optimized (:func:`~.grid.layer_grid_steps`, same recipe as the build);
* :func:`atlas_card`: the :class:`~.card.UnitCard` of a unit from the atlas, with what
  removing it does when the build measured it (None when the atlas lacks its images: the card
  is then computed as usual);
* :func:`atlas_strips`: one thumbnail strip per layer (its inversion, else grey) for the
  network view.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import torch
import torch.nn.functional as F

from ...models.handle import ModelHandle
from ..optimize import Step
from .grid import LayerGrid, layer_grid_steps
from .store import BuiltAtlas

__all__ = ["completed_grid_steps", "atlas_card", "atlas_strips"]


def completed_grid_steps(
    handle: ModelHandle,
    atlas: BuiltAtlas,
    layer: str,
    *,
    preset: str,
    steps: int,
    size: int,
    seed: int,
    batch: int = 32,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, LayerGrid | None]:
    """The AM grid of ``layer``: the atlas's images, and the missing units optimized (yields
    their steps; one last Step). Returns the :class:`~.grid.LayerGrid` (None when stopped)."""
    grid = atlas.grid(layer, size)
    missing = [u for u in range(grid.units) if not bool(grid.done[u])]
    if missing:
        rest = yield from layer_grid_steps(
            handle, layer, preset=preset, steps=steps, size=size, batch=batch, seed=seed,
            units=missing, stop_event=stop_event,
        )  # fmt: skip
        if rest is None:
            return None
        idx = torch.tensor(missing)
        grid.images[idx] = rest.images[idx]
        grid.activation[idx] = rest.activation[idx]
        grid.done[idx] = rest.done[idx]
    yield Step(0, None, None, {"filled": int(grid.done.sum())}, 1)
    return grid


def atlas_card(handle: ModelHandle, atlas: BuiltAtlas, layer: str, unit: int) -> Any:
    """The unit card of ``unit`` from the atlas, or None when the atlas lacks its AM image or
    its top images."""
    from ..topk import Entry
    from .card import UnitCard

    if layer not in atlas.layers:
        return None
    rec = atlas.unit(layer, unit)
    if not rec.get("am") or not rec.get("top"):
        return None
    main = atlas.image(layer, rec["am"])
    variants = [atlas.image(layer, p) for p in rec.get("diversity", [])]
    var = torch.stack(variants) if variants else main.new_zeros((0, *main.shape))
    entries = [
        Entry(r, float(t["score"] or 0.0), -1, str(t["source"]), 0, 0, (0, 0, 0, 0))
        for r, t in enumerate(rec["top"])
    ]
    patches = [atlas.image(layer, t["image"]) for t in rec["top"]]
    projections = [atlas.image(layer, t["projection"]) for t in rec["top"] if t.get("projection")]
    d = rec.get("best_concept") or rec.get("dissection")
    dinfo = None
    if d:
        dinfo = {
            "layer": layer, "unit": int(unit), "concept": d["label"], "category": d["category"],
            "iou": float(d["iou"] or 0.0), "interpretable": rec.get("dissection") is not None,
            "top_concepts": [(d["label"], float(d["iou"] or 0.0))],
        }  # fmt: skip
    classes = []
    names = list(getattr(handle, "class_names", None) or [])
    for name, w in rec.get("classes", []):
        classes.append((names.index(name) if name in names else -1, str(name), float(w or 0.0)))
    worth, note = _removal(rec.get("ablation"), int(unit))
    return UnitCard(
        layer, int(unit), main, var, entries, patches, projections, "", dinfo, None, classes,
        worth, note,
    )  # fmt: skip


def _removal(a: dict[str, Any] | None, unit: int) -> tuple[Any, str]:
    """The card's ``removal`` (:class:`~cnnvis_widgets.core.importance.UnitWorth`, the three
    classes hurt most, as a card computes it) and note from a unit's stored ``ablation``."""
    from ..importance import UnitWorth

    if not a or a.get("accuracy_drop") is None:
        return None, ""
    drop = float(a["accuracy_drop"])
    base = a.get("baseline_accuracy")
    acc = a.get("accuracy")
    if acc is None:
        acc = (1.0 if base is None else float(base)) - drop
    hurts = [(str(n), -float(d or 0.0)) for n, d in (a.get("classes") or [])[:3]]
    worth = UnitWorth(units=(unit,), accuracy_drop=drop, accuracy=float(acc), hurts=hurts)
    measured = "labels" if a.get("labels") == "dataset" else "agreement with the intact network"
    count = f"{a['images']} images, " if a.get("images") is not None else ""
    intact = f" (intact {float(base):.1%})" if base is not None else ""
    return worth, f"{count}{measured}{intact}, from the built atlas"


def atlas_strips(atlas: BuiltAtlas, thumb: int = 48) -> torch.Tensor:
    """One row per layer: the inversion of the reference photo (grey when there is none)."""
    rows = []
    for name in atlas.layers:
        inv = atlas.layer(name).get("inversion")
        pic = atlas.image(name, inv["image"]) if inv else torch.full((3, thumb, thumb), 0.5)
        pic = F.interpolate(pic[None], size=(thumb, thumb), mode="bilinear", antialias=True)[0]
        rows.append(F.pad(pic.clamp(0, 1), (1, 1, 1, 1), value=1.0))
    if not rows:
        return torch.full((3, thumb, thumb), 0.93)
    return torch.cat(rows, dim=1)
