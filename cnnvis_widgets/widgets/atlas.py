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

import torch
import traitlets as t

from ..core import activation_max as am
from ..core import atlas as A
from ..core.blocks.optimize import Step
from ..core.imaging import encode
from ..models import ModelHandle
from ._base import BoundedInt, CnnvisWidget, get_handle, setting

__all__ = ["Atlas"]

_OPENERS = {
    "am": "Activation maximization",
    "deconvnet": "DeconvNet",
    "dissection": "Dissection",
}

_SORTS = ["unit", "activation", "iou", "label"]


class Atlas(CnnvisWidget):
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
        t.Enum(_SORTS, "unit", help="Order of the layer grid: unit, activation, iou, label."),
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
        model: str | torch.nn.Module | ModelHandle = "efficientnet_lite0",
        *,
        layers: Sequence[str] | None = None,
        reference: Any = "cat",
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._check_arguments(kwargs, settings_only=True)
        self.handle = get_handle(model, **({"device": device} if device else {}))
        h = self.handle
        names = list(layers) if layers is not None else A.default_atlas_layers(h)
        for n in names:
            if not h.layer(n).spatial:  # KeyError with the nearest names for unknown layers
                raise ValueError(f"layer {n!r} has no spatial output; choose conv-like layers")
        self._reference = reference
        self._lock = threading.RLock()
        self._summary: A.NetworkSummary | None = None
        self._grid: A.LayerGrid | None = None
        self._rendered_filled = -1
        self.card: A.UnitCard | None = None
        layer = kwargs.pop("layer", None) or names[len(names) // 2]
        h.layer(layer)
        super().__init__(title="Atlas", model_name=h.name, layers=names, layer=layer)
        with self.hold_trait_notifications():
            for k, v in kwargs.items():
                setattr(self, k, v)
        self.observe(self._on_nav, names=["layer", "unit"])
        self.observe(self._on_view, names=["view"])
        self.observe(self._on_pick, names=["pick_layer"])
        self.observe(self._on_order, names=["sort", "filter"])
        self._output: Any = None
        self._app: Any = None
        self.opened: list[CnnvisWidget] = []
        self._update_panels()

    # ------------------------------------------------------------------ validation
    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        info = self._layer_info(name)
        if not info.spatial:
            raise t.TraitError(f"layer {name!r} has no spatial output; choose a conv-like layer")
        return name

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        return self._unit_in_range(int(proposal["value"]), self.layer)

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

    def open_unit(self, kind: str = "am") -> CnnvisWidget:
        """The widget of one method configured on the current unit, sharing the model.

        ``kind``: ``"am"`` (ActivationMaximization with the atlas's preset, steps, size and seed:
        it shows the atlas's cached image at once), ``"deconvnet"`` or ``"dissection"``.
        """
        if kind == "am":
            from .activation_max import ActivationMaximization

            return ActivationMaximization(
                self.handle,
                layer=self.layer,
                unit=self.unit,
                preset=self.preset,
                steps=self.steps,
                size=self.size,
                seed=self.seed,
            )
        if kind == "deconvnet":
            from .deconvnet import DeconvNet

            return DeconvNet(self.handle, layer=self.layer, unit=self.unit, n_images=self.n_images)
        if kind == "dissection":
            from .dissection import Dissection

            return Dissection(
                self.handle,
                layers=[self.layer],
                layer=self.layer,
                unit=self.unit,
                n_images=max(16, self.probe_images),
            )
        raise ValueError(f"unknown method {kind!r}: use 'am', 'deconvnet' or 'dissection'")

    def _applies_at_once(self, name: str) -> bool:
        # navigation (a click on a row, a cell or the view toggle) opens what was asked for;
        # AM settings wait for Run (they recompute every image of a layer)
        return name in ("view", "layer", "unit")

    def _on_nav(self, change: dict) -> None:
        if change["name"] == "layer":
            n = self.handle.layer(change["new"]).channels
            if self.unit >= n:
                self.set_trait("unit", n - 1)
            if self.view == "network":
                self.view = "layer"
        elif change["name"] == "unit" and self.view == "layer":
            self.view = "unit"

    def _on_pick(self, change: dict) -> None:
        name = change["new"]
        if name:
            self.show_layer(name)
            self.pick_layer = ""

    def _on_view(self, change: dict) -> None:
        self._update_panels()

    def _on_order(self, change: dict) -> None:
        self._render_grid(force=True)

    def _on_click(self, content: dict) -> None:
        try:
            fx, fy = float(content.get("x", -1)), float(content.get("y", -1))
        except (TypeError, ValueError):
            return
        if not (0 <= fx < 1 and 0 <= fy < 1):
            return
        trait = content.get("trait")
        if trait == "strips" and self.layers:
            self.show_layer(self.layers[min(int(fy * len(self.layers)), len(self.layers) - 1)])
        elif trait == "grid_image" and self.grid_shape:
            rows, cols = self.grid_shape
            idx = int(fy * rows) * cols + int(fx * cols)
            if 0 <= idx < len(self.grid_units):
                self.show_unit(self.grid_units[idx])

    # ------------------------------------------------------------------ specs
    def _control_specs(self) -> list[dict]:
        opener = {"group": "Open this unit in", "visible_when": {"trait": "view", "in": ["unit"]}}
        buttons = [
            {"kind": "button", "label": label, "action": f"open_{kind}", **opener}
            for kind, label in _OPENERS.items()
        ]
        return super()._control_specs() + buttons

    # ------------------------------------------------------------------ opening a method
    @property
    def output(self) -> Any:
        """The area below the atlas where :meth:`open_unit` buttons show the opened widget."""
        if self._output is None:
            import ipywidgets

            self._output = ipywidgets.Output()
        return self._output

    def app(self) -> Any:
        """The atlas with the area for opened widgets below it (what displaying the atlas shows)."""
        if self._app is None:
            import ipywidgets

            self._app = ipywidgets.VBox([self, self.output])
        return self._app

    def _on_action(self, name: str, content: dict) -> None:
        kind = name.removeprefix("open_")
        if kind not in _OPENERS:
            return
        try:
            widget = self.open_unit(kind)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, which stays usable
            self.error = f"could not open {kind} on {self.layer} unit {self.unit}: {exc}"
            return
        self.opened.append(widget)
        bundle = widget._repr_mimebundle_()
        # set the output directly (not `with output:`): this runs on a message thread
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {k: v for k, v in bundle.items() if k != "image/png"},
                "metadata": {},
            },
        )
        self.status = f"opened {_OPENERS[kind]} on {self.layer} unit {self.unit} below the atlas"

    def _repr_mimebundle_(self, **kwargs: Any):
        # displaying the atlas shows it with the area for opened widgets below it
        data = dict(self.app()._repr_mimebundle_(**kwargs) or {})
        own = super()._repr_mimebundle_(**kwargs)
        if "image/png" in own:
            data["image/png"] = own["image/png"]
        return data

    def _update_panels(self) -> None:
        if self.view == "network":
            n = max(1, len(self.layers))
            panels: list[dict] = [
                {
                    "kind": "table",
                    "trait": "network_rows",
                    "label": "Layers (click a row to open the layer)",
                    "columns": [
                        {"key": "layer", "label": "Layer"},
                        {"key": "kind", "label": "Kind"},
                        {"key": "shape", "label": "Shape"},
                        {
                            "key": "interpretable",
                            "label": "Interpretable",
                            "numeric": True,
                            "digits": 3,
                        },
                        {
                            "key": "feature_error",
                            "label": "Inversion error",
                            "numeric": True,
                            "digits": 3,
                        },
                    ],
                    "select_trait": "pick_layer",
                    "select_key": "layer",
                    "max_rows": 500,
                },
                {
                    "kind": "image",
                    "trait": "strips",
                    "label": "Per layer: reconstruction, most active maps",
                    "grid": [n, 1],
                },
            ]
        elif self.view == "layer":
            rows, cols = self.grid_shape or [1, 1]
            panels = [
                {
                    "kind": "image",
                    "trait": "grid_image",
                    "label": "Every unit (click one)",
                    "grid": [max(1, rows), max(1, cols)],
                    "width": 640,
                },
                {"kind": "image", "label": "Batch being optimized"},
                {"kind": "text", "trait": "layer_text", "label": "Layer"},
            ]
        else:
            panels = [
                {
                    "kind": "image",
                    "trait": "card_am",
                    "label": "Activation maximization + diversity variants",
                    "width": 512,
                },
                {
                    "kind": "image",
                    "trait": "card_patches",
                    "label": "Top-9 patches",
                    "grid": [3, 3],
                },
                {
                    "kind": "image",
                    "trait": "card_projections",
                    "label": "DeconvNet projections",
                    "grid": [3, 3],
                },
                {"kind": "image", "trait": "card_probe", "label": "Top probe images", "width": 400},
                {"kind": "text", "trait": "card_text", "label": "Unit"},
                {"kind": "bars", "trait": "card_classes", "label": "Classes it feeds most"},
            ]
        panels.append({"kind": "progress"})
        self.panels = panels

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
        view = self.view
        if view == "network":
            yield from A.network_summary_steps(
                self.handle,
                self.layers,
                reference=self._reference,
                dissection=self.probe_images > 0,
                probe_images=max(1, self.probe_images),
                inversion=self.inversion_steps > 0,
                inversion_steps=max(1, self.inversion_steps),
                stop_event=stop_event,
            )
        elif view == "layer":
            with self._lock:
                self._grid = None
                self._rendered_filled = -1
            self.set_trait("filled", 0)
            yield from A.layer_grid_steps(
                self.handle,
                self.layer,
                batch=self.batch,
                stop_event=stop_event,
                **self._am_kwargs(),
            )
        else:
            summary = self._summary
            dis = summary.dissection if summary is not None else None
            probe = None
            if dis is not None and self.layer in dis.layers:
                from ..data.concepts import probe_set

                probe = probe_set(
                    max(1, self.probe_images), size=int(max(self.handle.input_size)), seed=0
                )
            yield from A.unit_card_steps(
                self.handle,
                self.layer,
                self.unit,
                variants=self.variants,
                n_images=self.n_images,
                dissection=dis,
                probe=probe,
                stop_event=stop_event,
                **self._am_kwargs(),
            )

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        if step.image is None:
            return None
        return super()._frame_pixels(step)

    def _labels(self) -> dict[int, tuple[str, float]]:
        """Unit -> (concept, IoU) of the current layer, when dissected."""
        s = self._summary
        d = s.dissection if s is not None else None
        if d is None or self.layer not in d.layers:
            return {}
        return {r["unit"]: (r["concept"], r["iou"]) for r in d.units(self.layer)}

    def _order(self, grid: A.LayerGrid) -> list[int]:
        labels = self._labels()
        units = list(range(grid.units))
        text = self.filter.strip().lower()
        if text:
            units = [u for u in units if text in labels.get(u, ("", 0.0))[0].lower()]
        if self.sort == "activation":
            act = grid.activation
            units.sort(key=lambda u: -float(act[u]) if bool(grid.done[u]) else float("inf"))
        elif self.sort == "iou":
            units.sort(key=lambda u: -labels.get(u, ("", 0.0))[1])
        elif self.sort == "label":
            units.sort(key=lambda u: (labels.get(u, ("~", 0.0))[0], u))
        return units

    def _render_grid(self, force: bool = False) -> None:
        with self._lock:
            grid = self._grid
            if grid is None:
                return
            filled = int(grid.done.sum())
            if not force and filled == self._rendered_filled:
                return
            self._rendered_filled = filled
            order = self._order(grid)
            labels = {u: c for u, (c, _) in self._labels().items()}
            img, rows, cols = A.render_grid(grid, order, labels=labels, cell=min(self.size, 64))
        dis = " (labels: dissection)" if labels else ""
        text = (
            f"{self.layer}: {filled}/{grid.units} units done{dis}; showing {len(order)} "
            f"sorted by {self.sort}" + (f", label contains {self.filter!r}" if self.filter else "")
        )
        reshape = [rows, cols] != list(self.grid_shape)
        with self.hold_sync():
            self.grid_units = order
            self.grid_shape = [rows, cols]
            self.grid_image = encode(img, "png")
            self.filled = filled
            self.layer_text = text
        if reshape and self.view == "layer":
            self._update_panels()

    def _sync_extra(self, step: Step) -> None:
        m = step.metrics
        if "summary" in m:
            s: A.NetworkSummary = m["summary"]
            self._summary = s
            with self.hold_sync():
                self.network_rows = s.rows()
                self.strips = encode(s.strips(), "png")
        grid = m.get("grid") or m.get("partial")
        if grid is not None:
            with self._lock:
                self._grid = grid
            self._render_grid()
        if "card" in m:
            card: A.UnitCard = m["card"]
            self.card = card
            pics = A.card_images(card)
            with self.hold_sync():
                self.card_am = encode(pics["am"], "png")
                self.card_patches = encode(pics["patches"], "png")
                self.card_projections = encode(pics["projections"], "png")
                self.card_probe = encode(pics["probe"], "png") if "probe" in pics else b""
                self.card_text = card.text() + (
                    "\nopen a method on this unit: atlas.open_unit('am' | 'deconvnet' | "
                    "'dissection')"
                )
                self.card_classes = [[n, round(v, 4)] for _, n, v in card.classes]

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        rec: dict[str, Any] = {"view": self.view, "layer": self.layer}
        if self.view == "unit":
            rec["unit"] = self.unit
        if self.view == "layer" and self._grid is not None:
            rec["filled"] = int(self._grid.done.sum())
        self._last_record = rec
