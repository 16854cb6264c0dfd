"""The Network Inversion widget: how much of a photo each layer keeps, live.

Pick a photo (or upload one) and a layer; the regularized reconstruction of Mahendran & Vedaldi
(2015) converges beside the original, with its normalized feature error per step. The decoder
method (Dosovitskiy & Brox 2016) reconstructs in one pass once a decoder is trained for the layer:
the *Train decoder* button trains it with live progress; Stop keeps what was learned and a second
press resumes. Strip mode shows the reconstructions from several layers side by side.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import traitlets as t
from PIL import Image

from ..core import inversion as inv
from ..core import inversion_results as R
from ..core import upconv
from ..core.blocks.optimize import Step
from ..data import load_image, sample_images
from ..imaging import encode, make_grid, to_pil
from ..models import ModelHandle
from ..models.layers import default_inversion_layer as _default_layer
from ..models.layers import inversion_layers as default_layers
from ._base import (
    BoundedFloat,
    BoundedInt,
    CnnvisWidget,
    export_paths,
    get_handle,
    setting,
    upload_trait,
)
from ._photos import UPLOAD_TRAITS, SampleUploadMixin, pixel_tensor

__all__ = ["Inversion", "default_layers"]

FE_LABEL = "Feature error ‖φ(x) − φ₀‖² / ‖φ₀‖²"
CUSTOM = "custom"
_REG = {"trait": "method", "in": ["regularized"]}  # controls of the regularized method
_DEC = {"trait": "method", "in": ["decoder"]}  # ... of the decoder
_SETTING_TRAITS = tuple(f.name for f in dataclasses.fields(inv.InversionSettings))
_TRAIN_TRAITS = {"train_steps": "steps", "train_lr": "lr", "train_batch": "batch_size"}
_TRAIN_TRAITS["feature_weight"] = "feature_weight"


class Inversion(SampleUploadMixin, CnnvisWidget):
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
    sample_options = t.List(help="[label, value] of every photo offered (read-only).").tag(
        sync=True
    )
    original = t.Bytes(b"", help="PNG of the photo as the network sees it (read-only).").tag(
        sync=True
    )
    layer_options = t.List(help="[label, name] of every conv-like layer (read-only).").tag(
        sync=True
    )

    # the settings, in the order of their controls ------------------------- Image
    sample = setting(
        t.Unicode(
            "cat", help="The photo reconstructed: a packaged photo's name, 'upload' or 'custom'."
        ),
        "select", "Photo", "Image", restart=True, options_trait="sample_options",
    )  # fmt: skip
    upload = setting(
        upload_trait("Bytes of an image file chosen in the browser (JS sets)."),
        "upload", "Your image", "Image", record=False, accept="image/*", name_trait="upload_name",
    )  # fmt: skip
    size = setting(
        BoundedInt(128, 16, 1024, help="Side of the image in pixels."),
        "slider", "Size (px)", "Image", restart=True, step=16,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Layer
    layer = setting(
        t.Unicode("", help="Dotted name of the layer whose features are inverted."),
        "select", "Layer", "Layer", restart=True, options_trait="layer_options",
        help="conv-like layers, with channels and size",
    )  # fmt: skip
    method = setting(
        t.Enum(
            ["regularized", "decoder"],
            "regularized",
            help="regularized: optimize an image whose features match, with natural-image priors "
            "(Mahendran & Vedaldi 2015); decoder: one pass of a trained up-convolutional decoder "
            "(Dosovitskiy & Brox 2016).",
        ),
        "toggle", "Method", "Layer", restart=True,
        options=[["regularized", "regularized"], ["decoder", "decoder"]],
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
    preset = setting(
        t.Enum(
            list(inv.PRESETS),
            "mahendran",
            help="Recipe from the literature; sets the sliders below.",
        ),
        "select", "Preset", "Optimization", restart=True,
        options=[[k, k] for k in inv.PRESETS], visible_when=_REG,
    )  # fmt: skip
    steps = setting(
        BoundedInt(200, 1, 100_000, help="Number of optimization steps (live)."),
        "slider", "Iterations", "Optimization", live=True, log=True, step=1, visible_when=_REG,
    )  # fmt: skip
    lr = setting(
        BoundedFloat(
            0.02, 1e-06, 10.0, help="Initial learning rate, decayed along a cosine (live)."
        ),
        "slider", "Learning rate", "Optimization", live=True, log=True, visible_when=_REG,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Priors
    alpha_weight = setting(
        BoundedFloat(1e-3, 0.0, 10.0, help="Weight of the alpha-norm prior (live)."),
        "slider", "Alpha-norm weight", "Priors", live=True, collapsed=True, step=0.001,
        visible_when=_REG,
    )  # fmt: skip
    alpha = setting(
        BoundedFloat(6.0, 1.0, 20.0, help="Exponent of the alpha-norm prior (live)."),
        "slider", "Alpha", "Priors", live=True, step=0.5, visible_when=_REG,
    )  # fmt: skip
    tv_weight = setting(
        BoundedFloat(3.0, 0.0, 100.0, help="Weight of the total-variation prior (live)."),
        "slider", "TV weight", "Priors", live=True, step=0.1, visible_when=_REG,
    )  # fmt: skip
    tv_beta = setting(
        BoundedFloat(2.0, 1.0, 4.0, help="Exponent of the total-variation prior (live)."),
        "slider", "TV beta", "Priors", live=True, step=0.1, visible_when=_REG,
    )  # fmt: skip
    jitter = setting(
        BoundedInt(2, 0, 64, help="Random shift in pixels, during the first steps (live)."),
        "slider", "Jitter (px)", "Priors", live=True, step=1, visible_when=_REG,
    )  # fmt: skip
    seed = setting(
        BoundedInt(0, 0, 2**31 - 1, help="Random seed: the same seed repeats the run."),
        "int", "Seed", "Optimization", restart=True,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Decoder
    train_steps = setting(
        BoundedInt(500, 1, 1_000_000, help="Decoder training: total updates (live; resumes)."),
        "slider", "Training steps", "Decoder", live=True, log=True, step=1, visible_when=_DEC,
    )  # fmt: skip
    train_batch = setting(
        BoundedInt(8, 1, 512, help="Decoder training: images per update (live)."),
        "slider", "Batch", "Decoder", live=True, log=True, step=1, visible_when=_DEC,
    )  # fmt: skip
    feature_weight = setting(
        BoundedFloat(
            0.0,
            0.0,
            10.0,
            help="Decoder training: weight of the feature L2 loss (live; 0 = pixel loss only).",
        ),
        "slider", "Feature loss weight", "Decoder", live=True, step=0.01, visible_when=_DEC,
    )  # fmt: skip
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
    train_lr = setting(
        BoundedFloat(1e-3, 1e-07, 1.0, help="Decoder training: Adam learning rate (live)."),
        live=True,
    )
    upload_name = setting(
        t.Unicode("", help="File name of the uploaded image (JS sets)."), record=False
    )
    feature_error = t.Float(
        -1.0,
        help="Normalized feature error ||phi(x)-phi0||^2/||phi0||^2 of the final reconstruction, "
        "without jitter (first layer of a strip; -1 before a run) (read-only).",
    ).tag(sync=True)
    pixel_correlation = t.Float(
        0.0, help="Pixel correlation of the final reconstruction with the original (read-only)."
    ).tag(sync=True)
    details = t.Unicode("", help="The result in words and numbers (read-only).").tag(sync=True)
    decoder_info = t.Unicode("", help="State of the decoder of the layer (read-only).").tag(
        sync=True
    )

    _loss_label = "feature error"

    def __init__(
        self,
        model: str | torch.nn.Module | ModelHandle = "efficientnet_lite0",
        image: Any = "cat",
        *,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._check_arguments(kwargs, settings_only=True)
        self.handle = get_handle(model, **({"device": device} if device else {}))
        h = self.handle
        self._photos: dict[str, Image.Image | torch.Tensor] = {}
        self._live: inv.InversionSettings | upconv.DecoderSettings | None = None
        self._job = "run"
        self._job_ran = "run"
        self._target: torch.Tensor | None = None
        self._target_key: tuple | None = None
        self._layers_run: list[str] = []
        self._missing: list[str] = []
        self._composite: bytes = b""
        self._decoders: dict[str, upconv.UpconvDecoder] = {}
        self._lock = threading.RLock()
        names = list(sample_images()) if h.in_channels in (1, 3) else []
        options = [[n, n] for n in names]
        sample = self._adopt_image(image, names, options)
        layer = kwargs.pop("layer", None) or _default_layer(h)
        h.layer(layer)  # KeyError listing the nearest names
        strip_layers = kwargs.pop("strip_layers", None)
        if strip_layers is None:
            strip_layers = default_layers(h)
        if not isinstance(strip_layers, str):
            strip_layers = ", ".join(strip_layers)
        preset = kwargs.pop("preset", "mahendran")
        if preset not in inv.PRESETS:
            raise t.TraitError(f"unknown preset {preset!r}; choose one of {', '.join(inv.PRESETS)}")
        super().__init__(
            title="Network inversion",
            model_name=h.name,
            sample_options=options,
            sample=sample,
            layer_options=[[li.label(), li.name] for li in h.conv_layers()],
            layer=layer,
            strip_layers=strip_layers,
            preset=preset,
            **self._preset_values(preset),
        )
        if kwargs:
            with self.hold_trait_notifications():
                for k, v in kwargs.items():
                    setattr(self, k, v)
        self.observe(self._on_preset, names=["preset"])
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(self._on_picture, names=["sample", "size"])
        self.observe(self._on_layer, names=["layer"])
        self.panels = self._panel_specs(FE_LABEL)
        self._show_original()
        self._refresh_decoder_info()

    # ------------------------------------------------------------------ images
    def _adopt_image(self, image: Any, names: list[str], options: list[list[str]]) -> str:
        if isinstance(image, str) and image in names:
            return image
        if isinstance(image, str) and not Path(image).expanduser().is_file():
            raise KeyError(
                f"unknown sample photo {image!r}; choose one of {', '.join(names)}, or pass a "
                "file path, a PIL image, a tensor or image bytes"
            )
        if isinstance(image, torch.Tensor):
            px = pixel_tensor(image, self.handle.in_channels)
            photo: Image.Image | torch.Tensor = px[0].clamp(0, 1)
        else:
            photo = load_image(image)  # ImageError (a ValueError) saying what is wrong
        self._photos[CUSTOM] = photo
        options.append(["your image", CUSTOM])
        return CUSTOM

    def _photo(self) -> Image.Image | torch.Tensor:
        if self.sample in self._photos:
            return self._photos[self.sample]
        return sample_images()[self.sample]

    def target(self) -> torch.Tensor:
        """The photo as the network sees it: pixel space ``(1, C, size, size)`` on the device."""
        key = (self.sample, self.size, id(self._photos.get(self.sample)))
        with self._lock:
            if self._target is None or self._target_key != key:
                photo = self._photo()
                if isinstance(photo, torch.Tensor):
                    photo = to_pil(photo)
                self._target = inv.target_pixels(self.handle, photo, self.size)
                self._target_key = key
            return self._target

    def _show_original(self) -> None:
        try:
            self.original = encode(self.target()[0].detach().cpu(), "png")
        except Exception as exc:  # noqa: BLE001 - shown, the widget stays usable
            self.error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------ validation
    @t.validate("sample")
    def _valid_sample(self, proposal: dict) -> str:
        v = proposal["value"]
        valid = [o[1] for o in self.sample_options]
        if v not in valid:
            raise t.TraitError(f"unknown photo {v!r}; choose one of {', '.join(valid)}")
        return v

    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        try:
            self.handle.layer(name)
        except KeyError as exc:
            raise t.TraitError(exc.args[0]) from None
        return name

    @t.validate("strip_layers")
    def _valid_strip_layers(self, proposal: dict) -> str:
        names = self._parse_layers(proposal["value"])
        if not names:
            raise t.TraitError("strip_layers is empty: give comma-separated layer names")
        if len(names) > 12:
            raise t.TraitError(f"at most 12 layers in a strip, got {len(names)}")
        for n in names:
            try:
                self.handle.layer(n)
            except KeyError as exc:
                raise t.TraitError(exc.args[0]) from None
        return ", ".join(names)

    @staticmethod
    def _parse_layers(text: str) -> list[str]:
        return [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]

    # ------------------------------------------------------------------ observers
    def _preset_values(self, name: str) -> dict[str, Any]:
        s = inv.PRESETS[name].settings
        return {k: getattr(s, k) for k in _SETTING_TRAITS}

    def _on_preset(self, change: dict) -> None:
        with self.hold_sync(), self.hold_trait_notifications():
            for k, v in self._preset_values(change["new"]).items():
                setattr(self, k, v)

    def _on_live_trait(self, change: dict) -> None:
        live = self._live
        name = change["name"]
        if isinstance(live, inv.InversionSettings) and name in _SETTING_TRAITS:
            setattr(live, name, change["new"])
        elif isinstance(live, upconv.DecoderSettings) and name in _TRAIN_TRAITS:
            setattr(live, _TRAIN_TRAITS[name], change["new"])

    def _on_picture(self, change: dict) -> None:
        self._show_original()
        if change["name"] == "size":
            self._refresh_decoder_info()  # fully connected layers' decoders depend on it

    def _on_layer(self, change: dict) -> None:
        self._refresh_decoder_info()

    def _on_action(self, name: str, content: dict) -> None:
        if name == "train":
            self.train_decoder()

    # ------------------------------------------------------------------ decoders
    def _decoder(self, layer: str) -> upconv.UpconvDecoder | None:
        dec = self._decoders.get(layer)
        if dec is None:
            dec = upconv.load_decoder(self.handle, layer, size=self.size)
            if dec is not None:
                self._decoders[layer] = dec
        return dec

    def _refresh_decoder_info(self) -> None:
        try:
            steps = R.trained_steps(
                self.handle, self.layer, self.size, self._decoders.get(self.layer)
            )
            if steps:
                self.decoder_info = f"decoder for {self.layer}: trained {steps} steps"
            else:
                self.decoder_info = (
                    f"no decoder for {self.layer} yet: press 'Train decoder' (method decoder)"
                )
        except Exception as exc:  # noqa: BLE001 - informative only
            self.decoder_info = f"decoder state unknown ({type(exc).__name__}: {exc})"

    def train_decoder(self) -> None:
        """Train (or resume training) the decoder of the current layer, as the next run.

        Progress streams like any run; :meth:`stop` keeps what was learned (a checkpoint is
        written) and a new call resumes from it, up to ``train_steps``.
        """
        self._job = "train"
        self.run()

    # ------------------------------------------------------------------ the run
    def _describe(self) -> str:
        if self._job_ran == "train":
            return f"training the decoder of {self.layer}"
        if self.strip:
            n = len(self._parse_layers(self.strip_layers))
            return f"strip of {n} layers, {self.method}"
        extra = f" ({self.preset})" if self.method == "regularized" else ""
        return f"{self.layer} {self.method}{extra}"

    def _settings_now(self) -> inv.InversionSettings:
        s = dataclasses.replace(inv.PRESETS[self.preset].settings)
        s.update(**{k: getattr(self, k) for k in _SETTING_TRAITS})
        return s

    def _set_chart(self, label: str) -> None:
        specs = self._panel_specs(label)
        if specs != self.panels:
            self.panels = specs

    def _before_run(self) -> None:
        # which job this run does is decided once, before the base describes it
        self._job_ran, self._job = self._job, "run"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        job = self._job_ran
        self.details = ""
        self._layers_run = [self.layer] if job == "train" or not self.strip else self._strip_list()
        try:
            if job == "train":
                self._set_chart("Decoder training loss (pixel MSE)")
                yield from self._train_steps(stop_event)
            elif self.method == "regularized":
                self._set_chart(FE_LABEL)
                yield from self._invert_steps(stop_event)
            else:
                self._set_chart(FE_LABEL)
                yield from self._decode_steps()
        finally:
            self._live = None

    def _strip_list(self) -> list[str]:
        names = self._parse_layers(self.strip_layers)
        return sorted(names, key=lambda n: self.handle.layer(n).order)

    def _invert_steps(self, stop_event: threading.Event) -> Iterator[Step]:
        settings = self._settings_now()
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
            step.metrics["loss"] = step.loss
            step.loss = float(fe.float().mean())  # the chart shows the feature error
            yield step

    def _decode_steps(self) -> Iterator[Step]:
        images, fe, self._missing = R.decode_layers(
            self.handle, self.target(), self._layers_run, self._decoder
        )
        yield Step(0, float(fe.nan_to_num(0.0).mean()), images, {"feature_error": fe}, 1)

    def _train_steps(self, stop_event: threading.Event) -> Iterator[Step]:
        settings = upconv.DecoderSettings(
            steps=self.train_steps,
            lr=self.train_lr,
            batch_size=self.train_batch,
            feature_weight=self.feature_weight,
        )
        self._live = settings
        self._decoders.pop(self.layer, None)
        try:
            yield from upconv.train_decoder_steps(
                self.handle,
                self.layer,
                None,
                settings=settings,
                size=self.size,
                seed=self.seed,
                sample=self.target(),
                stop_event=stop_event,
            )
        finally:
            self._refresh_decoder_info()

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        img = step.image
        if img is None:
            return None
        if img.shape[0] == 1:
            return img[0]
        return make_grid(img.clamp(0, 1), ncol=img.shape[0])

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        rec: dict[str, Any] = {
            "job": self._job_ran,
            "method": self.method if self._job_ran != "train" else "decoder training",
            "layers": list(self._layers_run),
        }
        self._composite = b""
        if step is None or step.image is None:
            self._last_record = rec
            return
        try:
            target = self.target()
            if self._job_ran == "train":
                rec["train_loss"] = step.loss
                rec["trained_steps"] = step.index + 1
                rec["images_per_s"] = round(float(step.metrics.get("images_per_s", 0.0)), 2)
                dec = step.metrics.get("decoder")
                if dec is not None:
                    self._decoders[self.layer] = dec
                self.details = (
                    f"decoder for {self.layer}: {step.index + 1} of {step.total} steps, training "
                    f"loss {step.loss:.4g}, {rec['images_per_s']:.1f} images/s\n"
                    "left: the photo, right: its reconstruction from the layer's features"
                )
                self._composite = encode(make_grid(step.image.detach().clamp(0, 1), ncol=2))
                self._last_record = rec
                return
            image = step.image.detach().clamp(0, 1)
            m = R.reconstruction_metrics(
                self.handle,
                target,
                image,
                self._layers_run,
                None if self.method == "regularized" else step.metrics["feature_error"],
            )
            fe, corr = m["feature_error"], m["pixel_correlation"]
            rec.update({k: [round(v, 6) for v in vals] for k, vals in m.items()})
            self.feature_error = fe[0] if fe[0] == fe[0] else -1.0
            self.pixel_correlation = corr[0]
            lines = R.metric_lines(
                self._layers_run,
                m,
                self._missing if self.method == "decoder" else (),
                (step.index + 1, step.total) if self._stop_event.is_set() else None,
            )
            self.details = "\n".join(lines)
            both = torch.cat([target.detach(), image])
            self._composite = encode(make_grid(both.cpu(), ncol=both.shape[0]))
        except Exception as exc:  # noqa: BLE001 - the run's own error is already shown
            rec["result_error"] = f"{type(exc).__name__}: {exc}"
        self._last_record = rec

    def _result_text(self) -> str:
        rec = self._last_record
        if rec.get("job") == "train":
            return f", decoder trained {rec.get('trained_steps', 0)} steps"
        fe = rec.get("feature_error")
        if not fe:
            return ""
        corr = rec["pixel_correlation"]
        if len(fe) == 1:
            return f", feature error {fe[0]:.4f}, pixel correlation {corr[0]:.3f}"
        return ", feature errors " + " ".join(f"{v:.3f}" for v in fe)

    def _settings(self) -> dict[str, Any]:
        # the model's name was recorded among the settings before they were declared: kept
        return {**super()._settings(), "model_name": self.model_name}

    # ------------------------------------------------------------------ export
    def composite_png(self) -> bytes:
        """PNG of the original beside the reconstruction(s) of the last run (empty before)."""
        return self._composite

    def export(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.png`` (original beside the reconstruction(s)) and ``<path>.json``
        (:meth:`record`: every setting, the seed, the model, versions and the result)."""
        if not self._composite:
            raise RuntimeError("nothing to export yet: run() the widget first")
        png, js = export_paths(path, ".png", ".json")
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(self._composite)
        js.write_text(json.dumps(self.record(), indent=1))
        return png, js

    def _repr_mimebundle_(self, **kwargs: Any):
        data = super()._repr_mimebundle_(**kwargs)
        if self._composite:
            import base64

            data["image/png"] = base64.b64encode(self._composite).decode("ascii")
        elif self.original and "image/png" not in data:
            import base64

            data["image/png"] = base64.b64encode(self.original).decode("ascii")
        return data

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
