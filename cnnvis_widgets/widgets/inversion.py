"""The Network Inversion widget: how much of a photo each layer keeps, live.

Pick a photo (or upload one) and a layer; the regularized reconstruction of Mahendran & Vedaldi
(2015) converges beside the original, with its normalized feature error per step. The decoder
method (Dosovitskiy & Brox 2016) reconstructs in one pass once a decoder is trained for the layer:
the *Train decoder* button trains it with live progress; Stop keeps what was learned and a second
press resumes. Strip mode shows the reconstructions from several layers side by side.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import torch
import traitlets as t

from ..core import inversion as inv
from ..core import inversion_results as R
from ..core.blocks.optimize import Step
from ..core.blocks.settings import from_preset
from ..imaging import make_grid
from ..models import ModelHandle
from ..models.layers import default_inversion_layer as _default_layer
from ..models.layers import inversion_layers as default_layers
from . import _optimization as opt
from ._base import (
    BoundedFloat,
    CnnvisWidget,
    ModelArg,
    setting,
)
from ._decoder_training import DecoderTraining, training_settings
from ._photos import UPLOAD_TRAITS, SampleUploadMixin
from ._reconstruction import ReconstructionResult
from ._sample_photo import SamplePhoto

__all__ = ["Inversion", "default_layers"]

FE_LABEL = "Feature error ‖φ(x) − φ₀‖² / ‖φ₀‖²"
_REG = {"trait": "method", "in": ["regularized"]}  # controls of the regularized method
_DEC = {"trait": "method", "in": ["decoder"]}  # ... of the decoder
_SETTING_TRAITS = tuple(f.name for f in dataclasses.fields(inv.InversionSettings))


class Inversion(
    ReconstructionResult,
    DecoderTraining,
    opt.PresetSliders,
    SamplePhoto,
    SampleUploadMixin,
    CnnvisWidget,
):
    """Reconstruct a photo from what one layer keeps of it (network inversion), live.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default, embedded ImageNet weights), ``"torchvision:<arch>"``,
        your own module, or a handle from :func:`cnnvis_widgets.load_model`.
    image : str, PIL image, tensor or bytes
        A packaged photo's name (``"cat"``, see :func:`cnnvis_widgets.data.sample_images`), or
        your own picture (a PIL image, a pixel-space tensor, or image file bytes).
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    **traits
        Initial values of any trait below (``layer=``, ``method=``, ``steps=``, ``strip=``...).

    Examples
    --------
    >>> w = Inversion(image="cat", layer="_blocks.3")          # doctest: +SKIP
    >>> w                                                       # doctest: +SKIP
    >>> w.run(); w.wait(); w.export("cat_blocks3")  # PNG + JSON  # doctest: +SKIP
    >>> w.strip = True                                          # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    layer_options = t.List(help="[label, name] of every conv-like layer (read-only).").tag(
        sync=True
    )

    # the settings, in the order of their controls: Image (sample, upload: SamplePhoto)
    size = opt.size_setting("Image", "Side of the image in pixels.")
    # ---------------------------------------------------------------------- Layer
    layer = setting(
        t.Unicode("", help="Dotted name of the layer whose features are inverted."),
        "select", "Layer", "Layer", restart=True, options_trait="layer_options",
        help="conv-like layers, with channels and size",
    )  # fmt: skip
    method = opt.choice_setting(
        {"regularized": "regularized", "decoder": "decoder"},
        "regularized",
        "regularized: optimize an image whose features match, with natural-image priors "
        "(Mahendran & Vedaldi 2015); decoder: one pass of a trained up-convolutional decoder "
        "(Dosovitskiy & Brox 2016).",
        "toggle", "Method", "Layer", restart=True,
    )  # fmt: skip
    strip = setting(
        t.Bool(
            False, help="Reconstruct from every layer of strip_layers, side by side (one batch)."
        ),
        "checkbox", "Strip of layers", "Layer", restart=True,
    )  # fmt: skip
    strip_layers = setting(
        t.Unicode("", help="Comma-separated layer names of the strip, shallow to deep."),
        "text", "Strip layers", "Layer", restart=True, help="comma-separated layer names",
        visible_when={"trait": "strip", "in": [True]},
    )  # fmt: skip
    # ---------------------------------------------------------------------- Optimization
    preset = opt.preset_setting(inv.PRESETS, "mahendran", "Optimization", visible_when=_REG)
    steps = opt.steps_setting(
        200, "Optimization", "Number of optimization steps (live).", visible_when=_REG
    )
    lr = opt.lr_setting(
        0.02, 1e-06, "Optimization", "Initial learning rate, decayed along a cosine (live).",
        visible_when=_REG,
    )  # fmt: skip
    # ----------------------------------------- Priors (fields of InversionSettings, all live)
    alpha_weight, alpha, tv_weight, tv_beta, jitter = opt.live_sliders(
        inv.InversionSettings, "Priors", "alpha_weight alpha tv_weight tv_beta jitter",
        collapsed=True, visible_when=_REG,
    )  # fmt: skip
    seed = opt.seed_setting("Optimization")
    # ----------------------------------------- Decoder (DecoderSettings; train_lr: no control)
    train_steps, train_batch, feature_weight = training_settings(_DEC)
    # ---------------------------------------------------------------------- without a control
    lr_end = setting(
        BoundedFloat(0.001, 0.0, 10.0, help="Learning rate at the last step (live)."), live=True
    )
    jitter_until = setting(
        BoundedFloat(
            0.75, 0.0, 1.0, help="Fraction of the steps with jitter; the rest run without (live)."
        ),
        live=True,
    )

    _loss_label = "feature error"
    _presets = inv.PRESETS

    def __init__(
        self, model: ModelArg | None = None, image: Any = "cat", *, device: str | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self._image_arg = image
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._decoders = {}
        self._job_ran = "run"
        self._layers_run: list[str] = []
        self._missing: list[str] = []
        self._composite: bytes = b""
        sample, options = self._photo_choices(self._image_arg)
        layer = kwargs.pop("layer", None) or _default_layer(h)
        h.layer(layer)  # KeyError listing the nearest names
        strip_layers = kwargs.pop("strip_layers", None)
        if strip_layers is None:
            strip_layers = default_layers(h)
        preset = self._known_preset(kwargs.pop("preset", "mahendran"))
        return dict(
            title="Network inversion",
            model_name=h.name,
            sample_options=options,
            sample=sample,
            layer_options=[[li.label(), li.name] for li in h.conv_layers()],
            layer=layer,
            strip_layers=strip_layers if isinstance(strip_layers, str) else ", ".join(strip_layers),
            preset=preset,
            **self._preset_values(preset),
        )

    def _ready(self) -> None:
        self.observe(self._on_preset, names=["preset"])
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(self._on_picture, names=["sample", "size"])
        self.observe(lambda change: self._refresh_decoder_info(), names=["layer"])
        self.panels = self._panel_specs(FE_LABEL)
        self._show_original()
        self._refresh_decoder_info()

    # ------------------------------------------------------------------ validation
    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        self._layer_info(proposal["value"])
        return proposal["value"]

    @t.validate("strip_layers")
    def _valid_strip_layers(self, proposal: dict) -> str:
        return self._layer_list(
            self._parse_layers(proposal["value"]), "strip_layers", 12, "a strip"
        )

    @staticmethod
    def _parse_layers(text: str) -> list[str]:
        return [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]

    # ------------------------------------------------------------------ observers
    def _preset_values(self, name: str) -> dict[str, Any]:
        s = inv.PRESETS[name].settings
        return {k: getattr(s, k) for k in _SETTING_TRAITS}

    def _on_picture(self, change: dict) -> None:
        self._show_original()
        if change["name"] == "size":
            self._refresh_decoder_info()  # fully connected layers' decoders depend on it

    # ------------------------------------------------------------------ the run
    def _describe(self) -> str:
        if self._job_ran == "train":
            return f"training the decoder of {self.layer}"
        if self.strip:
            n = len(self._parse_layers(self.strip_layers))
            return f"strip of {n} layers, {self.method}"
        extra = f" ({self.preset})" if self.method == "regularized" else ""
        return f"{self.layer} {self.method}{extra}"

    def _before_run(self) -> None:
        # which job this run does is decided once, before the base describes it
        self._job_ran, self._job = self._job, "run"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        job = self._job_ran
        self.details = ""
        if job == "train" or not self.strip:
            self._layers_run = [self.layer]
        else:
            names = self._parse_layers(self.strip_layers)
            self._layers_run = sorted(names, key=lambda n: self.handle.layer(n).order)
        specs = self._panel_specs(
            "Decoder training loss (pixel MSE)" if job == "train" else FE_LABEL
        )
        if specs != self.panels:
            self.panels = specs
        try:
            if job == "train":
                yield from self._train_steps(stop_event)
            elif self.method == "regularized":
                yield from self._invert_steps(stop_event)
            else:
                images, fe, self._missing = R.decode_layers(
                    self.handle, self.target(), self._layers_run, self._decoder
                )
                yield Step(0, float(fe.nan_to_num(0.0).mean()), images, {"feature_error": fe}, 1)
        finally:
            self._live = None

    def _invert_steps(self, stop_event: threading.Event) -> Iterator[Step]:
        settings = from_preset(
            inv.PRESETS[self.preset].settings, **{k: getattr(self, k) for k in _SETTING_TRAITS}
        )
        self._live = settings
        gen = inv.invert_layers_steps(
            self.handle,
            self.target(),
            list(self._layers_run),
            preset=self.preset,
            settings=settings,
            seed=self.seed,
            stop_event=stop_event,
        )
        for step in gen:
            fe = step.metrics["feature_error"]
            step.metrics["loss"] = step.loss_ref  # read only if asked for (no sync per step)
            step.loss = fe.detach().float().mean()  # the chart shows the feature error
            yield step

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        img = step.image
        if img is None or img.shape[0] == 1:
            return None if img is None else img[0]
        return make_grid(img.clamp(0, 1), ncol=img.shape[0])

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        train = self._job_ran == "train"
        rec: dict[str, Any] = {
            "job": self._job_ran,
            "method": "decoder training" if train else self.method,
            "layers": list(self._layers_run),
        }
        self._composite = b""
        self._last_record = rec
        if step is None or step.image is None:
            return
        try:
            if train:
                self._composite = self._finish_training(step, rec)
            else:
                self._composite = self._record_reconstruction(step, rec)
        except Exception as exc:  # noqa: BLE001 - the run's own error is already shown
            rec["result_error"] = f"{type(exc).__name__}: {exc}"

    def _settings(self) -> dict[str, Any]:
        # the model's name was recorded among the settings before they were declared: kept
        return {**super()._settings(), "model_name": self.model_name}

    # ------------------------------------------------------------------ controls and panels
    def _panel_specs(self, chart_label: str) -> list[dict]:
        return [
            {"kind": "image", "trait": "original", "label": "Original"},
            {"kind": "image", "label": "Reconstruction"},
            {"kind": "chart", "label": chart_label, "trait": "history"},
            {"kind": "text", "trait": "details", "label": "Result"},
            {"kind": "progress"},
        ]

    def _control_specs(self) -> list[dict]:
        train = {"kind": "button", "label": "Train decoder", "action": "train", "group": "Decoder"}
        return super()._control_specs() + [dict(train, visible_when=_DEC)]
