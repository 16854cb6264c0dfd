"""The pictures of a unit's top-9 (Zeiler & Fergus 2014, Fig. 2): grids, details, one overlay.

:func:`patch_grid` and :func:`projection_grid` draw a unit's dataset patches
(:func:`~cnnvis_widgets.core.projections.unit_projections`) and their projections, cropped the
same way, as 3x3 grids of equal square cells;
a patch cut by the image border sits against the side it came from (:func:`align`).
:func:`details_text` and :func:`entry_records` describe the entries; :func:`detail_picture` is
one photo with its projection as a heat map and the receptive field outlined; :func:`side_by_side`
puts the two grids next to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import imaging as I
from .projections import crop_patches
from .topk import Entry, TopK

__all__ = [
    "K",
    "CELL",
    "GAP",
    "align",
    "cells",
    "patch_grid",
    "projection_grid",
    "details_text",
    "entry_records",
    "detail_picture",
    "side_by_side",
]

K = 9  # a 3x3 grid, as in Zeiler & Fergus
CELL = 96  # pixels per grid cell
GAP = 2  # grey frame inside each cell


def cells(pictures: list[torch.Tensor], fill: float = 0.93) -> torch.Tensor:
    """A 3x3 grid of equal square cells (a picture per cell, letterboxed) -> ``(3, 3C, 3C)``.

    Examples
    --------
    >>> cells([torch.zeros(3, CELL - 2 * GAP, CELL - 2 * GAP)]).shape
    torch.Size([3, 288, 288])
    """
    out = torch.full((3, 3 * CELL, 3 * CELL), fill)
    inner = CELL - 2 * GAP
    for i, pic in enumerate(pictures[:K]):
        r, c = divmod(i, 3)
        y, x = r * CELL + GAP, c * CELL + GAP
        out[:, y : y + inner, x : x + inner] = pic
    return out


def align(box: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    """Where a patch cut by the image border sits in its square: against the side it came from.

    The words of :func:`~cnnvis_widgets.core.imaging.letterbox` ("top"/"bottom", "left"/"right"),
    joined by "-" (a side alone keeps the dash: ``"bottom-"``).

    Examples
    --------
    >>> align((0, 10, 20, 30), (64, 64)), align((5, 5, 20, 20), (64, 64))
    ('bottom-', 'center')
    """
    top, left, bottom, right = box
    v = "bottom" if top == 0 and bottom < size[0] else ("top" if bottom == size[0] else "")
    h = "right" if left == 0 and right < size[1] else ("left" if right == size[1] else "")
    return f"{v}-{h}" if v or h else "center"


def patch_grid(
    entries: Sequence[Entry], patches: Sequence[torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """The 3x3 grid ``(3, 288, 288)`` of a unit's dataset patches, one per entry.

    Parameters
    ----------
    entries : sequence of Entry
        The unit's top entries (their boxes place each patch in its cell).
    patches : sequence of torch.Tensor
        The dataset patches (``UnitProjections.patches``).
    size : (int, int)
        The images' size (``TopK.input_size``).

    Examples
    --------
    >>> up = projections.unit_projections(h, top, 7, data, project=False)    # doctest: +SKIP
    >>> grid = patch_grid(up.entries, up.patches, top.input_size)           # doctest: +SKIP
    """
    return cells(
        [I.letterbox(p, CELL - 2 * GAP, align=align(e.box, size)) for e, p in zip(entries, patches)]
    )


def projection_grid(
    entries: Sequence[Entry], projections: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """The 3x3 grid of signed projections ``(n, C, H, W)`` of whole images, cropped like the
    patches (:func:`~cnnvis_widgets.core.imaging.signed_to_pixels`: grey is zero).

    Examples
    --------
    >>> proj = projections.project_unit(h, layer, 7, up.images, up.entries)  # doctest: +SKIP
    >>> grid = projection_grid(up.entries, proj, top.input_size)            # doctest: +SKIP
    """
    shown = I.signed_to_pixels(projections)
    return patch_grid(entries, crop_patches(shown, entries), size)


def details_text(top: TopK, unit: int, entries: Sequence[Entry]) -> str:
    """The receptive field and each entry's image, maximum, position and field, as text.

    Examples
    --------
    >>> print(details_text(top, 7, top.entries(7)))                         # doctest: +SKIP
    """
    rf = top.field
    lines = [
        f"{top.layer} unit {unit}: top {len(entries)} of "
        f"{top.count} images; receptive field {rf.size[0]}x{rf.size[1]} px, stride "
        f"{rf.stride[0]}"
    ]
    for e in entries:
        t0, l0, b0, r0 = e.box
        lines.append(
            f"{e.rank + 1}. {e.name}: max {e.value:.3g} at ({e.y}, {e.x}), field rows "
            f"{t0}-{b0 - 1}, cols {l0}-{r0 - 1}"
        )
    return "\n".join(lines)


def entry_records(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """JSON-able ``rank, image, index, value, y, x, box`` of each entry.

    Examples
    --------
    >>> entry_records([Entry(0, 1.23456789, 3, "a.jpg", 1, 2, (0, 0, 5, 5))])[0]["value"]
    1.234568
    """
    return [
        {
            "rank": e.rank,
            "image": e.name,
            "index": e.image,
            "value": round(e.value, 6),
            "y": e.y,
            "x": e.x,
            "box": list(e.box),
        }
        for e in entries
    ]


def detail_picture(
    photo: torch.Tensor, projection: torch.Tensor, box: tuple[int, int, int, int], opacity: float
) -> torch.Tensor:
    """One photo ``(C, H, W)`` with its projection ``(1, C, H, W)`` as a heat map, box outlined.

    Examples
    --------
    >>> detail_picture(torch.rand(3, 8, 8), torch.randn(1, 3, 8, 8), (1, 1, 5, 5), 0.5).shape
    torch.Size([3, 8, 8])
    """
    magnitude = I.normalize_map(I.reduce_channels(projection))
    heat = I.colorize(magnitude)
    pic = I.overlay(photo, heat[0], opacity, weight=magnitude[0])
    return I.draw_box(pic, box, width=2)


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int = 8) -> torch.Tensor:
    """Two pictures ``(3, H, W)`` of one height next to each other with a white gap.

    Examples
    --------
    >>> side_by_side(torch.zeros(3, 288, 288), torch.zeros(3, 288, 288)).shape
    torch.Size([3, 288, 584])
    """
    white = torch.full((left.shape[0], left.shape[1], gap), 1.0)
    return torch.cat([left, white, right], dim=2)
