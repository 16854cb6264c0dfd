"""The panels of the Atlas's three views, as the front end draws them.

* network: the table of layers (a row click sets ``pick_layer``) and the thumbnail strips, one
  grid row per layer;
* layer: the AM grid of every unit (one grid cell per unit) and the batch being optimized;
* unit: the unit card: what the unit responds to (AM image and variants, top-9 patches and
  projections, probe images, text, the classes it feeds most) beside what removing it does
  (the accuracy drop and the classes it hurts most).
"""

from __future__ import annotations

from collections.abc import Sequence

import traitlets as t

__all__ = ["atlas_panels", "RemovalTraits"]

_NUMBER = {"numeric": True, "digits": 3}
_NETWORK_PANELS = [
    {"kind": "table", "trait": "network_rows", "label": "Layers (click a row to open the layer)",
     "columns": [{"key": "layer", "label": "Layer"}, {"key": "kind", "label": "Kind"},
                 {"key": "shape", "label": "Shape"},
                 {"key": "interpretable", "label": "Interpretable", **_NUMBER},
                 {"key": "feature_error", "label": "Inversion error", **_NUMBER}],
     "select_trait": "pick_layer", "select_key": "layer", "max_rows": 500},
    {"kind": "image", "trait": "strips", "label": "Per layer: reconstruction, most active maps"},
]  # fmt: skip
_LAYER_PANELS = [
    {"kind": "image", "trait": "grid_image", "label": "Every unit (click one)", "width": 640},
    {"kind": "image", "label": "Batch being optimized"},
    {"kind": "text", "trait": "layer_text", "label": "Layer"},
]
_UNIT_PANELS = [
    {"kind": "image", "trait": "card_am", "label": "Activation maximization + diversity variants",
     "width": 512},
    {"kind": "image", "trait": "card_patches", "label": "Top-9 patches", "grid": [3, 3]},
    {"kind": "image", "trait": "card_projections", "label": "DeconvNet projections",
     "grid": [3, 3]},
    {"kind": "image", "trait": "card_probe", "label": "Top probe images", "width": 400},
    {"kind": "text", "trait": "card_text", "label": "Unit: what it responds to"},
    {"kind": "bars", "trait": "card_classes", "label": "Classes it feeds most"},
    {"kind": "text", "trait": "card_removal_text", "label": "What removing this unit does"},
    {"kind": "bars", "trait": "card_removal", "label": "Classes it hurts most (probability lost)"},
]  # fmt: skip


def atlas_panels(view: str, layers: int, grid_shape: Sequence[int]) -> list[dict]:
    """The panel specs of ``view`` (``"network"``, ``"layer"`` or ``"unit"``) for ``layers``
    layers and a layer grid of ``grid_shape`` = ``[rows, cols]`` cells (``[]``: none yet).

    Examples
    --------
    >>> [p["kind"] for p in atlas_panels("network", 3, [])]
    ['table', 'image', 'progress']
    >>> atlas_panels("network", 3, [])[1]["grid"], atlas_panels("layer", 3, [4, 5])[0]["grid"]
    ([3, 1], [4, 5])
    """
    if view == "network":
        panels = [dict(p) for p in _NETWORK_PANELS]
        panels[1]["grid"] = [max(1, layers), 1]
    elif view == "layer":
        rows, cols = grid_shape or [1, 1]
        panels = [dict(p) for p in _LAYER_PANELS]
        panels[0]["grid"] = [max(1, rows), max(1, cols)]
    else:
        panels = [dict(p) for p in _UNIT_PANELS]
    return panels + [{"kind": "progress"}]


class RemovalTraits(t.HasTraits):
    """The unit card's "what removing this unit does" traits (set from ``card_view``)."""

    card_removal_text = t.Unicode("", help="What removing the unit does (read-only).").tag(
        sync=True
    )
    card_removal = t.List(help="Rows [class, probability lost] of the unit card (read-only).").tag(
        sync=True
    )
