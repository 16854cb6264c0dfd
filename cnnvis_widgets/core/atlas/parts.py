"""The pieces of an atlas build, each computed by the existing core functions.

Every piece is a plain dict of CPU tensors and JSON-able values (a "part"), so it can travel
between ranks and be kept in ``DIR/parts/`` (:func:`save_part` / :func:`load_part`):

* :func:`am_part`: the AM images of one batch of units (:func:`~.grid.layer_grid_steps`);
* :func:`top_part`: the top-k of every unit of a layer over one dataset shard
  (:func:`~cnnvis_widgets.core.topk.top_k_steps`), indices global to the dataset;
* :func:`merge_top`: the shards merged exactly (by score, ties to the smaller image index);
* :func:`inversion_part`: the regularized inversion of the reference photo at one layer;
* :func:`cards_part`: for a chunk of units, their top-k patches, DeconvNet projections
  (:func:`~cnnvis_widgets.core.projections.unit_projections`) and the classes they feed
  (:func:`~cnnvis_widgets.core.contributions.class_contributions`);
* :func:`ablation_part`: what removing each unit of a layer does over the dataset
  (:func:`~cnnvis_widgets.core.importance.ablate`, ``how="zero"``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ... import cache
from ...data.datasets import ImageDataset
from ...models.handle import ModelHandle
from ..blocks.runs import finish
from .grid import layer_grid_steps

__all__ = [
    "save_part",
    "load_part",
    "am_part",
    "top_part",
    "merge_top",
    "as_topk",
    "inversion_part",
    "cards_part",
    "ablation_part",
    "shard",
]


def save_part(path: Path, part: dict[str, Any]) -> Path:
    """Keep a part atomically (``torch.save`` of tensors and plain values)."""
    return cache.save_tensors(path, part)


def load_part(path: Path) -> dict[str, Any] | None:
    """A kept part, or None when there is none or it cannot be read (it is then recomputed)."""
    if not path.is_file():
        return None
    try:
        return cache.load_tensors(path)
    except Exception:  # noqa: BLE001 - a damaged part is recomputed
        return None


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


def am_part(
    handle: ModelHandle,
    layer: str,
    units: Sequence[int],
    *,
    preset: str,
    steps: int,
    size: int,
    seed: int,
    stop_event: threading.Event | None = None,
) -> dict[str, Any] | None:
    """AM images of ``units`` of ``layer`` optimized as one batch (None when stopped)."""
    units = [int(u) for u in units]
    grid = finish(
        layer_grid_steps(
            handle,
            layer,
            preset=preset,
            steps=steps,
            size=size,
            batch=len(units),
            seed=seed,
            units=units,
            use_cache=False,
            stop_event=stop_event,
        )
    )
    if grid is None:
        return None
    idx = torch.tensor(units)
    return {
        "units": units,
        "images": grid.images[idx].clone(),
        "activation": grid.activation[idx].clone(),
    }


def shard(ds: ImageDataset, lo: int, hi: int) -> ImageDataset:
    """Images ``lo..hi-1`` of ``ds`` as a dataset of their own (a key of its own)."""
    names = ds.names[lo:hi]
    return ImageDataset(names, lambda i: ds.image(lo + i), key=f"{ds.key}[{lo}:{hi}]")


def top_part(
    handle: ModelHandle,
    layer: str,
    ds: ImageDataset,
    lo: int,
    hi: int,
    k: int,
    stop_event: threading.Event | None = None,
) -> dict[str, Any] | None:
    """The top-``k`` of every unit of ``layer`` over images ``lo..hi-1`` of ``ds``."""
    from ..topk import top_k_steps

    top = finish(top_k_steps(handle, layer, shard(ds, lo, hi), k=k, stop_event=stop_event))
    if top is None:
        return None
    w = top.field.output_size[1]
    return {
        "values": top.values.float(),
        "images": top.images + lo,
        "pos": top.ys * w + top.xs,
        "names": {int(i) + lo: n for i, n in top.names.items()},
    }


def merge_top(parts: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """The shards' top-k merged: per unit the ``k`` highest scores, ties broken by the smaller
    dataset index (the same result whatever the order or grouping of the shards).

    >>> a = {"values": torch.tensor([[3.0, 1.0]]), "images": torch.tensor([[0, 1]]),
    ...      "pos": torch.tensor([[5, 6]]), "names": {0: "a0", 1: "a1"}}
    >>> b = {"values": torch.tensor([[3.0, 2.0]]), "images": torch.tensor([[2, 3]]),
    ...      "pos": torch.tensor([[7, 8]]), "names": {2: "b2", 3: "b3"}}
    >>> m = merge_top([b, a], 3)
    >>> m["images"].tolist(), m["values"].tolist()
    ([[0, 2, 3]], [[3.0, 3.0, 2.0]])
    """
    vals = torch.cat([p["values"] for p in parts], dim=1)
    idx = torch.cat([p["images"] for p in parts], dim=1)
    pos = torch.cat([p["pos"] for p in parts], dim=1)
    order = torch.argsort(idx, dim=1, stable=True)
    vals, idx, pos = vals.gather(1, order), idx.gather(1, order), pos.gather(1, order)
    order = torch.argsort(-vals, dim=1, stable=True)[:, :k]
    vals, idx, pos = vals.gather(1, order), idx.gather(1, order), pos.gather(1, order)
    names: dict[int, str] = {}
    for p in parts:
        names.update(p["names"])
    kept = set(idx.flatten().tolist())
    return {
        "values": vals,
        "images": idx,
        "pos": pos,
        "names": {i: n for i, n in sorted(names.items()) if i in kept},
    }


def as_topk(handle: ModelHandle, layer: str, merged: dict[str, Any], ds: ImageDataset, k: int):
    """A merged top-k as a :class:`~cnnvis_widgets.core.topk.TopK` of every unit."""
    from ..topk import TopK, receptive_field

    field = receptive_field(handle, layer, handle.input_size)
    w = field.output_size[1]
    pos = merged["pos"]
    return TopK(
        layer=layer,
        units=list(range(int(pos.shape[0]))),
        k=k,
        values=merged["values"],
        images=merged["images"],
        ys=pos // w,
        xs=pos % w,
        names=dict(merged["names"]),
        field=field,
        count=len(ds),
        dataset_key=ds.key,
        model=handle.describe(),
    )


def inversion_part(
    handle: ModelHandle,
    layer: str,
    target: torch.Tensor,
    steps: int,
    stop_event: threading.Event | None = None,
) -> dict[str, Any] | None:
    """The regularized inversion of ``target`` (pixels ``(1, C, H, W)``) at ``layer`` and its
    normalized feature error (as the network view computes it)."""
    from .. import inversion as inv

    last = None
    for st in inv.invert_layers_steps(handle, target, [layer], steps=steps, stop_event=stop_event):
        last = st
    if stop_event is not None and stop_event.is_set():
        return None
    if last is None or last.image is None:
        raise RuntimeError(f"the inversion at {layer!r} made no step")
    image = last.image.detach().clamp(0, 1)[:1]
    phi0 = inv.layer_features(handle, target, layer)[layer]
    error = float(inv.feature_error(handle, image, layer, phi0)[0])
    return {"image": _to_uint8(image[0]), "error": error}


def cards_part(
    handle: ModelHandle,
    layer: str,
    units: Sequence[int],
    top: Any,
    ds: ImageDataset,
    *,
    projections: bool = True,
    top_classes: int = 5,
) -> dict[str, Any]:
    """For each of ``units``: its top-k patches (uint8), their DeconvNet projections (or
    None, with the reason in ``note``) and the classes it feeds most over its top images."""
    from ..contributions import class_contributions
    from ..projections import unit_projections

    out: dict[str, Any] = {"units": [int(u) for u in units], "cards": []}
    for u in units:
        u = int(u)
        try:
            up = unit_projections(handle, top, u, ds, "deconvnet", project=projections)
        except ValueError as exc:
            up = unit_projections(handle, top, u, ds, "deconvnet", project=False)
            up.note = str(exc)
        proj = [_to_uint8(p) for p in up.projection_patches] if up.projection_patches else None
        classes: list[list[Any]] = []
        if top_classes > 0 and len(up.images):
            contrib = class_contributions(handle, layer, u, up.images)
            vals, idx = contrib.topk(min(int(top_classes), contrib.numel()))
            classes = [[handle.class_name(int(i)), float(v)] for v, i in zip(vals, idx)]
        out["cards"].append(
            {
                "unit": u,
                "patches": [_to_uint8(p) for p in up.patches],
                "projections": proj,
                "note": up.note,
                "classes": classes,
            }
        )
    return out


def ablation_part(
    handle: ModelHandle,
    layer: str,
    units: Sequence[int] | str,
    ds: ImageDataset,
    top_classes: int = 5,
    stop_event: threading.Event | None = None,
) -> dict[str, Any] | None:
    """Each of ``units`` (``"all"``: every unit) of ``layer`` set to zero alone over ``ds``
    (:func:`~cnnvis_widgets.core.importance.ablate`), one record per unit: ``accuracy_drop``
    and the ``top_classes`` classes whose probability on their own images falls most, as
    ``[name, drop]`` (drops > 0), with the ``accuracy``, the intact ``baseline_accuracy``, the
    ``images`` measured and where the ``labels`` came from (``"model"`` for an unlabelled
    dataset: the intact network's own top-1, so the drop is the share of images whose top-1
    changes). None when stopped."""
    from ..blocks.runs import Run
    from ..importance import ablate_steps

    run = Run(ablate_steps(handle, layer, units, ds, how="zero"))
    for _ in run:
        if stop_event is not None and stop_event.is_set():
            run.close()
            return None
    res = run.result
    assert res is not None
    drop, acc = res.accuracy_drop.tolist(), res.accuracy.tolist()
    records = []
    for g, group in enumerate(res.groups):
        hurts = res.hurts_most(g, int(top_classes)) if top_classes > 0 else []
        records.append(
            {
                "unit": int(group[0]),
                "accuracy_drop": float(drop[g]),
                "accuracy": float(acc[g]),
                "classes": [[name, -float(d)] for name, d in hurts],
            }
        )
    return {
        "units": records,
        "baseline_accuracy": float(res.baseline_accuracy),
        "images": int(res.count),
        "labels": res.labels_from,
    }
