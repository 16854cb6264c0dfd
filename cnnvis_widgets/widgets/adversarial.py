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
from PIL import Image

from ..core import adversarial as A
from ..core import adversarial_pipeline as P
from ..core.blocks.optimize import Step
from ..data import load_image, sample_image, sample_images
from ..imaging import encode, pil_to_tensor
from ..models import ModelHandle
from ._base import (
    BoundedFloat,
    BoundedInt,
    CnnvisWidget,
    export_paths,
    get_handle,
    setting,
    upload_trait,
    write_image,
)
from ._photos import UPLOAD_TRAITS, SampleUploadMixin, pixel_tensor
from .activation_max import default_layer

__all__ = ["Adversarial"]

METHODS = P.METHODS
CUSTOM = "custom"
LINF_MAX = 16 / 255
L2_MAX = 8.0
_DEFAULT_EPS = {"linf": 4 / 255, "l2": 1.0}
_MAP_PANELS = (
    ("clean", "original", "Map: clean image, original class"),
    ("clean", "new", "Map: clean image, new class"),
    ("adversarial", "original", "Map: adversarial image, original class"),
    ("adversarial", "new", "Map: adversarial image, new class"),
)
_PGD = {"trait": "method", "in": ["pgd-linf", "pgd-l2"]}  # controls of the PGD methods only


