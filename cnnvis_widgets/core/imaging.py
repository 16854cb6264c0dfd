"""Moved to :mod:`cnnvis_widgets.imaging` (pictures live below core); this name stays an alias.

``cnnvis_widgets.core.imaging`` is the very same module object as ``cnnvis_widgets.imaging``
(``sys.modules`` aliasing), so monkeypatching either name patches both. The explicit imports
below are for type checkers, which do not follow the aliasing.
"""

from __future__ import annotations

import sys

from .. import imaging as _imaging
from ..imaging import *  # noqa: F403
from ..imaging import (
    COLORMAPS,
    PALETTE,
    bar_chart,
    colorize,
    draw_box,
    encode,
    font,
    heatmap,
    label_strip,
    labelled_row,
    letterbox,
    make_grid,
    normalize_map,
    overlay,
    pil_to_tensor,
    reduce_channels,
    signed_to_pixels,
    stack_rows,
    to_pil,
    to_uint8,
)

__all__ = [
    "COLORMAPS",
    "PALETTE",
    "bar_chart",
    "colorize",
    "draw_box",
    "encode",
    "font",
    "heatmap",
    "label_strip",
    "labelled_row",
    "letterbox",
    "make_grid",
    "normalize_map",
    "overlay",
    "pil_to_tensor",
    "reduce_channels",
    "signed_to_pixels",
    "stack_rows",
    "to_pil",
    "to_uint8",
]

sys.modules[__name__] = _imaging
