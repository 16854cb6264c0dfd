"""The Adversarial widget: attack a photo and watch what changes inside the network.

One run: the attack (FGSM or PGD, streamed step by step), then the analyses of the
clean/adversarial pair (top-5 before/after, attribution maps of both images for the original and
the new class, the most changed units of a layer), then activation maximization of those units
(one batch, few steps, small images; cached per unit), all on the worker thread and cancellable
at every step. Moving a setting restarts the run; a setting that does not change the attack
(layer, attribution method...) reuses the last attack.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import traitlets as t
from PIL import Image, ImageDraw, ImageFont

from ..core import activation_max as am
from ..core import adversarial as A
from ..core import objectives as O
from ..core.imaging import colorize, encode, make_grid, overlay, pil_to_tensor, to_pil
from ..core.optimize import Step
from ..data import load_image, sample_image, sample_images
from ..models import ModelHandle
from ._base import (
    BoundedFloat,
    BoundedInt,
    CnnvisWidget,
    export_paths,
    get_handle,
    upload_trait,
    write_image,
)
from ._photos import UPLOAD_TRAITS, SampleUploadMixin, pixel_tensor
from .activation_max import default_layer

__all__ = ["Adversarial"]

METHODS = ("fgsm", "pgd-linf", "pgd-l2")
CUSTOM = "custom"
LINF_MAX = 16 / 255
L2_MAX = 8.0
_DEFAULT_EPS = {"linf": 4 / 255, "l2": 1.0}
#: traits that change the attack (a change restarts the run and recomputes the attack)
_ATTACK_TRAITS = (
    "sample",
    "method",
    "epsilon",
    "steps",
    "step_size",
    "random_start",
    "seed",
    "target",
    "size",
)
#: traits that change only the analyses (a change restarts the run; the attack is reused)
_ANALYSIS_TRAITS = (
    "layer",
    "n_units",
    "attribution",
    "cam_layer",
    "show_units",
    "am_steps",
    "am_size",
)
_MAP_PANELS = (
    ("clean", "original", "Map: clean image, original class"),
    ("clean", "new", "Map: clean image, new class"),
    ("adversarial", "original", "Map: adversarial image, original class"),
    ("adversarial", "new", "Map: adversarial image, new class"),
)
_UNIT_COLS = 3
_RESULT_TRAITS = {
    "original",
    "perturbation",
    "adversarial",
    "predictions",
    "attribution_clean_original",
    "attribution_clean_new",
    "attribution_adversarial_original",
    "attribution_adversarial_new",
    "selected_unit",
    "unit_rows",
    "units_image",
    "details",
    "clean_label",
    "adversarial_label",
    "upload",
    "upload_name",
    "model_name",
    "epsilon_max",
    "sample_options",
    "layer_options",
    "cam_layer_options",
}


def _norm_of(method: str) -> str:
    return "l2" if method == "pgd-l2" else "linf"


def _eps_text(eps: float, norm: str) -> str:
    if norm == "linf":
        return f"{eps * 255:.3g}/255 ({eps:.4g})"
    return f"{eps:.4g}"


def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _labelled_row(
    tiles: list[torch.Tensor], captions: list[str], tile: int, title: str = ""
) -> Image.Image:
    """Tiles ``(3, h, w)`` side by side, each scaled to ``tile`` px, with a caption under each."""
    font = _font(12)
    pad, cap_h = 4, 30
    title_h = 18 if title else 0
    width = pad + len(tiles) * (tile + pad)
    canvas = Image.new("RGB", (width, title_h + tile + cap_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(20, 20, 20), font=font)
    for i, (img, cap) in enumerate(zip(tiles, captions)):
        pil = to_pil(img).convert("RGB")
        if pil.size != (tile, tile):
            pil = pil.resize((tile, tile), Image.BILINEAR)
        x = pad + i * (tile + pad)
        canvas.paste(pil, (x, title_h))
        lines = cap.split("\n")[:2]
        for j, line in enumerate(lines):
            text = line
            while text and draw.textlength(text, font=font) > tile:
                text = text[:-2] + "…" if len(text) > 2 else ""
            draw.text((x, title_h + tile + 2 + 13 * j), text, fill=(40, 40, 40), font=font)
    return canvas


def _stack(rows: list[Image.Image]) -> Image.Image:
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def _png(img: Image.Image | torch.Tensor) -> bytes:
    return encode(img, "png")


class Adversarial(SampleUploadMixin, CnnvisWidget):
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
        Initial values of any trait below (``method=``, ``epsilon=``, ``target=``...).

    Examples
    --------
    >>> w = Adversarial(image="cat", epsilon=4 / 255, method="pgd-linf")   # doctest: +SKIP
    >>> w                                                                 # doctest: +SKIP
    >>> w.run(); w.wait(); w.export("cat_attack")  # PNG + JSON          # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    sample = t.Unicode(
        "cat", help="The photo attacked: a packaged photo's name, 'upload' or 'custom'."
    ).tag(sync=True)
    sample_options = t.List(help="[label, value] of every photo offered (read-only).").tag(
        sync=True
    )
    upload = upload_trait("Bytes of an image file chosen in the browser (JS sets).")
    upload_name = t.Unicode("", help="File name of the uploaded image (JS sets).").tag(sync=True)
    method = t.Enum(
        list(METHODS),
        "pgd-linf",
        help="fgsm: one signed step of size epsilon; pgd-linf / pgd-l2: projected gradient "
        "ascent in the L-infinity / L2 ball.",
    ).tag(sync=True)
    epsilon = t.Float(
        4 / 255,
        help="Size of the perturbation in pixel units (L-infinity: 4/255 = four grey levels; "
        "L2: norm of the whole perturbation).",
    ).tag(sync=True)
    epsilon_max = t.Float(LINF_MAX, help="Largest epsilon of the slider (read-only).").tag(
        sync=True
    )
    steps = BoundedInt(10, 1, 10_000, help="PGD steps (FGSM makes one).").tag(sync=True)
    step_size = BoundedFloat(
        0.0, 0.0, 100.0, help="Size of one PGD step; 0 means 2.5 * epsilon / steps."
    ).tag(sync=True)
    random_start = t.Bool(True, help="Start PGD at a random point of the epsilon-ball.").tag(
        sync=True
    )
    seed = BoundedInt(
        0, 0, 2**31 - 1, help="Seed of the random start: the same seed repeats the attack."
    ).tag(sync=True)
    target = t.Int(-1, help="Class to reach (targeted attack); -1: untargeted.").tag(sync=True)
    class_options = t.List(help="[label, index] of 'untargeted' and every class (read-only).").tag(
        sync=True
    )
    size = BoundedInt(224, 16, 1024, help="Side of the image the network sees, in pixels.").tag(
        sync=True
    )
    layer = t.Unicode("", help="Layer whose most changed units are listed.").tag(sync=True)
    layer_options = t.List(help="[label, name] of every conv-like layer (read-only).").tag(
        sync=True
    )
    n_units = BoundedInt(6, 1, 32, help="Number of most changed units shown.").tag(sync=True)
    attribution = t.Enum(
        list(A.ATTRIBUTION_METHODS),
        "grad_cam",
        help="Attribution method of the maps: saliency, guided_backprop or grad_cam.",
    ).tag(sync=True)
    cam_layer = t.Unicode("", help="Grad-CAM layer (empty: the last spatial block).").tag(sync=True)
    cam_layer_options = t.List(help="[label, name] of Grad-CAM layers (read-only).").tag(sync=True)
    show_units = t.Bool(
        True, help="Synthesize what the most changed units look for (activation maximization)."
    ).tag(sync=True)
    am_steps = BoundedInt(48, 1, 4096, help="Activation-maximization steps per unit image.").tag(
        sync=True
    )
    am_size = BoundedInt(64, 16, 512, help="Side of the unit images in pixels.").tag(sync=True)
    # results (read-only)
    original = t.Bytes(b"", help="PNG of the clean image (read-only).").tag(sync=True)
    perturbation = t.Bytes(b"", help="PNG of the amplified perturbation (read-only).").tag(
        sync=True
    )
    adversarial = t.Bytes(b"", help="PNG of the adversarial image (read-only).").tag(sync=True)
    predictions = t.List(
        help="[label, p_clean, p_adversarial] rows: the union of both top-5 (read-only)."
    ).tag(sync=True)
    attribution_clean_original = t.Bytes(
        b"", help="PNG: map of the clean image for the original class (read-only)."
    ).tag(sync=True)
    attribution_clean_new = t.Bytes(
        b"", help="PNG: map of the clean image for the new class (read-only)."
    ).tag(sync=True)
    attribution_adversarial_original = t.Bytes(
        b"", help="PNG: map of the adversarial image for the original class (read-only)."
    ).tag(sync=True)
    attribution_adversarial_new = t.Bytes(
        b"", help="PNG: map of the adversarial image for the new class (read-only)."
    ).tag(sync=True)
    unit_rows = t.List(t.Dict(), help="The most changed units of the layer (read-only).").tag(
        sync=True
    )
    units_image = t.Bytes(
        b"", help="PNG: what each of those units looks for, in table order, 3 per row (read-only)."
    ).tag(sync=True)
    selected_unit = t.Int(
        -1, help="Unit highlighted in the table (click a row or a unit picture)."
    ).tag(sync=True)
    details = t.Unicode("", help="Text summary of the last attack (read-only).").tag(sync=True)
    clean_label = t.Unicode("", help="Top-1 of the clean image (read-only).").tag(sync=True)
    adversarial_label = t.Unicode("", help="Top-1 of the adversarial image (read-only).").tag(
        sync=True
    )

    _restart_traits = _ATTACK_TRAITS + _ANALYSIS_TRAITS

    def __init__(
        self,
        model: str | torch.nn.Module | ModelHandle = "efficientnet_lite0",
        image: Any = "cat",
        *,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.handle = get_handle(model, **({"device": device} if device else {}))
        h = self.handle
        self._photos: dict[str, Image.Image | torch.Tensor] = {}
        self._clean_cache: dict[tuple, torch.Tensor] = {}
        self._attack_cache: tuple[tuple, torch.Tensor, list[float]] | None = None
        self._am_cache: dict[tuple, torch.Tensor] = {}
        self._analysis: A.PairAnalysis | None = None
        self._eps_by_norm = dict(_DEFAULT_EPS)
        self._clean_px: torch.Tensor | None = None
        self._report: Image.Image | None = None
        self._units_pixels: torch.Tensor | None = None
        self._run_info: dict[str, Any] = {}
        self._attribution_error = ""
        self._cfg: dict[str, Any] = {}
        names = list(sample_images()) if h.in_channels in (1, 3) else []
        options = [[n, n] for n in names]
        sample = self._adopt_image(image, names, options)
        classes = h.class_names or [f"class {i}" for i in range(h.num_outputs)]
        conv = h.conv_layers()
        layer_default = default_layer(h)
        layer = kwargs.pop("layer", None) or layer_default
        h.layer(layer)  # KeyError listing the nearest names
        method = kwargs.get("method", "pgd-linf")
        if method not in METHODS:
            raise t.TraitError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        norm = _norm_of(method)
        super().__init__(
            title="Adversarial examples",
            model_name=h.name,
            sample_options=options,
            sample=sample,
            class_options=[["untargeted", -1]] + [[f"{i}: {n}", i] for i, n in enumerate(classes)],
            layer_options=[[li.label(), li.name] for li in conv],
            cam_layer_options=[["last block (default)", ""]]
            + [[li.label(), li.name] for li in conv],
            layer=layer,
            size=int(h.input_size[0]),
            epsilon=self._eps_by_norm[norm],
            epsilon_max=LINF_MAX if norm == "linf" else L2_MAX,
        )
        if kwargs:
            with self.hold_trait_notifications():
                for k, v in kwargs.items():
                    if not self.has_trait(k) or k.startswith("_") or k in _RESULT_TRAITS:
                        valid = sorted(
                            n
                            for n in self.trait_names(sync=True)
                            if n[0] != "_" and n not in _RESULT_TRAITS
                        )
                        raise TypeError(
                            f"Adversarial() got an unknown argument {k!r}; valid: "
                            f"{', '.join(valid)}"
                        )
                    setattr(self, k, v)
        self._eps_by_norm[_norm_of(self.method)] = self.epsilon
        self.observe(self._on_method, names=["method"])
        self.observe(self._on_epsilon, names=["epsilon"])
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(self._on_sample, names=["sample"])
        self.observe(self._on_n_units, names=["n_units"])
        self._update_controls()
        self.panels = self._panel_specs()
        self._show_original()

    # ------------------------------------------------------------------ images
    def _adopt_image(self, image: Any, names: list[str], options: list[list[str]]) -> str:
        """The ``image=`` argument -> the value of ``sample`` (custom images are kept)."""
        if isinstance(image, str) and image in names:
            return image
        if isinstance(image, (str, Path)) and Path(image).is_file():
            self._photos[CUSTOM] = load_image(image)  # ImageError naming the problem
            options.append([f"your image: {Path(image).name}", CUSTOM])
            return CUSTOM
        if isinstance(image, Image.Image):
            self._photos[CUSTOM] = load_image(image)
            options.append(["your image", CUSTOM])
            return CUSTOM
        if isinstance(image, torch.Tensor):
            px = pixel_tensor(image, self.handle.in_channels)
            if float(px.min()) < 0 or float(px.max()) > 1:
                raise ValueError(
                    "image tensor must be in pixel space [0, 1]; use handle.denormalize(x) for a "
                    "model-input tensor"
                )
            self._photos[CUSTOM] = px
            options.append(["your image (tensor)", CUSTOM])
            return CUSTOM
        raise KeyError(
            f"image {image!r}: not a packaged photo nor an image file; packaged photos: "
            f"{', '.join(names)} (or pass a PIL image or a pixel tensor)"
        )

    def _photo(self, name: str) -> Image.Image | torch.Tensor:
        if name in self._photos:
            return self._photos[name]
        return sample_image(name)

    def clean_pixels(self) -> torch.Tensor:
        """The clean image as the network sees it: pixel space ``(1, C, size, size)``."""
        key = (self.sample, self.size, id(self._photos.get(self.sample)))
        if key not in self._clean_cache:
            photo = self._photo(self.sample)
            if isinstance(photo, torch.Tensor):
                px = torch.nn.functional.interpolate(
                    photo, size=(self.size, self.size), mode="bilinear", align_corners=False
                ).clamp(0, 1)
                px = px.to(self.handle.device)
            else:
                px = self.handle.to_pixels(photo, self.size)
            self._clean_cache = {key: px}  # keep one
        return self._clean_cache[key]

    def _show_original(self) -> None:
        try:
            px = self.clean_pixels()
        except Exception as exc:  # noqa: BLE001 - shown, the widget stays usable
            self.error = f"{type(exc).__name__}: {exc}"
            return
        png = _png(px[0])
        with self.hold_sync():
            self.original = png
            if not self._report:
                self.image = png  # the static picture before the first run

    # ------------------------------------------------------------------ validation
    @t.validate("sample")
    def _valid_sample(self, proposal: dict) -> str:
        v = proposal["value"]
        values = [o[1] for o in self.sample_options]
        if values and v not in values:
            raise t.TraitError(f"unknown image {v!r}; choose one of {', '.join(values)}")
        return v

    @t.validate("epsilon")
    def _valid_epsilon(self, proposal: dict) -> float:
        v = float(proposal["value"])
        high = L2_MAX * 4 if _norm_of(self.method) == "l2" else 1.0
        if not 0.0 <= v <= high:  # also rejects NaN
            raise t.TraitError(
                f"epsilon must be between 0 and {high:g} in pixel units (4/255 = "
                f"{4 / 255:.4f} is four grey levels), got {v}"
            )
        return v

    @t.validate("target")
    def _valid_target(self, proposal: dict) -> int:
        c = int(proposal["value"])
        if not -1 <= c < self.handle.num_outputs:
            raise t.TraitError(
                f"target class {c} is out of range: valid 0..{self.handle.num_outputs - 1}, "
                "or -1 for an untargeted attack"
            )
        return c

    @t.validate("layer", "cam_layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        if name == "" and proposal["trait"].name == "cam_layer":
            return name
        info = self._layer_info(name)
        if proposal["trait"].name == "cam_layer" and not info.spatial:
            raise t.TraitError(f"Grad-CAM needs a layer with a spatial output; {name!r} has none")
        return name

    @t.validate("n_units")
    def _valid_n_units(self, proposal: dict) -> int:
        v = int(proposal["value"])  # the trait's range first, then the layer's channels
        if self.layer and v > self.handle.layer(self.layer).channels:
            raise t.TraitError(
                f"n_units={v} is more than the {self.handle.layer(self.layer).channels} "
                f"channels of layer {self.layer!r}"
            )
        return v

    # ------------------------------------------------------------------ observers
    def _on_method(self, change: dict) -> None:
        old, new = _norm_of(change["old"]), _norm_of(change["new"])
        if old != new:
            with self.hold_sync():
                self.epsilon_max = L2_MAX if new == "l2" else LINF_MAX
                self._update_controls()
                self.epsilon = self._eps_by_norm[new]  # restarts (already restarting anyway)

    def _on_epsilon(self, change: dict) -> None:
        self._eps_by_norm[_norm_of(self.method)] = float(change["new"])

    def _on_sample(self, change: dict) -> None:
        self._show_original()

    # ------------------------------------------------------------------ controls and panels
    def _update_controls(self) -> None:
        linf = _norm_of(self.method) == "linf"
        self.controls = [
            {
                "trait": "sample",
                "kind": "select",
                "label": "Image",
                "group": "Image",
                "options_trait": "sample_options",
            },
            {
                "trait": "upload",
                "kind": "upload",
                "label": "Your image",
                "group": "Image",
                "accept": "image/*",
                "name_trait": "upload_name",
                "help": "stays on this machine",
            },
            {
                "trait": "method",
                "kind": "toggle",
                "label": "Method",
                "group": "Attack",
                "options": [["FGSM", "fgsm"], ["PGD L-inf", "pgd-linf"], ["PGD L2", "pgd-l2"]],
            },
            {
                "trait": "epsilon",
                "kind": "slider",
                "label": "Epsilon" if linf else "Epsilon (L2)",
                "group": "Attack",
                "min": 0.0,
                "max_trait": "epsilon_max",
                "step": 1 / 255 if linf else 0.05,
                **({"format": "fraction255"} if linf else {}),
                "help": "pixel units: 1/255 = one grey level"
                if linf
                else "L2 norm of the whole perturbation, pixel units",
            },
            {
                "trait": "steps",
                "log": True,
                "kind": "slider",
                "label": "Steps",
                "group": "Attack",
                "step": 1,
                "visible_when": {"trait": "method", "in": ["pgd-linf", "pgd-l2"]},
            },
            {
                "trait": "target",
                "kind": "search",
                "label": "Target class",
                "group": "Attack",
                "options_trait": "class_options",
                "help": "type to filter; 'untargeted' moves away from the clean class",
            },
            {
                "trait": "random_start",
                "kind": "checkbox",
                "label": "Random start",
                "group": "Attack",
                "visible_when": {"trait": "method", "in": ["pgd-linf", "pgd-l2"]},
            },
            {"trait": "seed", "kind": "int", "label": "Seed", "group": "Attack"},
            {
                "trait": "attribution",
                "collapsed": True,
                "kind": "toggle",
                "label": "Attribution",
                "group": "Inside the network",
                "options": [
                    ["saliency", "saliency"],
                    ["guided BP", "guided_backprop"],
                    ["Grad-CAM", "grad_cam"],
                ],
            },
            {
                "trait": "cam_layer",
                "kind": "select",
                "label": "CAM layer",
                "group": "Inside the network",
                "options_trait": "cam_layer_options",
                "visible_when": {"trait": "attribution", "in": ["grad_cam"]},
            },
            {
                "trait": "layer",
                "kind": "select",
                "label": "Units of layer",
                "group": "Inside the network",
                "options_trait": "layer_options",
            },
            {
                "trait": "n_units",
                "kind": "slider",
                "label": "Units shown",
                "group": "Inside the network",
                "step": 1,
            },
            {
                "trait": "show_units",
                "kind": "checkbox",
                "label": "Unit images",
                "help": "activation maximization of the units in the table",
                "group": "Inside the network",
            },
        ]

    def _panel_specs(self) -> list[dict[str, Any]]:
        return [
            {"kind": "image", "trait": "original", "label": "Original"},
            {"kind": "image", "trait": "perturbation", "label": "Perturbation (amplified)"},
            {"kind": "image", "trait": "adversarial", "label": "Adversarial"},
            {
                "kind": "bars",
                "trait": "predictions",
                "label": "Top-5 before and after",
                "series": ["clean", "adversarial"],
                "max": 1.0,
                "digits": 3,
            },
            {"kind": "text", "trait": "details", "label": "Summary"},
            *[
                {"kind": "image", "trait": f"attribution_{img}_{cls}", "label": label}
                for img, cls, label in _MAP_PANELS
            ],
            {
                "kind": "table",
                "trait": "unit_rows",
                "label": "Most changed units",
                "columns": [
                    {"key": "unit", "label": "Unit", "numeric": True},
                    {"key": "change", "label": "RMS change", "numeric": True, "digits": 3},
                    {"key": "clean", "label": "Mean clean", "numeric": True, "digits": 3},
                    {"key": "adversarial", "label": "Mean adv.", "numeric": True, "digits": 3},
                ],
                "sort": "change",
                "descending": True,
                "select_trait": "selected_unit",
                "select_key": "unit",
            },
            {
                "kind": "image",
                "trait": "units_image",
                "label": "What those units look for (activation maximization)",
                "grid": [self._unit_grid_rows(), _UNIT_COLS],
            },
            {"kind": "chart", "label": "Attack objective per step", "trait": "history"},
            {"kind": "progress"},
        ]

    # ------------------------------------------------------------------ the run
    def _attack_key(self) -> tuple:
        return (
            self.sample,
            id(self._photos.get(self.sample)),
            self.size,
            self.method,
            float(self.epsilon),
            int(self.steps) if self.method != "fgsm" else 1,
            float(self.step_size),
            bool(self.random_start),
            int(self.seed),
            int(self.target),
        )

    def _attack_args(self) -> dict[str, Any]:
        eps = float(self.epsilon)
        if self.method == "fgsm":
            return dict(eps=eps, steps=1, step_size=eps, norm="linf", random_start=False)
        return dict(
            eps=eps,
            steps=int(self.steps),
            step_size=float(self.step_size) or None,
            norm=_norm_of(self.method),
            random_start=bool(self.random_start),
            seed=int(self.seed),
        )

    def _describe(self, cfg: dict[str, Any] | None = None) -> str:
        c = cfg or self._snapshot()
        norm = _norm_of(c["method"])
        target = c["target"]
        tgt = "untargeted" if target < 0 else f"target {self.handle.class_name(target)}"
        return f"{c['method']} eps {_eps_text(c['epsilon'], norm)}, {tgt}"

    def _snapshot(self) -> dict[str, Any]:
        """The settings a run computes with (traits may change while it runs)."""
        return {
            "method": self.method,
            "epsilon": float(self.epsilon),
            "steps": int(self.steps),
            "target": int(self.target),
            "sample": self.sample,
        }

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        return None  # no frame stream: every picture is a bytes trait

    def _attack_steps_of(self, cfg: dict[str, Any]) -> int:
        return 1 if cfg["method"] == "fgsm" else int(cfg["steps"])

    def _progress_text(self, step: Step, history: list[float]) -> str:
        # a run is two phases: the attack's steps (the Steps slider), then the unit pictures
        n = self._attack_steps_of(self._cfg)
        if step.metrics.get("phase") == "units":
            return f"unit pictures, step {step.index - n + 1}/{step.total - n}"
        loss = "" if not history else f", {self._loss_label} {history[-1]:.4g}"
        return f"attack step {min(step.index + 1, n)}/{n}{loss}"

    def _done_text(self, n_steps: int, elapsed: float) -> str:
        n = self._attack_steps_of(self._cfg)
        info = getattr(self, "_run_info", {})
        attack = f"attack reused ({n} steps)" if info.get("attack_reused") else f"{n} attack steps"
        if not self.show_units:
            units = ""
        elif info.get("units_reused"):
            units = ", unit pictures reused"
        else:
            units = f" + {int(self.am_steps)} steps of unit pictures"
        return f"done, {attack}{units} in {elapsed:.1f} s"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        h = self.handle
        self._cfg = cfg = self._snapshot()
        clean = self.clean_pixels()
        self._clean_px = clean
        args = self._attack_args()
        target = None if cfg["target"] < 0 else cfg["target"]
        n_attack = int(args["steps"])
        layer, n_units = self.layer, int(self.n_units)
        am_steps = int(self.am_steps) if self.show_units else 0
        total = n_attack + am_steps
        key = self._attack_key()
        self._run_info = {"attack_reused": False, "units_reused": False}
        self._analysis = None
        cached = self._attack_cache
        if cached is not None and cached[0] == key:
            adv = cached[1].to(h.device)
            self._run_info["attack_reused"] = True
            yield Step(n_attack - 1, cached[2][-1] if cached[2] else None, adv, {}, total)
        else:
            last: Step | None = None
            losses: list[float] = []
            for s in A.pgd_steps(h, clean, target=target, stop_event=stop_event, **args):
                last = s
                if s.loss is not None:
                    losses.append(s.loss)
                yield Step(s.index, s.loss, s.image, s.metrics, total)
            if last is None or last.image is None or stop_event.is_set():
                return
            adv = last.image.detach().clone()
            self._attack_cache = (key, adv.cpu(), losses)
        analysis = A.analyze(
            h,
            clean,
            adv,
            target=target,
            eps=args["eps"] if args["norm"] == "linf" else None,
            layer=layer,
            units=n_units,
            attribution=None,
        )
        self._attribution_error = ""
        try:
            analysis.attribution = A.attribution_maps(
                h,
                clean,
                adv,
                analysis.original_class,
                analysis.new_class,
                self.attribution,
                self.cam_layer or None,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. guided backprop on an unsupported model
            self._attribution_error = f"{type(exc).__name__}: {exc}"
        if stop_event.is_set():  # settings changed meanwhile: the next run publishes
            return
        self._analysis = analysis
        self._units_pixels = None
        self._publish(analysis)
        if not self.show_units or stop_event.is_set():
            return
        units = [r["unit"] for r in analysis.units[0]]
        am_key = (layer, am_steps, int(self.am_size), int(self.seed))
        if len(self._am_cache) > 1024:  # about 50 MB of 64 px pictures
            self._am_cache.clear()
        missing = [u for u in units if (*am_key, u) not in self._am_cache]
        if missing:
            last_am: Step | None = None
            for s in am.maximize_steps(
                h,
                O.channel(layer, missing),
                batch=len(missing),
                steps=am_steps,
                size=int(self.am_size),
                seed=int(self.seed),
                stop_event=stop_event,
            ):
                last_am = s
                yield Step(n_attack + s.index, None, None, {"phase": "units"}, total)
            if last_am is None or last_am.image is None or stop_event.is_set():
                return
            images = last_am.image.detach().clamp(0, 1).cpu()
            for u, img in zip(missing, images):
                self._am_cache[(*am_key, u)] = img
        else:
            self._run_info["units_reused"] = True
            yield Step(total - 1, None, None, {"phase": "units"}, total)
        self._units_pixels = torch.stack([self._am_cache[(*am_key, u)] for u in units])
        self._publish_units(analysis)

    # ------------------------------------------------------------------ results -> traits
    def _sync_extra(self, step: Step) -> None:
        img = step.image
        clean = self._clean_px
        if img is None or clean is None or step.metrics.get("phase") == "units":
            return
        if img.shape != clean.shape:
            return
        cfg = self._cfg
        eps = cfg["epsilon"] if _norm_of(cfg["method"]) == "linf" else None
        d = (img - clean).detach()
        self.adversarial = _png(img[0].clamp(0, 1))
        self.perturbation = _png(A.amplify(d, eps)[0])

    def _label(self, top: dict[str, Any]) -> str:
        return f"{top['name']} ({top['index']}), p={top['prob']:.3f}"

    def _publish(self, r: A.PairAnalysis) -> None:
        """Traits of the attack's results; called on the worker right after the analyses."""
        h = self.handle
        cfg = self._cfg
        method, eps, norm = cfg["method"], cfg["epsilon"], _norm_of(cfg["method"])
        ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
        orig, new = r.original_class[0], r.new_class[0]
        targeted = cfg["target"] >= 0
        verdict = (
            ("reached the target" if r.success[0] else "did not reach the target")
            if targeted
            else ("changed the top-1 class" if r.success[0] else "did not change the top-1 class")
        )
        lines = [
            f"{method}, epsilon {_eps_text(eps, norm)}"
            + ("" if method == "fgsm" else f", {cfg['steps']} steps")
            + (f", target {h.class_name(cfg['target'])} ({cfg['target']})" if targeted else ""),
            f"clean:       {self._label(ct)}",
            f"adversarial: {self._label(at)}",
            f"the attack {verdict}",
            f"perturbation: L-inf {r.linf[0] * 255:.3g}/255, L2 {r.l2[0]:.4g}",
            f"maps: {r.attribution.get('method', '')}"
            + (f" at {r.attribution['layer']}" if r.attribution.get("layer") else "")
            + f"; classes {h.class_name(orig)} ({orig}) and {h.class_name(new)} ({new})",
        ]
        if self._attribution_error:
            lines.append(f"no attribution maps: {self._attribution_error}")
        maps = self._attribution_pngs(r)
        rows = [
            {k: (round(v, 6) if isinstance(v, float) else v) for k, v in u.items()}
            for u in (r.units[0] if r.units else [])
        ]
        self._report = self._report_image(r)
        report_px = pil_to_tensor(self._report)[0]
        with self.hold_sync():
            self.original = _png(r.clean[0])
            self.adversarial = _png(r.adversarial[0])
            self.perturbation = _png(r.amplified[0])
            self.predictions = [
                [label, round(pc, 6), round(pa, 6)] for label, pc, pa in r.prediction_rows(0)
            ]
            self.clean_label = self._label(ct)
            self.adversarial_label = self._label(at)
            self.details = "\n".join(lines)
            for name, data in maps.items():
                setattr(self, name, data)
            self.selected_unit = -1
            self.unit_rows = rows
            self.units_image = b""
            self._last_pixels = report_px
            self.image = _png(self._report)

    def _attribution_tiles(self, r: A.PairAnalysis) -> tuple[list[torch.Tensor], list[str]]:
        h = self.handle
        orig, new = r.original_class[0], r.new_class[0]
        tiles, caps = [], []
        for img_key, img in (("clean", r.clean), ("adversarial", r.adversarial)):
            for cls_key, cls in (("original", orig), ("new", new)):
                m = r.attribution[f"{img_key}/{cls_key}"][0:1]
                heat = colorize(m, "inferno")
                tiles.append(overlay(img[0:1], heat, 0.6, weight=m)[0])
                caps.append(f"{img_key} image\n{cls_key}: {h.class_name(cls)}")
        return tiles, caps

    def _attribution_pngs(self, r: A.PairAnalysis) -> dict[str, bytes]:
        names = [f"attribution_{img}_{cls}" for img, cls, _ in _MAP_PANELS]
        if not r.attribution:
            return dict.fromkeys(names, b"")
        tiles, _ = self._attribution_tiles(r)
        return {name: _png(tile) for name, tile in zip(names, tiles)}

    def _unit_grid_rows(self) -> int:
        return max(1, -(-int(self.n_units) // _UNIT_COLS))

    def _units_grid(self) -> bytes:
        """The unit pictures in table order, 3 per row, blank cells to fill the last row (the
        panel's ``grid`` matches, so a click maps to a unit)."""
        px = self._units_pixels
        if px is None:
            return b""
        px = px if px.shape[1] == 3 else px.repeat(1, 3, 1, 1)
        rows = max(1, -(-px.shape[0] // _UNIT_COLS))
        cells = px.new_ones((rows * _UNIT_COLS, *px.shape[1:]))
        cells[: px.shape[0]] = px
        return _png(make_grid(cells, ncol=_UNIT_COLS, pad=2))

    def _on_click(self, content: dict) -> None:
        """A click on the unit pictures selects that unit (the table highlights its row)."""
        r = self._analysis
        if content.get("trait") != "units_image" or r is None or not r.units:
            return
        units = [u["unit"] for u in r.units[0]]
        rows = max(1, -(-len(units) // _UNIT_COLS))
        try:
            col = min(_UNIT_COLS - 1, max(0, int(float(content["x"]) * _UNIT_COLS)))
            row = min(rows - 1, max(0, int(float(content["y"]) * rows)))
        except (KeyError, TypeError, ValueError):
            return
        i = row * _UNIT_COLS + col
        if i < len(units):
            self.selected_unit = units[i]

    def _on_n_units(self, change: dict) -> None:
        self.panels = self._panel_specs()

    def _units_row(self, r: A.PairAnalysis) -> Image.Image | None:
        px = self._units_pixels
        if px is None or not r.units:
            return None
        caps = [f"unit {u['unit']}\nchange {u['change']:.3g}" for u in r.units[0]]
        tiles = [p if p.shape[0] == 3 else p.repeat(3, 1, 1) for p in px]
        return _labelled_row(tiles, caps, 96, title=f"most changed units of {r.layer}")

    def _publish_units(self, r: A.PairAnalysis) -> None:
        row = self._units_row(r)
        if row is None:
            return
        self._report = self._report_image(r)
        report_px = pil_to_tensor(self._report)[0]
        with self.hold_sync():
            self.units_image = self._units_grid()
            self._last_pixels = report_px
            self.image = _png(self._report)

    def _report_image(self, r: A.PairAnalysis) -> Image.Image:
        """One picture of the whole result: images, maps, units (static export, save())."""
        side = max(96, min(224, int(r.clean.shape[-1])))
        ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
        cfg = self._cfg
        norm = _norm_of(cfg["method"])
        top = _labelled_row(
            [r.clean[0], r.amplified[0], r.adversarial[0]],
            [
                f"clean: {ct['name']}\np={ct['prob']:.3f}",
                f"perturbation x{0.5 / max(r.linf[0], 1e-12):.0f}\n"
                f"eps {_eps_text(cfg['epsilon'], norm)}",
                f"adversarial: {at['name']}\np={at['prob']:.3f}",
            ],
            side,
            title=f"{self.title}: {self._describe(cfg)}",
        )
        rows = [top]
        if r.attribution:
            tiles, caps = self._attribution_tiles(r)
            rows.append(_labelled_row(tiles, caps, side, title=str(r.attribution["method"])))
        units = self._units_row(r)
        if units is not None:
            rows.append(units)
        return _stack(rows)

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        r = self._analysis
        cfg = self._cfg or self._snapshot()
        rec: dict[str, Any] = {
            "method": cfg["method"],
            "epsilon": cfg["epsilon"],
            "norm": _norm_of(cfg["method"]),
            "target": None if cfg["target"] < 0 else cfg["target"],
            "image": cfg["sample"],
            **self._run_info,
        }
        if r is not None:
            rec.update(r.summary(0))
            rec["units_synthesized"] = self._units_pixels is not None
            if self._attribution_error:
                rec["attribution_error"] = self._attribution_error
        self._last_record = rec

    def _result_text(self) -> str:
        r = self._analysis
        if r is None:
            return ""
        at = r.adversarial_top[0][0]
        return f"; now {at['name']} ({at['prob']:.2f})"

    def _settings(self) -> dict[str, Any]:
        out = super()._settings()
        return {k: v for k, v in out.items() if k not in _RESULT_TRAITS}

    # ------------------------------------------------------------------ export
    def save(self, path: str | Path) -> Path:
        """Write the result picture (images, maps, units) as a PNG file; returns the path."""
        if self._report is None:
            raise RuntimeError("nothing to save yet: run() the widget first")
        return write_image(self._report, path)  # format from a known suffix, else .png added

    def export(self, path: str | Path) -> dict[str, Path]:
        """Write ``<path>.png`` (the result picture) and ``<path>.json`` (:meth:`record`).

        Examples
        --------
        >>> w.export("results/cat_pgd")          # doctest: +SKIP
        {'png': PosixPath('results/cat_pgd.png'), 'json': PosixPath('results/cat_pgd.json')}
        """
        png_path, js = export_paths(path, ".png", ".json")
        png = self.save(png_path)
        js.write_text(json.dumps(self.record(), indent=2))
        return {"png": png, "json": js}

    @property
    def result(self) -> A.PairAnalysis | None:
        """The :class:`~cnnvis_widgets.core.adversarial.PairAnalysis` of the last run."""
        return self._analysis
