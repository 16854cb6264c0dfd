"""Views of a dissection, as the widget, its exports and a notebook show them: the units table,
the bar rows, a unit's description, its picture and the static picture.

Every function takes core results (:class:`Dissection`, :class:`UnitExamples`) and returns plain
rows, text or pixels, so a front end only copies them into its traits.

Examples
--------
>>> result = dissect(handle, ["_blocks.4"], probe_set(64))     # doctest: +SKIP
>>> table_rows(result, "_blocks.4")[0]                          # doctest: +SKIP
{'unit': 0, 'concept': 'green', 'category': 'color', 'iou': 0.061, 'ok': 'yes'}
>>> summary_bars(result)                                        # doctest: +SKIP
[['_blocks.4', 3, 5, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ...data.concepts import Probe
from ...imaging import bar_chart, encode, pil_to_tensor, stack_rows, to_pil
from ...models.handle import ModelHandle
from ..blocks.optimize import Step
from .compare import compare_dissections
from .examples import UnitExamples, render_examples, unit_examples
from .results import Dissection

__all__ = [
    "TABLE_COLUMNS",
    "model_label",
    "table_rows",
    "summary_bars",
    "comparison_bars",
    "unit_text",
    "interpretable_text",
    "unit_picture",
    "static_picture",
    "shown_traits",
    "progress_text",
]

#: what the stages of a run are called in a status line
STAGES = {"quantile": "thresholds", "refine": "thresholds (refine)", "iou": "IoU tallies"}


#: the columns of :func:`table_rows`, as a front end's table shows them (key, label, format)
TABLE_COLUMNS = [
    {"key": "unit", "label": "Unit", "numeric": True},
    {"key": "concept", "label": "Concept"},
    {"key": "category", "label": "Category"},
    {"key": "iou", "label": "IoU", "numeric": True, "digits": 3},
    {"key": "ok", "label": "Interpretable"},
]


def model_label(handle: ModelHandle) -> str:
    """What a model is called in views: its name and its weights as its handle records them,
    ``imagenet`` for any ImageNet weights (e.g. ``"efficientnet_lite0 [imagenet]"``)."""
    w = handle.weights
    short = "imagenet" if w.startswith("imagenet") else w
    return f"{handle.name} [{short}]"


def table_rows(result: Dissection, layer: str) -> list[dict[str, Any]]:
    """One row per unit of ``layer``: ``unit``, ``concept``, ``category``, ``iou`` (4 digits)
    and ``ok`` (``"yes"`` when interpretable); no rows for a layer that was not dissected."""
    if layer not in result.layers:
        return []
    return [
        {
            "unit": u["unit"],
            "concept": u["concept"],
            "category": u["category"],
            "iou": round(u["iou"], 4),
            "ok": "yes" if u["interpretable"] else "",
        }
        for u in result.units(layer)
    ]


def summary_bars(result: Dissection) -> list[list[Any]]:
    """Rows ``[layer, unique detectors of each category...]`` (categories in ``result``'s order)."""
    cats = result.categories
    return [[s["layer"], *(s["unique"].get(c, 0) for c in cats)] for s in result.summary()]


def comparison_bars(results: Sequence[Dissection], names: Sequence[str]) -> list[list[Any]]:
    """Rows ``[layer, interpretable units of each model...]`` over the layers all share."""
    cmp = compare_dissections(results, names)
    return [
        [layer, *(counts[i] for counts in cmp.interpretable)] for i, layer in enumerate(cmp.layers)
    ]


def unit_text(result: Dissection, layer: str, unit: int, model: str) -> str:
    """What dissection found about one unit, in four lines: label and verdict, threshold and top
    images, runner-up concepts, and how to read the unit's picture."""
    info = result.unit(layer, unit)
    thr = result.iou_threshold
    verdict = (
        f"interpretable (IoU >= {thr:g})"
        if info["interpretable"]
        else f"not interpretable (IoU < {thr:g})"
    )
    runner_up = ", ".join(f"{n} {v:.3f}" for n, v in info["top_concepts"][1:5])
    return (
        f"{model}, {layer} unit {unit}: {info['concept']} ({info['category']}), "
        f"IoU {info['iou']:.3f}, {verdict}\n"
        f"threshold {info['threshold']:.4g} (error <= {info['threshold_error']:.2g}), "
        f"top probe images {', '.join(str(i) for i in info['top_images'])}\n"
        f"runner-up concepts: {runner_up}\n"
        "yellow outline: where the unit is above its threshold (the rest is dimmed); "
        "cyan outline: the concept's mask"
    )


def interpretable_text(result: Dissection) -> str:
    """How many of the dissected units are interpretable, e.g. ``"12/96 units interpretable"``."""
    rows = result.summary()
    good, units = sum(s["interpretable"] for s in rows), sum(s["units"] for s in rows)
    return f"{good}/{units} units interpretable"


def unit_picture(examples: UnitExamples, ncol: int = 4, min_side: int = 128) -> torch.Tensor:
    """:func:`render_examples` in ``ncol`` columns, small probe images enlarged (nearest
    neighbour, a whole factor) until each is at least ``min_side`` pixels wide."""
    grid = render_examples(examples, ncol=ncol)
    side = examples.images.shape[-1]
    if side < min_side:
        factor = -(-min_side // side)
        grid = F.interpolate(grid.unsqueeze(0), scale_factor=factor, mode="nearest")[0]
    return grid


def static_picture(
    unit: torch.Tensor,
    result: Dissection,
    compare: tuple[Sequence[Dissection], Sequence[str]] | None = None,
    min_width: int = 480,
) -> torch.Tensor:
    """The picture of static exports, pixel space ``(3, H, W)``: a unit's picture above the bars
    of unique detectors per category of ``result`` and, with ``compare=(results, names)``, the
    bars of interpretable units per layer of those models."""
    width = max(min_width, unit.shape[-1])
    parts = [
        to_pil(unit),
        bar_chart(summary_bars(result), result.categories, "Unique detectors per category", width),
    ]
    if compare is not None:
        rows = comparison_bars(*compare)
        parts.append(bar_chart(rows, list(compare[1]), "Interpretable units per layer", width))
    gap = Image.new("RGB", (width, 6), "white")
    return pil_to_tensor(stack_rows([p for part in parts for p in (part, gap)]))[0]


def shown_traits(
    results: Sequence[Dissection | None],
    handles: Sequence[ModelHandle],
    names: Sequence[str],
    probe: Probe,
    shown: int,
    layer: str,
    unit: int,
    top_k: int = 8,
    *,
    table: bool = True,
    bars: bool = True,
) -> dict[str, Any]:
    """Everything a front end shows of model ``shown`` (``results[i]`` of ``handles[i]``,
    called ``names[i]``, on ``probe``): ``rows`` (:func:`table_rows` of ``layer``, with
    ``table``), ``summary_bars`` and ``compare_bars`` (with ``bars``), and about ``unit``:
    ``details`` (:func:`unit_text`), ``unit_image`` (PNG bytes of :func:`unit_picture`) and
    ``picture`` (:func:`static_picture`). Nothing when model ``shown`` has no result yet; an
    ``error`` (text) instead of the unit's entries when its top images cannot be redrawn."""
    r = results[shown]
    if r is None:
        return {}
    done = [x for x in results if x is not None]
    compare = (done, list(names)) if len(done) > 1 else None
    out: dict[str, Any] = {}
    if table:
        out["rows"] = table_rows(r, layer)
    if bars:
        out["summary_bars"] = summary_bars(r)
        out["compare_bars"] = comparison_bars(*compare) if compare else []
    if layer not in r.layers:
        return out
    try:
        ex = unit_examples(handles[shown], r, probe, layer, unit, k=top_k)
    except Exception as exc:  # noqa: BLE001 - shown by the front end, which stays usable
        return dict(out, error=f"{type(exc).__name__}: {exc}")
    grid = unit_picture(ex)
    out["details"] = unit_text(r, layer, unit, names[shown])
    out["unit_image"] = encode(grid, "png")
    out["picture"] = static_picture(grid, r, compare)
    return out


def progress_text(step: Step, model: str) -> str:
    """The status line of a dissection step: the model, the stage, probe images done, the step.

    Examples
    --------
    >>> step = Step(3, None, None, {"stage": "iou", "images": 64, "of": 256}, 8)
    >>> progress_text(step, "lite0")
    'lite0: IoU tallies 64/256 images (step 4/8)'
    """
    stage = step.metrics.get("stage", "")
    images, of = step.metrics.get("images", 0), step.metrics.get("of", 0)
    done = f"{images}/{of} images (step {step.index + 1}/{step.total})"
    return f"{model}: {STAGES.get(stage, stage)} {done}"
