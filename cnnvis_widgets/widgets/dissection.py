"""The Network Dissection widget: dissect layers on the concept probe set, browse the units.

A run streams over the probe set twice (thresholds, then IoU tallies) with a progress bar; Stop
keeps the tallies and Run resumes. The table lists every unit of the chosen layer with its
concept, category and IoU (sortable, filterable); clicking a row shows that unit's top probe
images with its thresholded map (yellow outline, the rest dimmed) and its concept's mask (cyan).
Bars show unique detectors per category per layer and, with ``compare=``, the interpretable units
per layer of two models side by side (e.g. ``compare="random"``: the same architecture with
random weights, Bau et al.'s baseline).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import traitlets as t
from PIL import Image

from ..core import dissection as nd
from ..core.blocks.optimize import Step
from ..data.concepts import Probe, probe_set
from ..figures import comparison_figure, summary_figure
from ..imaging import bar_chart as _bars_image
from ..imaging import encode, pil_to_tensor, to_pil
from ..models import ModelHandle, load_model
from ..models.layers import dissection_layers as default_layers
from ._base import BoundedFloat, BoundedInt, CnnvisWidget, get_handle, setting

__all__ = ["Dissection", "default_layers", "summary_figure", "comparison_figure"]


def _model_label(handle: ModelHandle) -> str:
    w = handle.weights
    short = "imagenet" if w.startswith("imagenet") else w
    return f"{handle.name} [{short}]"


class Dissection(CnnvisWidget):
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
    seed = setting(
        BoundedInt(0, 0, 2**31 - 1, help="Seed of the generated probe set."),
        "int", "Seed", "Probe set", restart=True,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Dissection
    quantile = setting(
        BoundedFloat(
            0.005,
            0.0001,
            0.5,
            help="Fraction of each unit's activations above its threshold (top 0.5 %).",
        ),
        "slider", "Top quantile", "Dissection", restart=True, log=True,
        help="fraction of each unit's activations above its threshold",
    )  # fmt: skip
    iou_threshold = setting(
        BoundedFloat(
            0.04, 0.0, 1.0, help="A unit is interpretable when its best IoU is at least this."
        ),
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
    layers = setting(
        t.List(t.Unicode(), help="Layers dissected in a run (dotted names)."), restart=True
    )
    batch_size = setting(
        BoundedInt(32, 1, 4096, help="Probe images per forward pass."), restart=True
    )
    top_k = setting(BoundedInt(8, 1, 64, help="Top probe images shown per unit."))
    stage = t.Unicode("", help="Current stage: quantile, iou or done (read-only).").tag(sync=True)
    rows = t.List(t.Dict(), help="Table rows: unit, concept, category, iou (read-only).").tag(
        sync=True
    )
    unit_image = t.Bytes(b"", help="PNG: the selected unit's top images with overlays.").tag(
        sync=True
    )
    details = t.Unicode("", help="Text about the selected unit (read-only).").tag(sync=True)
    summary_bars = t.List(
        help="Rows [layer, unique detectors per category...] of the shown model (read-only)."
    ).tag(sync=True)
    compare_bars = t.List(help="Rows [layer, interpretable units of each model] (read-only).").tag(
        sync=True
    )

    def __init__(
        self,
        model: str | torch.nn.Module | ModelHandle = "efficientnet_lite0",
        *,
        layers: Sequence[str] | None = None,
        probe: Probe | None = None,
        compare: str | torch.nn.Module | ModelHandle | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._check_arguments(kwargs, settings_only=True)
        self.handle = get_handle(model, **({"device": device} if device else {}))
        h = self.handle
        names = list(layers) if layers is not None else default_layers(h)
        if isinstance(layers, str):
            names = [layers]
        self._check_layers(h, names)
        self.compare_handle: ModelHandle | None = None
        if compare is not None:
            if isinstance(compare, str) and compare == "random":
                self.compare_handle = load_model(h, weights=None)  # the random twin
            else:
                self.compare_handle = get_handle(compare, **({"device": device} if device else {}))
            self._check_layers(self.compare_handle, names, which="comparison model")
        self._custom_probe = probe
        self._probe_cache: tuple[Any, Probe] | None = None
        self._job: dict[str, Any] | None = None
        self._results: list[nd.Dissection | None] = [None, None]
        self._view_lock = threading.RLock()
        self._composite: torch.Tensor | None = None
        self._examples: nd.UnitExamples | None = None
        self._shown_for: dict[str, Any] | None = None
        layer = kwargs.pop("layer", None) or names[len(names) // 2]
        if layer not in names:
            raise t.TraitError(f"layer {layer!r} is not dissected; choose one of {names}")
        super().__init__(
            title="Network dissection",
            model_name=_model_label(h),
            compare_name=_model_label(self.compare_handle) if self.compare_handle else "",
            layers=names,
            layer_options=[[h.layer(n).label(), n] for n in names],
            layer=layer,
            unit_max=h.layer(layer).channels - 1,
        )
        with self.hold_trait_notifications():
            for k, v in kwargs.items():
                setattr(self, k, v)
        self.observe(self._on_layers, names=["layers"])
        self.observe(self._on_layer, names=["layer"])
        self.observe(self._on_selection, names=["unit", "view_model"])
        self.observe(self._on_iou_threshold, names=["iou_threshold"])
        self._update_panels()

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_layers(handle: ModelHandle, names: Sequence[str], which: str = "model") -> None:
        if not names:
            raise ValueError("give at least one layer to dissect")
        for name in names:
            try:
                info = handle.layer(name)
            except KeyError as exc:
                raise KeyError(f"{which}: {exc.args[0]}") from None
            if not info.spatial:
                raise ValueError(
                    f"layer {name!r} of the {which} has no spatial output; dissection needs "
                    "feature maps (conv, activation or block layers)"
                )

    @t.validate("layers")
    def _valid_layers(self, proposal: dict) -> list[str]:
        names = list(proposal["value"])
        try:
            self._check_layers(self.handle, names)
            if self.compare_handle is not None:
                self._check_layers(self.compare_handle, names, which="comparison model")
        except (KeyError, ValueError) as exc:
            raise t.TraitError(exc.args[0]) from None
        return names

    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        if self.layers and name not in self.layers:
            raise t.TraitError(
                f"layer {name!r} is not dissected; choose one of {', '.join(self.layers)} "
                "(or add it to .layers)"
            )
        return name

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        unit = int(proposal["value"])
        if not self.layer:
            return unit
        n = self.handle.layer(self.layer).channels
        if not 0 <= unit < n:
            raise t.TraitError(
                f"unit {unit} is out of range for layer {self.layer!r}: valid 0..{n - 1}"
            )
        return unit

    @t.validate("view_model")
    def _valid_view(self, proposal: dict) -> str:
        if proposal["value"] == "compare" and self.compare_handle is None:
            raise t.TraitError("no comparison model: create the widget with compare=...")
        return proposal["value"]

    # ------------------------------------------------------------------ specs
    def _control_spec(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        if spec.get("group") == "Probe set" and self._custom_probe is not None:
            return None  # a probe of your own: nothing to generate
        if spec["trait"] == "view_model":
            if self.compare_handle is None:
                return None
            return dict(spec, options=[[self.model_name, "model"], [self.compare_name, "compare"]])
        return spec

    def _control_specs(self) -> list[dict]:
        exports = [("CSV", "csv"), ("JSON", "json"), ("PNG", "png"), ("all (zip)", "zip")]
        return super()._control_specs() + [
            {
                "kind": "button",
                "label": f"Export {label}",
                "action": f"export_{a}",
                "group": "Export",
            }
            for label, a in exports
        ]

    def _categories(self) -> list[str]:
        return list(self._probe().categories)

    def _update_panels(self) -> None:
        panels: list[dict[str, Any]] = [
            {"kind": "progress"},
            {
                "kind": "table",
                "trait": "rows",
                "label": "Units of the shown layer (click a row)",
                "columns": [
                    {"key": "unit", "label": "Unit", "numeric": True},
                    {"key": "concept", "label": "Concept"},
                    {"key": "category", "label": "Category"},
                    {"key": "iou", "label": "IoU", "numeric": True, "digits": 3},
                    {"key": "ok", "label": "Interpretable"},
                ],
                "sort": "iou",
                "descending": True,
                "select_trait": "unit",
                "select_key": "unit",
                "max_rows": 2048,
                "filter": True,
            },
            {
                "kind": "image",
                "trait": "unit_image",
                "label": "Top probe images of the unit (yellow: unit above threshold, "
                "cyan: concept mask)",
                "width": 512,
            },
            {"kind": "text", "trait": "details", "label": "Unit"},
            {
                "kind": "bars",
                "trait": "summary_bars",
                "label": "Unique detectors per category",
                "series": self._categories(),
            },
        ]
        if self.compare_handle is not None:
            panels.append(
                {
                    "kind": "bars",
                    "trait": "compare_bars",
                    "label": "Interpretable units per layer",
                    "series": [self.model_name, self.compare_name],
                }
            )
        self.panels = panels

    # ------------------------------------------------------------------ probe and jobs
    def _probe(self) -> Probe:
        if self._custom_probe is not None:
            return self._custom_probe
        key = (self.n_images, self.image_size, self.seed)
        cached = self._probe_cache
        if cached is None or cached[0] != key:
            probe = probe_set(self.n_images, size=self.image_size, seed=self.seed)
            self._probe_cache = cached = (key, probe)
        return cached[1]

    @property
    def probe(self) -> Probe:
        """The probe set of the next (or current) run."""
        return self._probe()

    def _job_key(self) -> str:
        return json.dumps(
            {
                "layers": list(self.layers),
                "probe": self._probe().describe(),
                "quantile": self.quantile,
                "batch_size": self.batch_size,
                "top_k": self.top_k,
            },
            sort_keys=True,
        )

    @property
    def result(self) -> nd.Dissection | None:
        """The dissection of the model (None until a run finished), judged with the current
        ``iou_threshold``."""
        r = self._results[0]
        return None if r is None else r.with_iou_threshold(self.iou_threshold)

    @property
    def compare_result(self) -> nd.Dissection | None:
        """The dissection of the comparison model (None without one or before a run)."""
        r = self._results[1]
        return None if r is None else r.with_iou_threshold(self.iou_threshold)

    def _settings(self) -> dict[str, Any]:
        out = super()._settings()
        out["layers"] = list(self.layers)
        out["probe"] = self._probe().describe()
        if self.compare_handle is not None:
            out["compare"] = self.compare_handle.describe()
        return out

    def _describe(self) -> str:
        n = len(self._probe())
        models = "two models" if self.compare_handle is not None else self.handle.name
        return f"{models}, {len(self.layers)} layers, {n} probe images"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        key = self._job_key()
        job = self._job
        if job is None or job["key"] != key or job["done"]:
            probe = self._probe()
            handles = [self.handle] + ([self.compare_handle] if self.compare_handle else [])
            settings = dict(
                quantile=self.quantile,
                iou_threshold=self.iou_threshold,
                batch_size=self.batch_size,
                top_k=self.top_k,
                distributed=False,
            )
            job = {
                "key": key,
                "done": False,
                "probe": probe,
                "dissectors": [nd.Dissector(h, self.layers, probe, **settings) for h in handles],
            }
            self._job = job
            self._results = [None, None]
        dissectors: list[nd.Dissector] = job["dissectors"]
        total = sum(d.total_steps for d in dissectors)
        offset = 0
        for i, d in enumerate(dissectors):
            if not d.done:
                for st in d.steps(stop_event):
                    if "result" in st.metrics:
                        self._results[i] = st.metrics["result"]
                    job["done"] = all(x.done for x in dissectors)
                    yield Step(
                        index=offset + st.index,
                        loss=None,
                        image=None,
                        metrics=dict(st.metrics, model=i),
                        total=total,
                    )
                if not d.done:
                    return  # stopped: Run resumes from here
            offset += d.total_steps
        job["done"] = True

    # ------------------------------------------------------------------ syncing results
    def _current_dissector(self) -> tuple[int, nd.Dissector | None]:
        job = self._job
        if job is None:
            return 0, None
        for i, d in enumerate(job["dissectors"]):
            if not d.done:
                return i, d
        return len(job["dissectors"]) - 1, None

    def _show_final(self) -> bool:
        """Show the results of a finished job once; True when the job is done."""
        job = self._job
        if job is None or not job["done"] or self._results[0] is None:
            return False
        if self._shown_for is not job:
            self._shown_for = job
            self._show_results()
        return True

    def _sync_extra(self, step: Step) -> None:
        which, d = self._current_dissector()
        stage = step.metrics.get("stage", "")
        name = self.compare_name if which == 1 else self.model_name
        if self._show_final():
            self.stage = "done"
            return
        self.stage = f"{stage}" + (f" ({name})" if self.compare_handle is not None else "")
        stages = {"quantile": "thresholds", "refine": "thresholds (refine)", "iou": "IoU tallies"}
        images, of = step.metrics.get("images", 0), step.metrics.get("of", 0)
        self.status = (
            f"{name}: {stages.get(stage, stage)} {images}/{of} images "
            f"(step {step.index + 1}/{step.total})"
        )
        # partial labels while the IoU tallies fill up: the table fills as the run goes
        view = 1 if self.view_model == "compare" else 0
        if d is not None and which == view:
            partial = d.partial_result()
            if partial is not None:
                self._set_rows(partial.with_iou_threshold(self.iou_threshold))
                self._set_summary_bars(partial.with_iou_threshold(self.iou_threshold))

    def _result_text(self) -> str:
        r = self.result
        if r is None:
            return ""
        rows = r.summary()
        good = sum(s["interpretable"] for s in rows)
        units = sum(s["units"] for s in rows)
        return f"; {good}/{units} units interpretable"

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        rec: dict[str, Any] = {"layers": list(self.layers)}
        if self.result is not None:
            rec["summary"] = self.result.summary()
            rec["probe"] = self._probe().describe()
        if self.compare_result is not None:
            rec["compare"] = self.compare_result.summary()
            rec["compare_model"] = self.compare_handle.describe() if self.compare_handle else None
        self._last_record = rec

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        # called without the base's lock before the final sync: do the heavy drawing here
        if not self._show_final():
            return None
        return self._composite

    def _shown_result(self) -> nd.Dissection | None:
        return self.compare_result if self.view_model == "compare" else self.result

    def _shown_handle(self) -> ModelHandle:
        if self.view_model == "compare" and self.compare_handle is not None:
            return self.compare_handle
        return self.handle

    def _set_rows(self, r: nd.Dissection) -> None:
        if self.layer not in r.layers:
            self.rows = []
            return
        self.rows = [
            {
                "unit": u["unit"],
                "concept": u["concept"],
                "category": u["category"],
                "iou": round(u["iou"], 4),
                "ok": "yes" if u["interpretable"] else "",
            }
            for u in r.units(self.layer)
        ]

    def _set_summary_bars(self, r: nd.Dissection) -> None:
        cats = r.categories
        self.summary_bars = [
            [s["layer"], *(s["unique"].get(c, 0) for c in cats)] for s in r.summary()
        ]

    def _set_compare_bars(self) -> None:
        a, b = self.result, self.compare_result
        if a is None or b is None:
            self.compare_bars = []
            return
        cmp = nd.compare_dissections([a, b], [self.model_name, self.compare_name])
        self.compare_bars = [
            [layer, cmp.interpretable[0][i], cmp.interpretable[1][i]]
            for i, layer in enumerate(cmp.layers)
        ]

    def _show_results(self) -> None:
        """Refresh every result trait from the finished results (any thread)."""
        with self._view_lock:
            r = self._shown_result()
            if r is None:
                return
            with self.hold_sync():
                self._set_rows(r)
                self._set_summary_bars(r)
                self._set_compare_bars()
                self._update_unit_view()

    def _update_unit_view(self) -> None:
        """Draw the selected unit's top images, details and the static picture."""
        r = self._shown_result()
        layer, unit = self.layer, self.unit  # one snapshot: another thread may move them
        if r is None or layer not in r.layers:
            return
        job = self._job
        probe = job["probe"] if job is not None else self._probe()
        try:
            ex = nd.unit_examples(self._shown_handle(), r, probe, layer, unit, k=self.top_k)
        except Exception as exc:  # noqa: BLE001 - shown in the widget, which stays usable
            self.error = f"{type(exc).__name__}: {exc}"
            return
        grid = nd.render_examples(ex, ncol=4)
        if ex.images.shape[-1] < 128:  # small probe images: show them bigger
            factor = -(-128 // ex.images.shape[-1])
            grid = torch.nn.functional.interpolate(
                grid.unsqueeze(0), scale_factor=factor, mode="nearest"
            )[0]
        self._examples = ex
        info = r.unit(layer, unit)
        verdict = (
            f"interpretable (IoU >= {r.iou_threshold:g})"
            if info["interpretable"]
            else f"not interpretable (IoU < {r.iou_threshold:g})"
        )
        runner_up = ", ".join(f"{n} {v:.3f}" for n, v in info["top_concepts"][1:5])
        model = self.compare_name if self.view_model == "compare" else self.model_name
        self.details = (
            f"{model}, {layer} unit {unit}: {info['concept']} ({info['category']}), "
            f"IoU {info['iou']:.3f}, {verdict}\n"
            f"threshold {info['threshold']:.4g} (error <= {info['threshold_error']:.2g}), "
            f"top probe images {', '.join(str(i) for i in info['top_images'])}\n"
            f"runner-up concepts: {runner_up}\n"
            "yellow outline: where the unit is above its threshold (the rest is dimmed); "
            "cyan outline: the concept's mask"
        )
        self.unit_image = encode(grid, "png")
        self._composite = self._render_static(grid, r)
        self._last_pixels = self._composite
        if job is not None and job["done"]:
            self.image = encode(self._composite, "png")

    def _render_static(self, grid: torch.Tensor, r: nd.Dissection) -> torch.Tensor:
        """The picture for static exports: the unit's images above the bar charts."""
        width = max(480, grid.shape[-1])
        parts = [to_pil(grid)]
        cats = r.categories
        rows = [[s["layer"], *(s["unique"].get(c, 0) for c in cats)] for s in r.summary()]
        parts.append(_bars_image(rows, cats, "Unique detectors per category", width))
        if self.result is not None and self.compare_result is not None:
            cmp = nd.compare_dissections(
                [self.result, self.compare_result], [self.model_name, self.compare_name]
            )
            rows = [
                [layer, cmp.interpretable[0][i], cmp.interpretable[1][i]]
                for i, layer in enumerate(cmp.layers)
            ]
            parts.append(_bars_image(rows, cmp.names, "Interpretable units per layer", width))
        height = sum(p.height for p in parts) + 6 * len(parts)
        canvas = Image.new("RGB", (width, height), "white")
        y = 0
        for p in parts:
            canvas.paste(p, (0, y))
            y += p.height + 6
        return pil_to_tensor(canvas)[0]

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
        r = self._shown_result()
        if r is not None:
            with self._view_lock, self.hold_sync():
                self._set_rows(r)
                self._update_unit_view()

    def _on_selection(self, change: dict) -> None:
        if change["name"] == "view_model":
            self._update_summary_for_view()
            return
        with self._view_lock, self.hold_sync():
            self._update_unit_view()

    def _update_summary_for_view(self) -> None:
        r = self._shown_result()
        if r is None:
            return
        with self._view_lock, self.hold_sync():
            self._set_rows(r)
            self._set_summary_bars(r)
            self._update_unit_view()

    def _on_iou_threshold(self, change: dict) -> None:
        if self._results[0] is not None:
            self._show_results()

    def _on_action(self, name: str, content: dict) -> None:
        kinds = {
            "export_csv": ("csv",),
            "export_json": ("json",),
            "export_png": ("png",),
            "export_zip": ("csv", "json", "png"),
        }
        if name not in kinds:
            return
        try:
            file_name, mime, data = self.export_bytes(kinds[name])
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self.error = f"{type(exc).__name__}: {exc}"
            return
        self.error = ""
        self.send_download(file_name, data, mime)  # the browser saves it: no path on the kernel
        self.status = f"exported {file_name} ({len(data):,} bytes) to your browser's downloads"

    def export_bytes(self, kinds: Sequence[str] = ("csv", "json", "png")) -> tuple[str, str, bytes]:
        """``(file name, mime type, bytes)`` of an export: one file as it is (``dissection.csv``,
        ``dissection.png``), several (JSON + arrays, or every kind) as one zip. What the export
        buttons send to the browser; nothing stays on disk."""
        import io
        import tempfile
        import zipfile

        self._require()
        with tempfile.TemporaryDirectory(prefix="cnnvis-export-") as tmp:
            self.export(tmp, kinds=kinds)
            files = sorted(p for p in Path(tmp).iterdir() if p.is_file())
            if len(files) == 1:
                f = files[0]
                mime = {".csv": "text/csv", ".png": "image/png", ".json": "application/json"}
                return f.name, mime.get(f.suffix, "application/octet-stream"), f.read_bytes()
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in files:
                    z.write(f, f.name)
        name = "dissection.zip" if len(kinds) > 1 else f"dissection-{kinds[0]}.zip"
        return name, "application/zip", buf.getvalue()

    # ------------------------------------------------------------------ export
    def _require(self) -> nd.Dissection:
        r = self.result
        if r is None:
            raise RuntimeError("nothing to export yet: run() the widget (and wait()) first")
        return r

    def to_csv(self, path: str | Path | None = None) -> str:
        """All units of all dissected layers as CSV (of both models, with a ``model`` column,
        when comparing); written to ``path`` when given."""
        r = self._require()
        text = r.to_csv()
        if self.compare_result is not None:
            lines = text.splitlines()
            other = self.compare_result.to_csv().splitlines()
            text = "model," + lines[0] + "\n"
            text += "".join(f"{self.model_name},{ln}\n" for ln in lines[1:])
            text += "".join(f"{self.compare_name},{ln}\n" for ln in other[1:])
        if path is not None:
            from ..cache import atomic_write_bytes

            atomic_write_bytes(path, text.encode())
        return text

    def export(
        self, folder: str | Path, kinds: Sequence[str] = ("csv", "json", "png")
    ) -> dict[str, Path]:
        """Write ``dissection.csv``, ``dissection.json`` + ``.npz`` (and ``compare.json`` + npz)
        and ``dissection.png`` (the static picture) into ``folder``; returns the paths."""
        r = self._require()
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        if "csv" in kinds:
            self.to_csv(folder / "dissection.csv")
            out["csv"] = folder / "dissection.csv"
        if "json" in kinds:
            out["json"] = r.save(folder / "dissection")
            if self.compare_result is not None:
                out["compare_json"] = self.compare_result.save(folder / "compare")
        if "png" in kinds:
            out["png"] = self.save(folder / "dissection.png")
        return out

    def figure(self) -> Any:
        """A plotly figure of unique detectors per category per layer (needs plotly)."""
        return summary_figure(self._require())

    def comparison_figure(self) -> Any:
        """A plotly figure of interpretable units per layer of both models (needs plotly)."""
        if self.compare_result is None:
            raise RuntimeError("no comparison: create the widget with compare=... and run it")
        return comparison_figure(
            [self._require(), self.compare_result], [self.model_name, self.compare_name]
        )
