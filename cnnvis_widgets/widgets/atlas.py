"""The Atlas widget: explore a whole network, from layers down to single units, across methods.

Three views, chosen by the ``view`` trait (the toggle at the top, or clicks):

* **network**: a table with one row per layer (shape, share of interpretable units from a
  dissection, normalized feature error of a regularized inversion of a reference photo) and a
  strip of thumbnails per layer; clicking a row (or a strip) opens that layer;
* **layer**: the activation-maximization image of every unit of the layer, filled batch by batch
  in the background (progress shown, Stop cancels, finished batches are cached on disk and
  resumed), each cell labelled with its dissection concept when known; sort by unit, activation,
  IoU or label and filter by label; clicking a cell opens the unit;
* **unit**: the unit card: AM image with diversity variants, top-9 dataset patches and their
  DeconvNet projections, dissection label, IoU and top probe images, and the classes it feeds
  most. ``open_unit("am" | "deconvnet" | "dissection")`` returns that method's widget on the unit,
  sharing the model and the results cache.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import traitlets as t

from ..core import activation_max as am
from ..core import atlas as A
from ..core.blocks.optimize import Step
from ..core.imaging import encode
from ..models import ModelHandle
from ._atlas_built import BuiltAtlasMixin
from ._atlas_panels import RemovalTraits, atlas_panels
from ._base import BoundedInt, ModelArg, setting
from ._spatial_unit import SpatialUnitWidget, spatial_layer
from ._unit_links import MethodLinks

__all__ = ["Atlas"]

_OPEN_HINT = "\nopen a method on this unit: atlas.open_unit('am' | 'deconvnet' | 'dissection')"


class Atlas(BuiltAtlasMixin, RemovalTraits, MethodLinks, SpatialUnitWidget):
    """A unit atlas of a network that links the methods to one another.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        The network (default ``"efficientnet_lite0"``).
    layers : list of str, optional
        Layers of the network view (default: the top-level blocks).
    reference : str or PIL image
        The photo inverted for the network view (a sample name, default ``"cat"``).
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    atlas : str or Path, optional
        A built atlas folder (``cnnvis atlas build``) of this model: its layers, recipe and
        results are shown at once; only what it lacks is computed.
    **traits
        Initial values of any trait (``view=``, ``layer=``, ``unit=``, ``steps=``, ``size=``...).

    Examples
    --------
    >>> atlas = Atlas(steps=64, size=64)                      # doctest: +SKIP
    >>> atlas                                                 # doctest: +SKIP
    >>> atlas.show_layer("_blocks.4"); atlas.wait()           # doctest: +SKIP
    >>> atlas.show_unit(7); atlas.wait(); atlas.card.text()   # doctest: +SKIP
    >>> atlas.open_unit("am")                                 # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    layers = t.List(t.Unicode(), help="Layers of the network view (dotted names).").tag(sync=True)
    pick_layer = t.Unicode(
        "", help="Set by a click on a network-view row: opens that layer, then resets to ''."
    ).tag(sync=True)

    # the settings, in the order of their controls ------------------------- Atlas
    view = setting(
        t.Enum(
            ["network", "layer", "unit"], "network", help="What is shown: network, layer or unit."
        ),
        "toggle", "View", "Atlas", restart=True,
        options=[["network", "network"], ["layer", "layer"], ["unit", "unit"]],
    )  # fmt: skip
    sort = setting(
        t.Enum(
            list(A.SORTS), "unit", help="Order of the layer grid: unit, activation, iou, label."
        ),
        "select", "Sort by", "Atlas", visible_when={"trait": "view", "in": ["layer"]},
        options=[["unit", "unit"], ["activation", "activation"], ["IoU", "iou"],
                 ["label", "label"]],
    )  # fmt: skip
    filter = setting(
        t.Unicode("", help="Keep only units whose label contains this text."),
        "text", "Label contains", "Atlas", visible_when={"trait": "view", "in": ["layer"]},
    )  # fmt: skip
    # ---------------------------------------------------------------------- Settings
    preset = setting(
        t.Enum(list(am.PRESETS), "lucid", help="AM recipe of the grid and the card."),
        "select", "AM preset", "Settings", restart=True, collapsed=True,
        options=[[k, k] for k in am.PRESETS],
    )  # fmt: skip
    steps = setting(
        BoundedInt(128, 1, 100_000, help="Optimization steps per batch of units."),
        "slider", "Steps", "Settings", restart=True, log=True, step=1,
    )  # fmt: skip
    size = setting(
        BoundedInt(64, 16, 512, help="Side of every AM image in pixels."),
        "slider", "Size (px)", "Settings", restart=True, step=16,
    )  # fmt: skip
    # ---------------------------------------------------------------------- without a control
    layer = setting(
        t.Unicode("", help="The layer of the layer view and the unit card."), restart=True
    )
    unit = setting(t.Int(0, help="The unit of the unit card."), restart=True)
    batch = setting(
        BoundedInt(32, 1, 1024, help="Units optimized together (one batch through the network)."),
        restart=True,
    )
    seed = setting(BoundedInt(0, 0, 2**31 - 1, help="Random seed of the AM runs."), restart=True)
    variants = setting(BoundedInt(4, 1, 16, help="Diversity variants on the unit card."))
    probe_images = setting(
        BoundedInt(64, 0, 100_000, help="Probe images of the network view's dissection (0: none).")
    )
    inversion_steps = setting(
        BoundedInt(64, 0, 100_000, help="Steps of the network view's inversion (0: none).")
    )
    n_images = setting(
        BoundedInt(64, 1, 100_000, help="Images of the top-9 dataset of the unit card.")
    )
    network_rows = t.List(t.Dict(), help="Network view table rows (read-only).").tag(sync=True)
    strips = t.Bytes(b"", help="PNG: one thumbnail strip per layer (read-only).").tag(sync=True)
    grid_image = t.Bytes(b"", help="PNG: the layer's AM grid (read-only).").tag(sync=True)
    grid_units = t.List(t.Int(), help="Units of the grid cells, in order (read-only).").tag(
        sync=True
    )
    grid_shape = t.List(t.Int(), help="[rows, cols] of the grid image (read-only).").tag(sync=True)
    filled = t.Int(0, help="Units of the layer whose AM image is done (read-only).").tag(sync=True)
    layer_text = t.Unicode("", help="Text about the layer view (read-only).").tag(sync=True)
    card_am = t.Bytes(b"", help="PNG: AM image and diversity variants (read-only).").tag(sync=True)
    card_patches = t.Bytes(b"", help="PNG: top-9 patches (read-only).").tag(sync=True)
    card_projections = t.Bytes(b"", help="PNG: their DeconvNet projections (read-only).").tag(
        sync=True
    )
    card_probe = t.Bytes(b"", help="PNG: top probe images with masks (read-only).").tag(sync=True)
    card_text = t.Unicode("", help="Text of the unit card (read-only).").tag(sync=True)
    card_classes = t.List(help="Rows [class, contribution] of the unit card (read-only).").tag(
        sync=True
    )

    def __init__(
        self,
        model: ModelArg | None = None,
        *,
        layers: Sequence[str] | None = None,
        reference: Any = "cat",
        device: str | None = None,
        atlas: Any = None,
        **kwargs: Any,
    ) -> None:
        self._open_built(atlas)
        self._layer_names = None if layers is None else list(layers)
        self._reference = reference
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        built = self._built_traits(h, kwargs)
        names = self._layer_names or self._default_layers(h)
        for n in names:
            spatial_layer(h, n)  # KeyError with the nearest names for unknown layers
        self._lock = threading.RLock()
        self._summary: A.NetworkSummary | None = None
        self._grid: A.LayerGrid | None = None
        self._rendered_filled = -1
        self.card: A.UnitCard | None = None
        self.opened = []
        layer = kwargs.pop("layer", None) or names[len(names) // 2]
        h.layer(layer)
        return dict(title="Atlas", model_name=h.name, layers=names, layer=layer, **built)

    def _ready(self) -> None:
        self.observe(self._on_nav, names=["layer", "unit"])
        self.observe(self._on_view, names=["view"])
        self.observe(self._on_pick, names=["pick_layer"])
        self.observe(self._on_order, names=["sort", "filter"])
        self._update_panels()

    # ------------------------------------------------------------------ navigation
    def show_network(self) -> None:
        """Open the network view."""
        self.view = "network"

    def show_layer(self, layer: str | None = None) -> None:
        """Open the layer view (of ``layer``, default the current one)."""
        with self.hold_trait_notifications():
            if layer is not None:
                self.layer = layer
            self.view = "layer"

    def show_unit(self, unit: int, layer: str | None = None) -> None:
        """Open the unit card of ``unit`` (of ``layer``, default the current one)."""
        with self.hold_trait_notifications():
            if layer is not None:
                self.layer = layer
            self.unit = int(unit)
            self.view = "unit"

    def _applies_at_once(self, name: str) -> bool:
        # navigation (a click on a row, a cell or the view toggle) opens what was asked for;
        # AM settings wait for Run (they recompute every image of a layer)
        return name in ("view", "layer", "unit")

    def _on_nav(self, change: dict) -> None:
        if change["name"] == "layer":
            self._follow_layer(change["new"])
            if self.view == "network":
                self.view = "layer"
        elif change["name"] == "unit" and self.view == "layer":
            self.view = "unit"

    def _on_pick(self, change: dict) -> None:
        if change["new"]:
            self.show_layer(change["new"])
            self.pick_layer = ""

    def _on_view(self, change: dict) -> None:
        self._update_panels()

    def _on_order(self, change: dict) -> None:
        self._render_grid(force=True)

    def _on_click(self, content: dict) -> None:
        trait = content.get("trait")
        if trait == "strips" and self.layers:
            cell = self._clicked_cell(content, len(self.layers), 1)
            if cell is not None:
                self.show_layer(self.layers[cell[0]])
        elif trait == "grid_image" and self.grid_shape:
            rows, cols = self.grid_shape
            cell = self._clicked_cell(content, rows, cols)
            idx = -1 if cell is None else cell[0] * cols + cell[1]
            if 0 <= idx < len(self.grid_units):
                self.show_unit(self.grid_units[idx])

    def _update_panels(self) -> None:
        self.panels = atlas_panels(self.view, len(self.layers), self.grid_shape)

    # ------------------------------------------------------------------ the run
    def _describe(self) -> str:
        if self.view == "network":
            return f"network view ({len(self.layers)} layers)"
        if self.view == "layer":
            return f"{self.layer} grid"
        return f"{self.layer} unit {self.unit}"

    def _am_kwargs(self) -> dict[str, Any]:
        return dict(preset=self.preset, steps=self.steps, size=self.size, seed=self.seed)

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        h, view = self.handle, self.view
        if view == "network" and not self._built_network():
            summary = yield from A.network_summary_steps(
                h,
                self.layers,
                reference=self._reference,
                dissection=self.probe_images > 0,
                probe_images=max(1, self.probe_images),
                inversion=self.inversion_steps > 0,
                inversion_steps=max(1, self.inversion_steps),
                stop_event=stop_event,
            )
            if summary is not None:
                self._summary = summary
                with self.hold_sync():
                    self.network_rows = summary.rows()
                    self.strips = encode(summary.strips(), "png")
        elif view == "layer":
            with self._lock:
                self._grid = None
                self._rendered_filled = -1
            self.set_trait("filled", 0)
            grid = yield from self._grid_steps(h, stop_event)
            if grid is not None:
                self._show_grid(grid)
        elif view == "unit" and (card := self._built_card(h, self.layer, self.unit)) is not None:
            self._show_card(card)
        elif view == "unit":
            s = self._summary
            dis = s.dissection if s is not None else None
            card = yield from A.unit_card_steps(
                h,
                self.layer,
                self.unit,
                variants=self.variants,
                n_images=self.n_images,
                dissection=dis,
                probe=s.probe if s is not None and s.labels(self.layer) else None,
                stop_event=stop_event,
                **self._am_kwargs(),
            )
            if card is not None:
                self._show_card(card)

    def _show_grid(self, grid: A.LayerGrid) -> None:
        with self._lock:
            self._grid = grid
        self._render_grid()

    def _render_grid(self, force: bool = False) -> None:
        with self._lock:
            grid = self._grid
            if grid is None:
                return
            filled = int(grid.done.sum())
            if not force and filled == self._rendered_filled:
                return
            self._rendered_filled = filled
            labels = self._labels_of(self.layer)
            v = A.grid_view(
                grid, labels, sort=self.sort, contains=self.filter, cell=min(self.size, 64)
            )
        reshape = [v.rows, v.cols] != list(self.grid_shape)
        with self.hold_sync():
            self.grid_units = v.units
            self.grid_shape = [v.rows, v.cols]
            self.grid_image = encode(v.image, "png")
            self.filled = v.filled
            self.layer_text = v.text
        if reshape and self.view == "layer":
            self._update_panels()

    def _show_card(self, card: A.UnitCard) -> None:
        self.card = card
        view = A.card_view(card)
        view["text"] += _OPEN_HINT
        with self.hold_sync():
            for name, value in view.items():
                setattr(self, f"card_{name}", value)

    def _sync_extra(self, step: Step) -> None:
        grid = step.metrics.get("partial")  # the grid being filled: shown as it grows
        if grid is not None:
            self._show_grid(grid)

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        rec: dict[str, Any] = {"view": self.view, "layer": self.layer}
        if self.view == "unit":
            rec["unit"] = self.unit
        if self.view == "layer" and self._grid is not None:
            rec["filled"] = int(self._grid.done.sum())
        self._last_record = rec