_norm_of = P.norm_of
_eps_text = P.eps_text
_UNIT_COLS = P.UNIT_COLS


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
    sample_options = t.List(help="[label, value] of every photo offered (read-only).").tag(
        sync=True
    )
    upload_name = t.Unicode("", help="File name of the uploaded image (JS sets).").tag(sync=True)
    epsilon_max = t.Float(LINF_MAX, help="Largest epsilon of the slider (read-only).").tag(
        sync=True
    )
    class_options = t.List(help="[label, index] of 'untargeted' and every class (read-only).").tag(
        sync=True
    )
    layer_options = t.List(help="[label, name] of every conv-like layer (read-only).").tag(
        sync=True
    )
    cam_layer_options = t.List(help="[label, name] of Grad-CAM layers (read-only).").tag(sync=True)

    # the settings, in the order of their controls. Those of the attack (Image, Attack, size
    # and step_size) recompute it; those "Inside the network" only the analyses (the attack is
    # reused). ------------------------------------------------------------ Image
    sample = setting(
        t.Unicode("cat", help="The photo attacked: a packaged photo's name, 'upload' or 'custom'."),
        "select", "Image", "Image", restart=True, options_trait="sample_options",
    )  # fmt: skip
    upload = setting(
        upload_trait("Bytes of an image file chosen in the browser (JS sets)."),
        "upload", "Your image", "Image", record=False,
        accept="image/*", name_trait="upload_name", help="stays on this machine",
    )  # fmt: skip
    # ---------------------------------------------------------------------- Attack
    method = setting(
        t.Enum(
            list(METHODS),
            "pgd-linf",
            help="fgsm: one signed step of size epsilon; pgd-linf / pgd-l2: projected gradient "
            "ascent in the L-infinity / L2 ball.",
        ),
        "toggle", "Method", "Attack", restart=True,
        options=[["FGSM", "fgsm"], ["PGD L-inf", "pgd-linf"], ["PGD L2", "pgd-l2"]],
    )  # fmt: skip
    epsilon = setting(  # label, step, format and help follow the norm: see _control_spec
        t.Float(
            4 / 255,
            help="Size of the perturbation in pixel units (L-infinity: 4/255 = four grey levels; "
            "L2: norm of the whole perturbation).",
        ),
        "slider", "Epsilon", "Attack", restart=True, min=0.0, max_trait="epsilon_max",
    )  # fmt: skip
    steps = setting(
        BoundedInt(10, 1, 10_000, help="PGD steps (FGSM makes one)."),
        "slider", "Steps", "Attack", restart=True, log=True, step=1, visible_when=_PGD,
    )  # fmt: skip
    target = setting(
        t.Int(-1, help="Class to reach (targeted attack); -1: untargeted."),
        "search", "Target class", "Attack", restart=True, options_trait="class_options",
        help="type to filter; 'untargeted' moves away from the clean class",
    )  # fmt: skip
    random_start = setting(
        t.Bool(True, help="Start PGD at a random point of the epsilon-ball."),
        "checkbox", "Random start", "Attack", restart=True, visible_when=_PGD,
    )  # fmt: skip
    seed = setting(
        BoundedInt(
            0, 0, 2**31 - 1, help="Seed of the random start: the same seed repeats the attack."
        ),
        "int", "Seed", "Attack", restart=True,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Inside the network
    attribution = setting(
        t.Enum(
            list(A.ATTRIBUTION_METHODS),
            "grad_cam",
            help="Attribution method of the maps: saliency, guided_backprop or grad_cam.",
        ),
        "toggle", "Attribution", "Inside the network", restart=True, collapsed=True,
        options=[["saliency", "saliency"], ["guided BP", "guided_backprop"],
                 ["Grad-CAM", "grad_cam"]],
    )  # fmt: skip
    cam_layer = setting(
        t.Unicode("", help="Grad-CAM layer (empty: the last spatial block)."),
        "select", "CAM layer", "Inside the network", restart=True,
        options_trait="cam_layer_options",
        visible_when={"trait": "attribution", "in": ["grad_cam"]},
    )  # fmt: skip
    layer = setting(
        t.Unicode("", help="Layer whose most changed units are listed."),
        "select", "Units of layer", "Inside the network", restart=True,
        options_trait="layer_options",
    )  # fmt: skip
    n_units = setting(
        BoundedInt(6, 1, 32, help="Number of most changed units shown."),
        "slider", "Units shown", "Inside the network", restart=True, step=1,
    )  # fmt: skip
    show_units = setting(
        t.Bool(
            True, help="Synthesize what the most changed units look for (activation maximization)."
        ),
        "checkbox", "Unit images", "Inside the network", restart=True,
        help="activation maximization of the units in the table",
    )  # fmt: skip
    # ---------------------------------------------------------------------- without a control
    step_size = setting(
        BoundedFloat(0.0, 0.0, 100.0, help="Size of one PGD step; 0 means 2.5 * epsilon / steps."),
        restart=True,
    )
    size = setting(
        BoundedInt(224, 16, 1024, help="Side of the image the network sees, in pixels."),
        restart=True,
    )
    am_steps = setting(
        BoundedInt(48, 1, 4096, help="Activation-maximization steps per unit image."),
        restart=True,
    )
    am_size = setting(
        BoundedInt(64, 16, 512, help="Side of the unit images in pixels."), restart=True
    )
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
                    setattr(self, k, v)
        self._eps_by_norm[_norm_of(self.method)] = self.epsilon
        self.observe(self._on_method, names=["method"])
        self.observe(self._on_epsilon, names=["epsilon"])
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(self._on_sample, names=["sample"])
        self.observe(self._on_n_units, names=["n_units"])
        self._update_controls()  # the epsilon control follows the method given
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
    def _control_spec(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        if spec["trait"] != "epsilon":
            return spec
        if _norm_of(self.method) == "linf":
            help = "pixel units: 1/255 = one grey level"
            return dict(spec, step=1 / 255, format="fraction255", help=help)
        help = "L2 norm of the whole perturbation, pixel units"
        return dict(spec, label="Epsilon (L2)", step=0.05, help=help)

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
        return P.attack_args(
            self.method,
            float(self.epsilon),
            int(self.steps),
            float(self.step_size),
            bool(self.random_start),
            int(self.seed),
        )

    def _describe(self, cfg: dict[str, Any] | None = None) -> str:
        c = cfg or self._snapshot()
        return P.describe(c["method"], c["epsilon"], c["target"], self.handle.class_name)

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
        self._analysis = None
        cached = self._attack_cache
        reuse = cached[1:] if cached is not None and cached[0] == key else None
        self._run_info = {"attack_reused": reuse is not None, "units_reused": False}
        attack = yield from P.attack_steps(
            h, clean, target=target, total=total, reuse=reuse, stop_event=stop_event, **args
        )
        if attack is None:
            return
        adv, losses = attack
        if reuse is None:
            self._attack_cache = (key, adv.cpu(), losses)
        analysis, self._attribution_error = P.analyze_pair(
            h,
            clean,
            adv,
            target=target,
            eps=args["eps"] if args["norm"] == "linf" else None,
            layer=layer,
            units=n_units,
            attribution=self.attribution,
            cam_layer=self.cam_layer or None,
        )
        if stop_event.is_set():  # settings changed meanwhile: the next run publishes
            return
        self._analysis = analysis
        self._units_pixels = None
        self._publish(analysis)
        if not self.show_units or stop_event.is_set():
            return
        pictures = yield from P.unit_pictures_steps(
            h,
            layer,
            [r["unit"] for r in analysis.units[0]],
            steps=am_steps,
            size=int(self.am_size),
            seed=int(self.seed),
            cache=self._am_cache,
            offset=n_attack,
            total=total,
            stop_event=stop_event,
        )
        if pictures is None:
            return
        self._units_pixels, self._run_info["units_reused"] = pictures
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

    def _publish(self, r: A.PairAnalysis) -> None:
        """Traits of the attack's results; called on the worker right after the analyses."""
        cfg = self._cfg
        ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
        lines = P.summary_lines(
            r,
            method=cfg["method"],
            eps=cfg["epsilon"],
            steps=cfg["steps"],
            target=cfg["target"],
            class_name=self.handle.class_name,
            attribution_error=self._attribution_error,
        )
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
            self.clean_label = P.top1_label(ct)
            self.adversarial_label = P.top1_label(at)
            self.details = "\n".join(lines)
            for name, data in maps.items():
                setattr(self, name, data)
            self.selected_unit = -1
            self.unit_rows = rows
            self.units_image = b""
            self._last_pixels = report_px
            self.image = _png(self._report)

    def _attribution_pngs(self, r: A.PairAnalysis) -> dict[str, bytes]:
        names = [f"attribution_{img}_{cls}" for img, cls, _ in _MAP_PANELS]
        if not r.attribution:
            return dict.fromkeys(names, b"")
        tiles, _ = P.attribution_tiles(r, self.handle.class_name)
        return {name: _png(tile) for name, tile in zip(names, tiles)}

    def _unit_grid_rows(self) -> int:
        return max(1, -(-int(self.n_units) // _UNIT_COLS))

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

    def _publish_units(self, r: A.PairAnalysis) -> None:
        px = self._units_pixels
        if px is None or not r.units:
            return
        self._report = self._report_image(r)
        report_px = pil_to_tensor(self._report)[0]
        with self.hold_sync():
            self.units_image = _png(P.units_grid(px, _UNIT_COLS))
            self._last_pixels = report_px
            self.image = _png(self._report)

    def _report_image(self, r: A.PairAnalysis) -> Image.Image:
        """One picture of the whole result: images, maps, units (static export, save())."""
        cfg = self._cfg
        return P.report_image(
            r,
            title=f"{self.title}: {self._describe(cfg)}",
            eps=cfg["epsilon"],
            norm=_norm_of(cfg["method"]),
            class_name=self.handle.class_name,
            units_pixels=self._units_pixels,
        )

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
