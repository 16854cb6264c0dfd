"""An adversarial run drawn: summary text, tables, map tiles, the unit grid, one report picture.

:func:`summary_lines` (the text summary), :func:`prediction_table` and :func:`unit_table` (the
rows of the bar chart and of the units table), :func:`attribution_tiles` (the four heat-map
overlays), :func:`live_pictures` (the adversarial image and its amplified perturbation during
the attack), :func:`units_grid` (the unit pictures, :data:`UNIT_COLS` per row) and
:func:`report_image` (one PIL picture of everything, for ``save()`` and the static view).
Labelled rows and stacking come from :mod:`cnnvis_widgets.imaging`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from ...imaging import colorize, labelled_row, make_grid, overlay, stack_rows
from .analysis import PairAnalysis, amplify
from .settings import eps_text, norm_of

__all__ = [
    "UNIT_COLS",
    "UNIT_TABLE_COLUMNS",
    "summary_lines",
    "top1_label",
    "prediction_table",
    "unit_table",
    "attribution_tiles",
    "live_pictures",
    "units_grid",
    "grid_rows",
    "units_row",
    "labelled_row",
    "stack_rows",
    "report_image",
]

#: unit pictures per row of :func:`units_grid`
UNIT_COLS = 3
#: the columns of :func:`unit_table` (key, heading, number format) for a table view
UNIT_TABLE_COLUMNS = [
    {"key": "unit", "label": "Unit", "numeric": True},
    {"key": "change", "label": "RMS change", "numeric": True, "digits": 3},
    {"key": "clean", "label": "Mean clean", "numeric": True, "digits": 3},
    {"key": "adversarial", "label": "Mean adv.", "numeric": True, "digits": 3},
]


def _label(top: dict[str, Any]) -> str:
    return f"{top['name']} ({top['index']}), p={top['prob']:.3f}"


def summary_lines(
    r: PairAnalysis,
    *,
    method: str,
    eps: float,
    steps: int,
    target: int,
    class_name: Callable[[int], str],
    attribution_error: str = "",
) -> list[str]:
    """The text summary of an attack: settings, both top-1, the verdict, sizes, the maps.

    Examples
    --------
    >>> "\\n".join(summary_lines(r, method="fgsm", eps=4 / 255, steps=1, target=-1,
    ...                          class_name=h.class_name))                # doctest: +SKIP
    """
    norm = norm_of(method)
    ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
    orig, new = r.original_class[0], r.new_class[0]
    targeted = target >= 0
    verdict = (
        ("reached the target" if r.success[0] else "did not reach the target")
        if targeted
        else ("changed the top-1 class" if r.success[0] else "did not change the top-1 class")
    )
    lines = [
        f"{method}, epsilon {eps_text(eps, norm)}"
        + ("" if method == "fgsm" else f", {steps} steps")
        + (f", target {class_name(target)} ({target})" if targeted else ""),
        f"clean:       {_label(ct)}",
        f"adversarial: {_label(at)}",
        f"the attack {verdict}",
        f"perturbation: L-inf {r.linf[0] * 255:.3g}/255, L2 {r.l2[0]:.4g}",
        f"maps: {r.attribution.get('method', '')}"
        + (f" at {r.attribution['layer']}" if r.attribution.get("layer") else "")
        + f"; classes {class_name(orig)} ({orig}) and {class_name(new)} ({new})",
    ]
    if attribution_error:
        lines.append(f"no attribution maps: {attribution_error}")
    return lines


def top1_label(top: dict[str, Any]) -> str:
    """``"tabby (281), p=0.612"`` for one entry of a top-k list.

    Examples
    --------
    >>> top1_label({"name": "tabby", "index": 281, "prob": 0.6123})
    'tabby (281), p=0.612'
    """
    return _label(top)


def attribution_tiles(
    r: PairAnalysis, class_name: Callable[[int], str]
) -> tuple[list[torch.Tensor], list[str]]:
    """Heat-map overlays ``(3, H, W)`` of clean/adversarial x original/new class, with captions.

    Order: clean/original, clean/new, adversarial/original, adversarial/new.

    Examples
    --------
    >>> tiles, captions = attribution_tiles(r, h.class_name)               # doctest: +SKIP
    """
    orig, new = r.original_class[0], r.new_class[0]
    tiles, caps = [], []
    for img_key, img in (("clean", r.clean), ("adversarial", r.adversarial)):
        for cls_key, cls in (("original", orig), ("new", new)):
            m = r.attribution[f"{img_key}/{cls_key}"][0:1]
            heat = colorize(m, "inferno")
            tiles.append(overlay(img[0:1], heat, 0.6, weight=m)[0])
            caps.append(f"{img_key} image\n{cls_key}: {class_name(cls)}")
    return tiles, caps


def _rounded(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


def prediction_table(r: PairAnalysis, i: int = 0) -> list[list[Any]]:
    """``[label, p_clean, p_adversarial]`` rows of pair ``i`` (the union of both top-5),
    probabilities rounded to 6 digits for the front end.

    Examples
    --------
    >>> prediction_table(r)[0]                                             # doctest: +SKIP
    ['tabby (281)', 0.612345, 0.001234]
    """
    return [[label, round(pc, 6), round(pa, 6)] for label, pc, pa in r.prediction_rows(i)]


def unit_table(r: PairAnalysis, i: int = 0) -> list[dict[str, Any]]:
    """The most changed units of pair ``i`` as table rows (floats rounded to 6 digits).

    Examples
    --------
    >>> unit_table(r)[0]["unit"]                                           # doctest: +SKIP
    17
    """
    return [{k: _rounded(v) for k, v in u.items()} for u in (r.units[i] if r.units else [])]


def live_pictures(
    image: torch.Tensor | None, clean: torch.Tensor | None, eps: float | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(adversarial, amplified perturbation)`` pictures ``(C, H, W)`` of an attack step's
    image, or None when there is no image of the clean image's shape.

    Examples
    --------
    >>> x = torch.full((1, 3, 4, 4), 0.5)
    >>> adv, amp = live_pictures(x + 0.01, x, 0.02)
    >>> round(float(amp.max()), 3)
    0.75
    """
    if image is None or clean is None or image.shape != clean.shape:
        return None
    return image[0].clamp(0, 1), amplify((image - clean).detach(), eps)[0]


