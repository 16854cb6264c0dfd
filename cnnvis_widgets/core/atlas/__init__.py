"""The unit atlas: layer- and network-level views that link every method (beyond single neurons).

Qin et al. (2018) close their survey with the observation that the classic methods explain single
neurons, and that visualizing whole layers and networks is the open problem. This package computes,
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

The package, by what is inside:

* :mod:`.settings`: the AM recipe (:func:`am_settings`) and its cache key (:func:`settings_key`),
  shared by the grids and the card.
* :mod:`.grid`: :class:`LayerGrid`, its cache, :func:`render_grid` (labelled cells),
  :func:`order_units` and :func:`grid_view` (sorted, filtered, captioned: the layer view).
* :mod:`.network`: :class:`NetworkSummary` / :class:`LayerSummary` and their computation.
* :mod:`.card`: :class:`UnitCard`, :func:`unit_card_steps`, :func:`card_images` and
  :func:`card_view` (what a view of the card shows).
* :mod:`.store`: the built-atlas directory format ``cnnvis-atlas/1`` (:class:`BuiltAtlas`,
  :func:`open_atlas`); :mod:`.build`: the batch job that writes it (``cnnvis atlas build``,
  resumable, split over ``torchrun`` ranks by :mod:`.distributed`; pieces in :mod:`.parts`);
  :mod:`.opened`: a built atlas in a session, only what it lacks computed.
* :func:`class_contributions` is an attribution method and lives in
  :mod:`cnnvis_widgets.core.contributions`; it is re-exported here.

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

from ..contributions import class_contributions
from .card import UnitCard, card_images, card_view, unit_card, unit_card_steps
from .grid import (
    SORTS,
    GridView,
    LayerGrid,
    cached_unit_image,
    grid_cache_path,
    grid_view,
    layer_grid,
    layer_grid_steps,
    order_units,
    render_grid,
)
from .network import (
    LayerSummary,
    NetworkSummary,
    default_atlas_layers,
    network_summary,
    network_summary_steps,
)
from .settings import am_settings, settings_key
from .store import BuiltAtlas, open_atlas

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
    "card_images",
    "SORTS",
    "order_units",
    "GridView",
    "grid_view",
    "card_view",
    "BuiltAtlas",
    "open_atlas",
]
