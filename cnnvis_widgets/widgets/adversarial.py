"""The Adversarial widget: attack a photo and watch what changes inside the network.

One run is one :func:`cnnvis_widgets.core.adversarial.pipeline.run_steps` call: the attack (FGSM
or PGD, streamed), the analyses of the clean/adversarial pair (top-5, attribution maps, the most
changed units of a layer), then what those units look for (activation maximization), cancellable
at every step. A setting that does not change the attack (layer, attribution...) reuses it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import torch
import traitlets as t
from PIL import Image

from ..core.adversarial import PairAnalysis
from ..core.adversarial import pipeline as P
from ..core.adversarial.settings import L2_MAX, LINF_MAX, METHODS
from ..core.blocks.optimize import Step
from ..core.blocks.settings import field_names
from ..data import sample_image, sample_images
from ..imaging import encode, pil_to_tensor
from ..models import ModelHandle
from ..models.layers import default_layer
from ._adversarial_traits import MAPS, AdversarialTraits
from ._base import CnnvisWidget, ModelArg, export_paths
from ._photos import UPLOAD_TRAITS, SampleUploadMixin

__all__ = ["Adversarial", "L2_MAX", "LINF_MAX", "METHODS"]


class Adversarial(SampleUploadMixin, AdversarialTraits, CnnvisWidget):
    """Attack an image (FGSM / PGD) and see what changes: predictions, attributions, units.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default, embedded ImageNet weights), ``"torchvision:<arch>"``,
        your own module, or a handle from :func:`cnnvis_widgets.load_model`.
    image : str, PIL.Image, path or tensor
        A packaged photo's name (``"cat"``, ``"coffee"``... see
        :func:`cnnvis_widgets.data.sample_images`), a PIL image, an image file, or a pixel-space
        tensor ``(C, H, W)`` / ``(1, C, H, W)`` in ``[0, 1]``.
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    **traits
        Initial values of any setting (``method=``, ``epsilon=``, ``target=``...): see
        :class:`~cnnvis_widgets.widgets._adversarial_traits.AdversarialTraits`.

    Examples
    --------
    >>> w = Adversarial(image="cat", epsilon=4 / 255, method="pgd-linf")   # doctest: +SKIP
    >>> w.run(); w.wait(); w.export("cat_attack")  # PNG + JSON          # doctest: +SKIP
    """

    def __init__(self, model: ModelArg | None = None, image: Any = "cat", *,
                 device: str | None = None, **kwargs: Any) -> None:  # fmt: skip
        self._image = image
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._clean: tuple[tuple, torch.Tensor] | None = None  # (image key, pixels)
        self._clean_px: torch.Tensor | None = None  # the clean image of the current run
        self._attack_cache: dict[tuple, tuple] = {}
        self._am_cache: dict[tuple, torch.Tensor] = {}
        self._eps_by_norm = dict(P.DEFAULT_EPS)
        names = list(sample_images()) if h.in_channels in (1, 3) else []
        sample, photo, label = P.image_argument(self._image, names, h.in_channels)
        self._photos: dict[str, Image.Image | torch.Tensor] = (
            {} if photo is None else {sample: photo}
        )
        extra = [] if photo is None else [[label, sample]]
        layer = kwargs.pop("layer", None) or default_layer(h)
        h.layer(layer)  # KeyError listing the nearest names
        if (method := kwargs.get("method", "pgd-linf")) not in METHODS:
            raise t.TraitError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        norm = P.norm_of(method)
        classes = h.class_names or [f"class {i}" for i in range(h.num_outputs)]
        conv = [[li.label(), li.name] for li in h.conv_layers()]
        return dict(
            title="Adversarial examples",
            model_name=h.name,
            sample_options=[[n, n] for n in names] + extra,
            sample=sample,
            class_options=[["untargeted", -1]] + [[f"{i}: {n}", i] for i, n in enumerate(classes)],
            layer_options=conv,
            cam_layer_options=[["last block (default)", ""], *conv],
            layer=layer,
            size=int(h.input_size[0]),
            epsilon=self._eps_by_norm[norm],
            epsilon_max=LINF_MAX if norm == "linf" else L2_MAX,
        )

    def _ready(self) -> None:
        self._run: P.AdversarialRun = P.AdversarialRun(self._snapshot(), image=self.sample)
        self._eps_by_norm[P.norm_of(self.method)] = self.epsilon
        self.observe(self._on_method, names=["method"])
        self.observe(self._on_epsilon, names=["epsilon"])
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(lambda change: self._show_original(), names=["sample"])
        self.observe(lambda change: self._set_panels(), names=["n_units"])
        self._update_controls()  # the epsilon control follows the method given
        self._set_panels()
        self._show_original()

    # ------------------------------------------------------------------ images
    def clean_pixels(self) -> torch.Tensor:
        """The clean image as the network sees it: pixel space ``(1, C, size, size)``."""
        name = self.sample
        key = (name, self.size, id(self._photos.get(name)))
        if self._clean is None or self._clean[0] != key:
            photo = self._photos[name] if name in self._photos else sample_image(name)
            self._clean = key, P.clean_pixels(self.handle, photo, int(self.size))
        return self._clean[1]

    def _show_original(self) -> None:
        try:
            png = encode(self.clean_pixels()[0])
        except Exception as exc:  # noqa: BLE001 - shown, the widget stays usable
            self.error = f"{type(exc).__name__}: {exc}"
            return
        with self.hold_sync():
            self.original = png
            if self._last_pixels is None:
                self.image = png  # the static picture before the first run

    # ------------------------------------------------------------------ validation
    @t.validate("sample")
    def _valid_sample(self, proposal: dict) -> str:
        v, values = proposal["value"], [o[1] for o in self.sample_options]
        if values and v not in values:
            raise t.TraitError(f"unknown image {v!r}; choose one of {', '.join(values)}")
        return v

    @t.validate("epsilon", "target")
    def _valid_attack(self, proposal: dict) -> float | int:
        v, eps = proposal["value"], proposal["trait"].name == "epsilon"
        try:
            if eps:
                return P.check_epsilon(v, P.norm_of(self.method))
            return P.check_target(v, self.handle.num_outputs)
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None

    @t.validate("layer", "cam_layer")
    def _valid_layer(self, proposal: dict) -> str:
        name, cam = proposal["value"], proposal["trait"].name == "cam_layer"
        if name == "" and cam:
            return name  # the default Grad-CAM layer
        if not self._layer_info(name).spatial and cam:
            raise t.TraitError(f"Grad-CAM needs a layer with a spatial output; {name!r} has none")
        return name

    @t.validate("n_units")
    def _valid_n_units(self, proposal: dict) -> int:
        v = int(proposal["value"])  # the trait's range first, then the layer's channels
        if self.layer and v > (n := self.handle.layer(self.layer).channels):
            raise t.TraitError(f"n_units={v} is more than the {n} channels of layer {self.layer!r}")
        return v

    # ------------------------------------------------------------------ observers, controls
    def _on_method(self, change: dict) -> None:
        if (new := P.norm_of(change["new"])) != P.norm_of(change["old"]):
            with self.hold_sync():
                self.epsilon_max = L2_MAX if new == "l2" else LINF_MAX
                self._update_controls()
                self.epsilon = self._eps_by_norm[new]  # restarts (already restarting anyway)

    def _on_epsilon(self, change: dict) -> None:
        self._eps_by_norm[P.norm_of(self.method)] = float(change["new"])

    def _control_spec(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        if spec["trait"] != "epsilon":
            return spec
        if P.norm_of(self.method) == "linf":
            help = "pixel units: 1/255 = one grey level"
            return dict(spec, step=1 / 255, format="fraction255", help=help)
        help = "L2 norm of the whole perturbation, pixel units"
        return dict(spec, label="Epsilon (L2)", step=0.05, help=help)

    def _set_panels(self) -> None:
        image = [
            ("original", "Original"),
            ("perturbation", "Perturbation (amplified)"),
            ("adversarial", "Adversarial"),
        ]
        self.panels = [
            *[{"kind": "image", "trait": n, "label": lab} for n, lab in image],
            {
                "kind": "bars",
                "trait": "predictions",
                "label": "Top-5 before and after",
                "series": ["clean", "adversarial"],
                "max": 1.0,
                "digits": 3,
            },
            {"kind": "text", "trait": "details", "label": "Summary"},
            *[{"kind": "image", "trait": n, "label": lab} for n, lab in MAPS],
            {
                "kind": "table",
                "trait": "unit_rows",
                "label": "Most changed units",
                "columns": P.UNIT_TABLE_COLUMNS,
                "sort": "change",
                "descending": True,
                "select_trait": "selected_unit",
                "select_key": "unit",
            },
            {
                "kind": "image",
                "trait": "units_image",
                "grid": [P.grid_rows(self.n_units), P.UNIT_COLS],
                "label": "What those units look for (activation maximization)",
            },
            {"kind": "chart", "label": "Attack objective per step", "trait": "history"},
            {"kind": "progress"},
        ]

    # ------------------------------------------------------------------ the run
    def _snapshot(self) -> P.AttackSettings:
        """The settings a run computes with (traits may change while it runs)."""
        return P.AttackSettings(**{n: getattr(self, n) for n in field_names(P.AttackSettings)})

    def _before_run(self) -> None:
        self._run = P.AdversarialRun(self._snapshot(), image=self.sample)

    def _describe(self) -> str:
        return self._run.settings.describe(self.handle.class_name)

    def _progress_text(self, step: Step, history: list[float]) -> str:
        return self._run.progress_text(step, history[-1] if history else None)

    def _done_text(self, n_steps: int, elapsed: float) -> str:
        return self._run.done_text(elapsed)

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        return None  # no frame stream: every picture is a bytes trait

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        run = self._run
        self._clean_px = clean = self.clean_pixels()
        done = yield from P.run_steps(
            self.handle,
            clean,
            run,
            attack_cache=self._attack_cache,
            am_cache=self._am_cache,
            on_analysis=self._publish,
            stop_event=stop_event,
        )
        if done is not None and done.units_pixels is not None:
            with self.hold_sync():
                self.units_image = encode(P.units_grid(done.units_pixels, P.UNIT_COLS))
                self._show_report()

    # ------------------------------------------------------------------ results -> traits
    def _sync_extra(self, step: Step) -> None:
        s = self._run.settings
        if step.metrics.get("phase") != "units":
            eps = s.epsilon if s.norm == "linf" else None
            if (pictures := P.live_pictures(step.image, self._clean_px, eps)) is not None:
                self.adversarial, self.perturbation = (encode(p) for p in pictures)

    def _publish(self, run: P.AdversarialRun) -> None:
        """Traits of the attack's results; called on the worker right after the analyses."""
        r, s, name = run.analysis, run.settings, self.handle.class_name
        assert r is not None
        lines = P.summary_lines(
            r, method=s.method, eps=s.epsilon, steps=s.steps, target=s.target, class_name=name,
            attribution_error=run.attribution_error,
        )  # fmt: skip
        tiles = P.attribution_tiles(r, name)[0] if r.attribution else []
        with self.hold_sync():
            self.original, self.adversarial, self.perturbation = (
                encode(x[0]) for x in (r.clean, r.adversarial, r.amplified)
            )
            self.predictions = P.prediction_table(r)
            self.clean_label = P.top1_label(r.clean_top[0][0])
            self.adversarial_label = P.top1_label(r.adversarial_top[0][0])
            self.details = "\n".join(lines)
            for (trait, _), tile in zip_longest(MAPS, tiles):
                setattr(self, trait, b"" if tile is None else encode(tile))
            self.selected_unit = -1
            self.unit_rows = P.unit_table(r)
            self.units_image = b""
            self._show_report()

    def _show_report(self) -> None:
        """One picture of the whole result (images, maps, units): the static view, save()."""
        report = self._run.report(self.title, self.handle.class_name)
        self._last_pixels = pil_to_tensor(report)[0]
        self.image = encode(report)

    def _on_click(self, content: dict) -> None:
        """A click on the unit pictures selects that unit (the table highlights its row)."""
        r = self.result
        if content.get("trait") != "units_image" or r is None or not r.units:
            return
        units = [u["unit"] for u in r.units[0]]
        cell = self._clicked_cell(content, P.grid_rows(len(units)), P.UNIT_COLS)
        if cell is not None and (i := cell[0] * P.UNIT_COLS + cell[1]) < len(units):
            self.selected_unit = units[i]

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        self._last_record = self._run.record()

    def _result_text(self) -> str:
        at = self.result.adversarial_top[0][0] if self.result is not None else None
        return "" if at is None else f"; now {at['name']} ({at['prob']:.2f})"

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path) -> dict[str, Path]:
        """Write ``<path>.png`` (the result picture) and ``<path>.json`` (:meth:`record`).

        >>> w.export("results/cat_pgd")          # doctest: +SKIP
        {'png': PosixPath('results/cat_pgd.png'), 'json': PosixPath('results/cat_pgd.json')}
        """
        png_path, js = export_paths(path, ".png", ".json")
        png = self.save(png_path)
        js.write_text(json.dumps(self.record(), indent=2))
        return {"png": png, "json": js}

    @property
    def result(self) -> PairAnalysis | None:
        """The :class:`~cnnvis_widgets.core.adversarial.PairAnalysis` of the last run."""
        return self._run.analysis