def grid_rows(n: int, cols: int = UNIT_COLS) -> int:
    """Rows of a grid of ``n`` pictures, ``cols`` per row (at least one).

    Examples
    --------
    >>> grid_rows(4), grid_rows(0)
    (2, 1)
    """
    return max(1, -(-int(n) // cols))


def units_grid(pixels: torch.Tensor, cols: int = UNIT_COLS) -> torch.Tensor:
    """Unit pictures in order, ``cols`` per row, blank cells filling the last row.

    Examples
    --------
    >>> units_grid(torch.zeros(4, 3, 8, 8)).shape
    torch.Size([3, 22, 32])
    """
    px = pixels if pixels.shape[1] == 3 else pixels.repeat(1, 3, 1, 1)
    rows = grid_rows(px.shape[0], cols)
    cells = px.new_ones((rows * cols, *px.shape[1:]))
    cells[: px.shape[0]] = px
    return make_grid(cells, ncol=cols, pad=2)


def units_row(r: PairAnalysis, units_pixels: torch.Tensor | None) -> Image.Image | None:
    """The unit pictures as a captioned row (None without pictures or units).

    Examples
    --------
    >>> units_row(r, px)                                                    # doctest: +SKIP
    """
    if units_pixels is None or not r.units:
        return None
    caps = [f"unit {u['unit']}\nchange {u['change']:.3g}" for u in r.units[0]]
    tiles = [p if p.shape[0] == 3 else p.repeat(3, 1, 1) for p in units_pixels]
    return labelled_row(tiles, caps, 96, title=f"most changed units of {r.layer}")


def report_image(
    r: PairAnalysis,
    *,
    title: str,
    eps: float,
    norm: str,
    class_name: Callable[[int], str],
    units_pixels: torch.Tensor | None = None,
) -> Image.Image:
    """One picture of the whole result: images, maps, units (static export, ``save()``).

    Parameters
    ----------
    r : PairAnalysis
        The analysis of the pair.
    title : str
        Heading of the first row.
    eps, norm : float, str
        The attack's budget (shown under the perturbation).
    class_name : callable
        Class index -> name, for the captions of the maps.
    units_pixels : torch.Tensor, optional
        :func:`unit_pictures_steps` pictures; a third row when given.

    Examples
    --------
    >>> report_image(r, title="cat: fgsm", eps=4 / 255, norm="linf",
    ...              class_name=h.class_name).save("attack.png")             # doctest: +SKIP
    """
    side = max(96, min(224, int(r.clean.shape[-1])))
    ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
    top = labelled_row(
        [r.clean[0], r.amplified[0], r.adversarial[0]],
        [
            f"clean: {ct['name']}\np={ct['prob']:.3f}",
            f"perturbation x{0.5 / max(r.linf[0], 1e-12):.0f}\neps {eps_text(eps, norm)}",
            f"adversarial: {at['name']}\np={at['prob']:.3f}",
        ],
        side,
        title=title,
    )
    rows = [top]
    if r.attribution:
        tiles, caps = attribution_tiles(r, class_name)
        rows.append(labelled_row(tiles, caps, side, title=str(r.attribution["method"])))
    units = units_row(r, units_pixels)
    if units is not None:
        rows.append(units)
    return stack_rows(rows)
