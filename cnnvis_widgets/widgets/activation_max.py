"""The Activation Maximization widget: pick a layer and a unit, drag sliders, watch it converge.

Past Lucid: the ``maco`` preset with its importance (alpha) map, and feature accentuation of a
photo (start from a photo, side by side with plain AM from it; :mod:`._am_photo`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import traitlets as t

from ..core import activation_max as am
from ..core.activation_max_accent import default_accent_layer
from ..core.blocks import objectives as O
from ..core.blocks.optimize import Step
from ..core.blocks.settings import field_names
from ..models import ModelHandle
from ..models.layers import default_layer
from . import _optimization as opt
from ._am_photo import AMPhoto
from ._base import BoundedInt, CnnvisWidget, ModelArg, setting

__all__ = ["ActivationMaximization"]

#: the traits that are fields of AMSettings (the second jitter follows the first: no trait)
_SETTING_TRAITS = tuple(sorted(field_names(am.AMSettings) - {"jitter2"}))


class ActivationMaximization(opt.PresetSliders, AMPhoto, CnnvisWidget):
    """Synthesize the image that drives a unit, a channel or a class logit, live.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default, embedded ImageNet weights), ``"torchvision:<arch>"``,
        your own module, or a handle from :func:`cnnvis_widgets.load_model`.
    image : str, PIL image, tensor or bytes, optional
        Start from this photo (feature accentuation): a packaged photo's name (``"cat"``) or your
        own picture; None (default) starts from noise. The ``sample`` select changes it.
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    **traits
        Initial values of any trait below (``layer=``, ``unit=``, ``preset=``, ``steps=``...).

    Examples
    --------
    >>> w = ActivationMaximization(layer="_blocks.8", unit=12)    # doctest: +SKIP
    >>> w                                                          # doctest: +SKIP
    >>> w.run(); w.wait(); w.save("unit12.png")                    # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    layer_options = t.List(help="[label, name] of every conv-like layer (read-only).").tag(
        sync=True
    )
    unit_max = t.Int(0, help="Largest valid unit of the layer (read-only).").tag(sync=True)
    class_options = t.List(help="[label, index] of every class (read-only).").tag(sync=True)

    # the settings, in the order of their controls ------------------------- Objective
    layer = setting(
        t.Unicode("", help="Dotted name of the layer whose unit is maximized."),
        "select", "Layer", "Objective", restart=True,
        options_trait="layer_options", help="conv-like layers, with channels",
    )  # fmt: skip
    objective = opt.choice_setting(
        {"channel": "channel", "neuron": "neuron", "class": "class logit", "dream": "DeepDream"},
        "channel",
        "channel: mean of a feature map; neuron: its centre position; class: a logit; dream: the "
        "whole layer (DeepDream).",
        "toggle", "Maximize", "Objective", restart=True,
    )  # fmt: skip
    unit = setting(
        t.Int(0, help="Channel of the layer (first unit in grid mode)."),
        "slider", "Unit", "Objective", restart=True,
        min=0, max_trait="unit_max", step=1,
        visible_when={"trait": "objective", "in": ["channel", "neuron"]},
    )  # fmt: skip
    class_index = setting(
        t.Int(0, help="Class whose logit is maximized (objective 'class')."),
        "search", "Class", "Objective", restart=True,
        options_trait="class_options", visible_when={"trait": "objective", "in": ["class"]},
    )  # fmt: skip
    grid = setting(
        BoundedInt(1, 1, 64, help="Number of units optimized together as one batch (grid mode)."),
        "slider", "Grid (units)", "Objective", restart=True, step=1,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Run
    preset = opt.preset_setting(am.PRESETS, "lucid", "Run")
    fed_size = opt.choice_setting(
        dict(zip(am.FED_SIZES, ["model's input size", "image size"])),
        "model",
        "Size the network sees: 'model' resamples the transformed image to the model's input "
        "size (Lucid/Lucent); 'param' feeds it at its own size. The image shown stays at 'size'.",
        "select", "Network sees", "Run", live=True,
    )  # fmt: skip
    steps = opt.steps_setting(512, "Run", "Number of optimization steps.")
    lr = opt.lr_setting(0.05, 0.0001, "Run", "Learning rate.")
    size = opt.size_setting("Run", "Side of the optimized image in pixels.")
    seed = opt.seed_setting("Run")
    show_alpha = setting(
        t.Bool(False, help="Show the image through its importance (alpha) map: the input "
               "gradients accumulated over the run (MaCo, Fel et al. 2023)."),
        "checkbox", "Show importance (alpha)", "Run",
    )  # fmt: skip
    # ------------------------------------------- Regularizers (fields of AMSettings, all live)
    l2_decay, blur_sigma, blur_every, clip_norm_pct, clip_contrib_pct, tv_weight, l2_weight = (
        opt.live_sliders(
            am.AMSettings, "Regularizers",
            "l2_decay blur_sigma blur_every clip_norm_pct clip_contrib_pct tv_weight l2_weight",
            collapsed=True,
        )
    )  # fmt: skip
    # --------------------------------------------- Transforms (fields of AMSettings, all live)
    pad, jitter, scale, rotate, diversity = opt.live_sliders(
        am.AMSettings, "Transforms", "pad jitter scale rotate diversity", collapsed=True
    )
    # ---------------------------------- Feature accentuation (a field of AMSettings, live)
    (accentuation,) = opt.live_sliders(
        am.AMSettings, "Feature accentuation", "accentuation",
        visible_when={"trait": "has_photo", "in": [True]},
    )  # fmt: skip
    accent_layer = setting(
        t.Unicode("", help="Layer whose features stay close to the photo's ('' = auto)."),
        "select", "Layer kept close", "Feature accentuation", restart=True,
        options_trait="accent_options", visible_when={"trait": "has_photo", "in": [True]},
    )  # fmt: skip

    _presets = am.PRESETS

    def __init__(
        self, model: ModelArg | None = None, image: Any = None, *, device: str | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self._image_arg = image
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._result: am.AMResult | None = None
        self._accented: str | None = None  # the layer kept close to the photo in the last run
        self._alpha_so_far = None  # the running AlphaMap (metrics of the last step)
        photo = self._photo_traits(self._image_arg)
        layer = kwargs.pop("layer", None) or default_layer(h)
        h.layer(layer)  # KeyError listing the nearest names
        preset = self._known_preset(kwargs.pop("preset", "lucid"))
        names = h.class_names or [f"class {i}" for i in range(h.num_outputs)]
        return dict(
            title="Activation maximization",
            model_name=h.name,
            layer_options=[[li.label(), li.name] for li in h.conv_layers()],
            class_options=[[f"{i}: {n}", i] for i, n in enumerate(names)],
            layer=layer,
            unit_max=h.layer(layer).channels - 1,
            preset=preset,
            **self._preset_values(preset),
            **photo,
        )

    def _ready(self) -> None:
        self.observe(self._on_layer, names=["layer"])
        self.observe(self._on_preset, names=["preset"])
        self._photo_ready()  # the panels too

    # ------------------------------------------------------------------ validation
    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        info = self._layer_info(name)
        if not info.spatial and self.objective in ("neuron", "dream"):
            raise t.TraitError(f"layer {name!r} has no spatial output; use objective 'channel'")
        return name

    @t.validate("accent_layer")
    def _valid_accent_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        if name:
            self._layer_info(name)
        return name

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        unit = int(proposal["value"])
        n = self.handle.layer(self.layer).channels if self.layer else 1
        last = unit + max(1, self.grid) - 1
        if unit < 0 or last >= n:
            raise t.TraitError(
                f"unit {unit} is out of range for layer {self.layer!r}: valid 0..{n - 1}"
                + (
                    f" (grid of {self.grid} units needs unit <= {n - self.grid})"
                    if self.grid > 1
                    else ""
                )
            )
        return unit

    @t.validate("class_index")
    def _valid_class(self, proposal: dict) -> int:
        c = int(proposal["value"])
        if not 0 <= c < self.handle.num_outputs:
            raise t.TraitError(f"class {c} is out of range: valid 0..{self.handle.num_outputs - 1}")
        return c

    @t.validate("grid")
    def _valid_grid(self, proposal: dict) -> int:
        g = int(proposal["value"])  # 1..64: the trait's range
        if self.layer and self.unit + g > self.handle.layer(self.layer).channels:
            raise t.TraitError(
                f"a grid of {g} units from unit {self.unit} does not fit layer {self.layer!r} "
                f"({self.handle.layer(self.layer).channels} channels)"
            )
        return g

    # ------------------------------------------------------------------ observers
    def _on_layer(self, change: dict) -> None:
        n = self.handle.layer(change["new"]).channels
        with self.hold_sync():
            if self.grid > n:
                self.set_trait("grid", n)
            if self.unit + self.grid > n:
                self.set_trait("unit", max(0, n - self.grid))
            self.unit_max = n - 1

    def _preset_values(self, name: str) -> dict[str, Any]:
        s = am.preset_settings(name)
        return {**{k: getattr(s, k) for k in _SETTING_TRAITS}, "size": am.PRESETS[name].size}

    # ------------------------------------------------------------------ the run
    def make_objective(self) -> O.Objective:
        """The core objective for the current traits (each unit twice, accentuated and plain,
        when the run starts from a photo)."""
        pair = 2 if self.has_photo else 1
        listed = [u for u in range(self.unit, self.unit + self.grid) for _ in range(pair)]
        units: int | list[int] = self.unit if len(listed) == 1 else listed
        if self.objective == "channel":
            return O.channel(self.layer, units)
        if self.objective == "neuron":
            return O.neuron(self.layer, units)
        if self.objective == "class":
            n = self.grid * pair
            return O.class_logit(self.class_index if n == 1 else [self.class_index] * n)
        return O.layer(self.layer)

    def _describe(self) -> str:
        if self.objective == "class":
            return f"class {self.class_index} ({self.handle.class_name(self.class_index)})"
        if self.objective == "dream":
            return f"{self.layer} DeepDream"
        units = (
            f"unit {self.unit}"
            if self.grid == 1
            else f"units {self.unit}-{self.unit + self.grid - 1}"
        )
        what = f"{self.layer} {units}" + (" centre" if self.objective == "neuron" else "")
        return what + (f", accentuating photo {self.sample!r}" if self.has_photo else "")

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        settings = am.preset_settings(self.preset, **{k: getattr(self, k) for k in _SETTING_TRAITS})
        self._live, self._result = settings, None
        self._objective = self.make_objective()
        self._alpha_so_far = None
        self._show_alpha_map(None)
        start = self._start_kwargs(self.grid)
        self._accented = (
            (self.accent_layer or default_accent_layer(self.handle, self._objective))
            if start
            else None
        )
        if self.objective == "channel" and self.grid == 1 and not start:  # in the Atlas?
            from ..core.atlas import cached_unit_image

            hit = cached_unit_image(
                self.handle,
                self.layer,
                self.unit,
                preset=self.preset,
                settings=settings,
                size=self.size,
                seed=self.seed,
            )
            if hit is not None:
                self._live = None
                yield Step(settings.steps - 1, None, hit.to(self.handle.device), {}, settings.steps)
                return
        try:
            self._result = yield from am.maximize_steps(
                self.handle,
                self._objective,
                preset=self.preset,
                size=self.size,
                batch=self.grid * (2 if start else 1),
                seed=self.seed,
                settings=settings,
                stop_event=stop_event,
                **start,
            )
        finally:
            self._live = None

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        rec: dict[str, Any] = {"objective": self._objective.name if step else None}
        self._show_alpha_map(self._result, step)
        if self._accented is not None:
            rec["photo"], rec["accent_layer"] = self.sample, self._accented
        if step is not None:
            rec["final_loss"] = step.loss
            try:
                # the run's own evaluation when it ran to its end, else (stopped, or the image
                # came from the atlas cache) the shown image's
                act = (
                    self._result.activation
                    if self._result is not None
                    else am.evaluate(
                        self.handle, self._objective, step.image.clamp(0, 1), fed_size=self.fed_size
                    )
                )
                rec["activation"] = [round(float(a), 6) for a in act]
            except Exception as exc:  # noqa: BLE001 - the run's own error is already shown
                rec["activation_error"] = str(exc)
        self._last_record = rec

    def _result_text(self) -> str:
        act = self._last_record.get("activation")
        if not act:
            return ""
        return f", activation {sum(act) / len(act):.3g}"
