"""The Network Dissection widget: dissect layers on the concept probe set, browse the units.

A run streams over the probe set twice (thresholds, then IoU tallies) with a progress bar; Stop
keeps the tallies and Run resumes. The table lists every unit of the chosen layer with its
concept, category and IoU (sortable, filterable); clicking a row shows that unit's top probe
images with its thresholded map (yellow outline, the rest dimmed) and its concept's mask (cyan).
Bars show unique detectors per category per layer and, with ``compare=``, the interpretable units
per layer of two models side by side (e.g. ``compare="random"``: the same architecture with
random weights, Bau et al.'s baseline). The results, the record and the exports of a finished
run are in :mod:`._dissection_results`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import traitlets as t

from ..core import dissection as nd
from ..core.blocks.optimize import Step
from ..data.concepts import Probe, probe_set
from ..figures import comparison_figure, summary_figure
from ..imaging import encode
from ..models import ModelHandle, load_model
from ..models.layers import dissection_layers as default_layers
from ._base import (
    BoundedFloat,
    BoundedInt,
    CnnvisWidget,
    ModelArg,
    get_handle,
    seed_setting,
    setting,
)
from ._dissection_results import DissectionResults

__all__ = ["Dissection", "default_layers", "summary_figure", "comparison_figure"]


#: the units table: a row per unit of the shown layer; clicking a row selects the unit
_TABLE = dict(
    kind="table", trait="rows", label="Units of the shown layer (click a row)",
    columns=nd.TABLE_COLUMNS, sort="iou", descending=True, select_trait="unit",
    select_key="unit", max_rows=2048, filter=True,
)  # fmt: skip
_UNIT_LABEL = "Top probe images of the unit (yellow: unit above threshold, cyan: concept mask)"


def _bars(trait: str, label: str, series: list[str]) -> dict[str, Any]:
    return {"kind": "bars", "trait": trait, "label": label, "series": series}


class Dissection(DissectionResults, CnnvisWidget):
    """Network Dissection (Bau et al. 2017), live: which concept does each unit detect?

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        The network (default ``"efficientnet_lite0"`` with its ImageNet weights).
    layers : list of str, optional
        Layers to dissect (default: four blocks from early to late).
    probe : probe set, optional
        A :func:`~cnnvis_widgets.data.concepts.probe_set` or a
        :class:`~cnnvis_widgets.data.broden.BrodenProbe`; default: the generated probe set
        with ``n_images``, ``image_size`` and ``seed``.
    compare : str, nn.Module or ModelHandle, optional
        A second model dissected on the same layers and probe set; ``"random"`` is the same
        architecture with random weights.
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    **traits
        Initial values of any trait (``n_images=``, ``quantile=``, ``layer=``, ``unit=``...).

    Examples
    --------
    >>> w = Dissection(layers=["_blocks.2", "_blocks.6"], compare="random")  # doctest: +SKIP
    >>> w                                                                   # doctest: +SKIP
    >>> w.run(); w.wait(); w.result.summary()                               # doctest: +SKIP
    >>> w.export("dissection-out")                                          # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    compare_name = t.Unicode("", help="Name of the comparison model, '' for none.").tag(sync=True)
    layer_options = t.List(help="[label, name] of the dissected layers (read-only).").tag(sync=True)
    unit_max = t.Int(0, help="Largest unit of the shown layer (read-only).").tag(sync=True)

    # the settings, in the order of their controls ------------------------- Probe set
    # (no probe-set controls with a probe of your own: see _control_spec)
    n_images = setting(
        BoundedInt(256, 1, 1_000_000, help="Images of the generated probe set."),
        "slider", "Probe images", "Probe set", restart=True, collapsed=True, log=True, step=1,
    )  # fmt: skip
    image_size = setting(
        BoundedInt(224, 32, 1024, help="Side of the probe images in pixels."),
        "select", "Image size", "Probe set", restart=True,
        options=[["112 px", 112], ["160 px", 160], ["224 px", 224]],
    )  # fmt: skip
    seed = seed_setting("Seed of the generated probe set.", "Probe set")
    # ---------------------------------------------------------------------- Dissection
    quantile = setting(
        BoundedFloat(0.005, 0.0001, 0.5, help="Fraction of each unit's activations above its "
                     "threshold (top 0.5 %)."),
        "slider", "Top quantile", "Dissection", restart=True, log=True,
        help="fraction of each unit's activations above its threshold",
    )  # fmt: skip
    iou_threshold = setting(
        BoundedFloat(0.04, 0.0, 1.0, help="A unit is interpretable when its best IoU is at "
                     "least this."),
        "slider", "IoU threshold", "Dissection", step=0.005,
        help="interpretable when the best IoU reaches this",
    )  # fmt: skip
    # ---------------------------------------------------------------------- View
    layer = setting(
        t.Unicode("", help="The layer whose units the table shows."),
        "select", "Layer", "View", options_trait="layer_options",
    )  # fmt: skip
    unit = setting(
        t.Int(0, help="The selected unit (a row of the table)."),
        "int", "Unit", "View", min=0, max_trait="unit_max",
    )  # fmt: skip
    view_model = setting(  # a control only with a comparison model: see _control_spec
        t.Enum(["model", "compare"], "model", help="Which model's units the table shows."),
        "toggle", "Table of", "View",
    )  # fmt: skip
    # ---------------------------------------------------------------------- without a control
    layers = setting(t.List(t.Unicode(), help="Layers dissected in a run."), restart=True)
    batch_size = setting(BoundedInt(32, 1, 4096, help="Probe images per batch."), restart=True)
    top_k = setting(BoundedInt(8, 1, 64, help="Top probe images shown per unit."))
    # ---------------------------------------------------------------------- results (read-only)
    stage = t.Unicode("", help="Current stage: quantile, iou or done (read-only).").tag(sync=True)
    rows = t.List(t.Dict(), help="A row per unit of the shown layer (read-only).").tag(sync=True)
    unit_image = t.Bytes(b"", help="PNG: the selected unit's top images, overlaid.").tag(sync=True)
    details = t.Unicode("", help="Text about the selected unit (read-only).").tag(sync=True)
    summary_bars = t.List(help="[layer, unique detectors per category...] rows.").tag(sync=True)
    compare_bars = t.List(help="[layer, interpretable units per model] rows.").tag(sync=True)

    def __init__(
        self,
        model: ModelArg | None = None,
        *,
        probe: Probe | None = None,
        compare: ModelArg | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._custom_probe, self._compare, self._device = probe, compare, device
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.compare_handle: ModelHandle | None = None
        if isinstance(self._compare, str) and self._compare == "random":
            self.compare_handle = load_model(h, weights=None)  # the random twin
        elif self._compare is not None:
            opts = {"device": self._device} if self._device else {}
            self.compare_handle = get_handle(self._compare, **opts)
        self._handles = [h] + ([self.compare_handle] if self.compare_handle else [])
        self._names = [nd.model_label(m) for m in self._handles]
        layers = kwargs.pop("layers", None)
        names = nd.check_layers_of(self._handles, default_layers(h) if layers is None else layers)
        self._probe_cache: tuple[Any, Probe] | None = None
        self._job: nd.DissectionJob | None = None
        self._shown_for = self._job  # the job whose final results are shown
        self._view_lock = threading.RLock()
        self._composite: Any = None
        layer = kwargs.pop("layer", None) or names[len(names) // 2]  # checked by _valid_layer
        return dict(
            title="Network dissection",
            model_name=self._names[0],
            compare_name=self._names[1] if self.compare_handle else "",
            layers=names,
            layer_options=[[h.layer(n).label(), n] for n in names],
            layer=layer,
            unit_max=h.layer(layer).channels - 1,
        )

    def _ready(self) -> None:
        self.observe(self._on_layers, names=["layers"])
        self.observe(self._on_layer, names=["layer"])
        self.observe(self._on_selection, names=["unit", "view_model"])
        self.observe(lambda change: self._show_results(), names=["iou_threshold"])
        self.panels = self._panels()

    # ------------------------------------------------------------------ validation
    @t.validate("layers")
    def _valid_layers(self, proposal: dict) -> list[str]:
        try:
            return nd.check_layers_of(self._handles, proposal["value"])
        except (KeyError, ValueError) as exc:
            raise t.TraitError(exc.args[0]) from None

    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        if self.layers and proposal["value"] not in self.layers:
            choose = f"choose one of {', '.join(self.layers)} (or add it to .layers)"
            raise t.TraitError(f"layer {proposal['value']!r} is not dissected; {choose}")
        return proposal["value"]

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        return self._unit_in_range(proposal["value"], self.layer)

    @t.validate("view_model")
    def _valid_view(self, proposal: dict) -> str:
        if proposal["value"] == "compare" and self.compare_handle is None:
            raise t.TraitError("no comparison model: create the widget with compare=...")
        return proposal["value"]

    # ------------------------------------------------------------------ specs
    def _control_spec(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        if spec.get("group") == "Probe set" and self._custom_probe is not None:
            return None  # a probe of your own: nothing to generate
        if spec.get("trait") == "view_model":
            if self.compare_handle is None:
                return None
            return dict(spec, options=[[self.model_name, "model"], [self.compare_name, "compare"]])
        return spec

    def _panels(self) -> list[dict[str, Any]]:
        panels = [
            {"kind": "progress"},
            _TABLE,
            {"kind": "image", "trait": "unit_image", "width": 512, "label": _UNIT_LABEL},
            {"kind": "text", "trait": "details", "label": "Unit"},
            _bars("summary_bars", "Unique detectors per category", self.probe.categories),
        ]
        if self.compare_handle is not None:
            panels.append(_bars("compare_bars", "Interpretable units per layer", self._names))
        return panels

    # ------------------------------------------------------------------ probe and jobs
    @property
    def probe(self) -> Probe:
        """The probe set of the next (or current) run."""
        if self._custom_probe is not None:
            return self._custom_probe
        key = (self.n_images, self.image_size, self.seed)
        if self._probe_cache is None or self._probe_cache[0] != key:
            self._probe_cache = (key, probe_set(key[0], size=key[1], seed=key[2]))
        return self._probe_cache[1]

    def _settings(self) -> dict[str, Any]:
        out = super()._settings() | {"layers": list(self.layers), "probe": self.probe.describe()}
        if self.compare_handle is not None:
            out["compare"] = self.compare_handle.describe()
        return out

    def _describe(self) -> str:
        models = "two models" if self.compare_handle is not None else self.handle.name
        return f"{models}, {len(self.layers)} layers, {len(self.probe)} probe images"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        opts = dict(quantile=self.quantile, iou_threshold=self.iou_threshold,
                    batch_size=self.batch_size, top_k=self.top_k, distributed=False)  # fmt: skip
        args = (self._job, self._handles, self.layers, self.probe, self._names)
        self._job = job = nd.DissectionJob.resumed(*args, **opts)  # or resume a stopped one
        yield from job.steps(stop_event)

    # ------------------------------------------------------------------ syncing results
    def _show_final(self) -> bool:
        """Show the results of a finished job once; True when the job is done."""
        job = self._job
        if job is None or not job.done:
            return False
        if self._shown_for is not job:
            self._shown_for = job
            self._show_results()
        return True

    def _sync_extra(self, step: Step) -> None:
        if self._show_final():
            self.stage = "done"
        elif self._job is not None:  # the table fills as the IoU tallies do
            shown = int(self.view_model == "compare")
            self._set_traits(self._job.progress(step, shown, self.layer, self.iou_threshold))

    def _set_traits(self, traits: dict[str, Any]) -> None:
        with self.hold_sync():
            for name, value in traits.items():
                setattr(self, name, value)

    def _frame_pixels(self, step: Step) -> Any:
        # called without the base's lock before the final sync: do the heavy drawing here
        return self._composite if self._show_final() else None

    def _show_results(self, table: bool = True, bars: bool = True) -> None:
        """Refresh the result traits from the finished results (any thread)."""
        job, shown = self._job, int(self.view_model == "compare")
        if job is None:
            return
        with self._view_lock:
            traits = job.shown(shown, self.layer, self.unit, self.iou_threshold,
                               top_k=self.top_k, table=table, bars=bars)  # fmt: skip
            if "picture" in traits:
                self._composite = self._last_pixels = traits.pop("picture")
                if job.done:
                    traits["image"] = encode(self._composite, "png")
            self._set_traits(traits)

    # ------------------------------------------------------------------ observers
    def _on_layers(self, change: dict) -> None:
        names = list(change["new"])
        with self.hold_sync():
            self.layer_options = [[self.handle.layer(n).label(), n] for n in names]
            if self.layer not in names:
                self.layer = names[len(names) // 2]

    def _on_layer(self, change: dict) -> None:
        n = self.handle.layer(change["new"]).channels
        with self.hold_sync():
            self.unit_max = n - 1
            if self.unit > n - 1:
                self.set_trait("unit", n - 1)
        self._show_results(bars=False)

    def _on_selection(self, change: dict) -> None:
        view = change["name"] == "view_model"
        self._show_results(table=view, bars=view)
