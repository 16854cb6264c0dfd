"""The Attribution widget: which pixels drive a prediction, by seven methods side by side.

Pick a photo (a packaged one, or upload yours), a target class (the model's top-5 first) and a
method: saliency, DeconvNet, guided backprop, Grad-CAM, guided Grad-CAM (computed together, once
per image, class, layer and options), occlusion or integrated gradients (when chosen). Switching
the method or the opacity only re-composites pictures. The method options are in
:mod:`._attribution_options`, the evidence (sanity check, curves) in :mod:`._attribution_evidence`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import traitlets as t
from PIL import Image

from .. import imaging as I
from ..core import attribution as A
from ..core import attribution_run as AR
from ..core import predictions as P
from ..core.blocks.optimize import Step
from ..data import load_image, sample_image, sample_images
from ..models import ModelHandle
from ..models.layers import spatial_layers
from ._attribution_evidence import AttributionEvidence, evidence_settings
from ._attribution_options import AttributionOptions, method_settings
from ._base import BoundedFloat, CnnvisWidget, ModelArg, setting
from ._photos import UPLOAD, UPLOAD_TRAITS, decode_upload, upload_data, upload_setting

__all__ = ["Attribution"]


class Attribution(AttributionOptions, AttributionEvidence, CnnvisWidget):
    """Saliency, DeconvNet, guided backprop, Grad-CAM and guided Grad-CAM for one photo.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default), ``"torchvision:<arch>"``, your own module, or a handle.
    image : str, path, PIL image or bytes, optional
        A packaged photo by name (``"cat"``; see :func:`cnnvis_widgets.data.sample_images`), or
        your own picture (a file path, a PIL image or encoded bytes), shown as "upload".
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    **traits
        Initial values of any trait below (``target=``, ``method=``, ``cam_layer=``...).

    Examples
    --------
    >>> w = Attribution(image="cat", method="grad_cam")            # doctest: +SKIP
    >>> w                                                           # doctest: +SKIP
    >>> w.run(); w.wait(); w.save("cat_grad_cam.png")              # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    image_options = t.List(help="[label, name] of the choosable pictures.").tag(sync=True)
    class_options = t.List(help="[label, index]: the top-5 predictions first.").tag(sync=True)
    predictions = t.List(help="[class label, probability] of the top-5 (read-only).").tag(sync=True)
    cam_layer_options = t.List(help="[label, name] of the layers Grad-CAM can use.").tag(sync=True)

    # the settings, in the order of their controls ------------------------- Image
    image_name = setting(
        t.Unicode("cat", help="A packaged photo by name, or 'upload' for the uploaded picture."),
        "select", "Photo", "Image", restart=True, options_trait="image_options",
    )  # fmt: skip
    upload = upload_setting("Your picture")
    upload_name = setting(t.Unicode("", help="File name of the uploaded picture."))
    # ---------------------------------------------------------------------- Target
    target = setting(
        t.Int(-1, help="Class whose score is attributed; -1: the top-1 prediction."),
        "search", "Class", "Target", restart=True,
        options_trait="class_options", help="the top-5 predictions come first",
    )  # fmt: skip
    # ---------------------------------------------------------------------- Method
    method = setting(
        t.Enum(
            [*A.METHODS, *AR.SLOW_METHODS, *A.DEPRECATED_METHODS],  # old: a warning, then new
            "guided_backprop",
            help="Map shown large: " + ", ".join([*A.METHODS, *AR.SLOW_METHODS]) + ".",
        ),
        "select", "Method", "Method",
        options=[[v[0], key] for key, v in [*A.METHODS.items(), *AR.SLOW_METHODS.items()]],
    )  # fmt: skip
    cam_layer = setting(
        t.Unicode("", help="Layer of Grad-CAM, guided Grad-CAM and the feature occlusion."),
        "select", "Grad-CAM layer", "Method", restart=True, options_trait="cam_layer_options",
        visible_when={"trait": "method", "in": ["grad_cam", "guided_grad_cam", "occlusion"]},
    )  # fmt: skip
    (occlusion_patch, occlusion_stride, occlusion_score, ig_steps, ig_baseline, smoothgrad,
     smoothgrad_samples, smoothgrad_noise) = method_settings()  # fmt: skip
    # ---------------------------------------------------------------------- Display
    opacity = setting(
        BoundedFloat(0.5, 0.0, 1.0, help="Opacity of the map over the photo (0: photo only)."),
        "slider", "Overlay opacity", "Display", step=0.05,
    )  # fmt: skip
    sanity_check, sanity_blocks, faithfulness, curve_steps, curve_methods = evidence_settings()
    original = t.Bytes(b"", help="PNG: the photo as the model sees it (read-only).").tag(sync=True)
    heatmap = t.Bytes(b"", help="PNG: the chosen method's map (read-only).").tag(sync=True)
    overlay = t.Bytes(b"", help="PNG: the map over the photo (read-only).").tag(sync=True)
    all_maps = t.Bytes(b"", help="PNG: every method's map side by side (read-only).").tag(sync=True)

    def __init__(
        self,
        model: ModelArg | None = None,
        *,
        image: Any = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._image_arg = image
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._lock = threading.RLock()
        self._maps = AR.MapCache()  # (image key, class, method, layer) -> map, bounded
        self._preds: dict[str, tuple[list[int], list[float]]] = {}
        self._upload_img: Image.Image | None = None
        self._upload_key = ""
        self._shown: AR.PhotoMaps | None = None
        self._restarting_ok = True
        photos = list(sample_images())
        options = [[n, n] for n in photos]
        return dict(
            title="Attribution: which pixels drive the prediction",
            model_name=h.name,
            cam_layer=A.default_cam_layer(h),  # ValueError for a model without spatial maps
            cam_layer_options=[[li.label(), li.name] for li in spatial_layers(h)],
            class_options=P.class_options(h, []),
            image_name=self._adopt_image(self._image_arg, photos, options),
            image_options=options,
        )

    def _ready(self) -> None:
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(self._on_display, names=["method", "opacity"])
        self.observe(self._on_image_change, names=["image_name"])
        self._evidence_ready([
            {"kind": "image", "trait": "original", "label": "Photo"},
            {"kind": "image", "trait": "heatmap", "label": "Map"},
            {"kind": "image", "trait": "overlay", "label": "Map over the photo"},
            {"kind": "bars", "trait": "predictions", "label": "Top-5 predictions", "max": 1.0,
             "digits": 3},
            {"kind": "text", "trait": "method_notes", "label": "About this map"},
            {"kind": "image", "trait": "all_maps", "label": "All methods"},
            {"kind": "progress"},
        ])  # fmt: skip

    # ------------------------------------------------------------------ image choice
    def _adopt_image(self, image: Any, photos: list[str], options: list[list[str]]) -> str:
        """The ``image=`` argument -> the value of ``image_name`` (your picture is kept, and
        added to ``options``)."""
        if image is None:
            return "cat" if "cat" in photos else photos[0]
        if isinstance(image, str) and image in photos:
            return image
        if isinstance(image, str) and image != UPLOAD and "/" not in image and "." not in image:
            raise KeyError(
                f"sample image {image!r} is not available; choose one of "
                f"{', '.join(photos)}, or pass a file path, a PIL image or bytes"
            )
        img = load_image(image)  # ImageError naming the problem
        name = getattr(image, "name", None) if not isinstance(image, (str, bytes)) else None
        name = str(name or (image if isinstance(image, str) else "image"))
        options.append(self._keep_upload(img, name))
        return UPLOAD

    def _keep_upload(self, img: Image.Image, name: str) -> list[str]:
        """Keep your picture; its ``[label, "upload"]`` option."""
        with self._lock:
            self._upload_img = img
            # every pixel is in the key: a second picture under the same name is another one
            digest = hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest()
            self._upload_key = f"upload:{img.mode}:{img.size}:{digest}"
        return [f"your picture: {name}" if name else "your picture", UPLOAD]

    def _use_upload(self, img: Image.Image, name: str) -> None:
        option = self._keep_upload(img, name)
        self.image_options = [o for o in self.image_options if o[1] != UPLOAD] + [option]
        if self.image_name == UPLOAD:
            self._on_image_change({"new": UPLOAD})
            if self.running or self._pending or (self.auto_run and self._views > 0):
                self.run()
        else:
            self.image_name = UPLOAD

    def _on_upload(self, change: dict) -> None:
        data = upload_data(self, change)
        if data is None:
            return
        img = decode_upload(self, data, self.upload_name or "upload")
        if img is None:
            return
        self.error = ""
        self._use_upload(img, self.upload_name or "upload")

    def _on_image_change(self, change: dict) -> None:
        # a new photo: attribute its own top-1 class unless the user picks another
        if self.target != -1:
            self._restarting_ok = False
            try:
                self.target = -1
            finally:
                self._restarting_ok = True

    def _on_restart_trait(self, change: dict) -> None:
        if self._restarting_ok:
            super()._on_restart_trait(change)

    def photo(self) -> Image.Image:
        """The current picture (RGB PIL image)."""
        if self.image_name == UPLOAD:
            with self._lock:
                if self._upload_img is None:
                    raise ValueError("no picture was uploaded yet: choose a file first")
                return self._upload_img.copy()
        return sample_image(self.image_name)

    def _image_key(self) -> str:
        # the model's content too: after a training step the predictions and maps are new
        image = self._upload_key if self.image_name == UPLOAD else f"sample:{self.image_name}"
        return f"{self.handle.fingerprint()}|{image}"

    # ------------------------------------------------------------------ validation
    @t.validate("image_name")
    def _valid_image(self, proposal: dict) -> str:
        name = proposal["value"]
        if name == UPLOAD:
            if self._upload_img is None:
                raise t.TraitError("no picture was uploaded yet: use the upload control first")
            return name
        if name not in sample_images():
            raise t.TraitError(
                f"unknown picture {name!r}; choose one of {', '.join(sample_images())} or 'upload'"
            )
        return name

    @t.validate("target")
    def _valid_target(self, proposal: dict) -> int:
        c = int(proposal["value"])
        try:
            if c != -1:
                self.handle.check_class(c)
        except IndexError as exc:
            raise t.TraitError(f"target {exc.args[0]} (or -1 for the top-1 prediction)") from None
        return c

    @t.validate("cam_layer")
    def _valid_cam_layer(self, proposal: dict) -> str:
        self._layer_info(proposal["value"])  # a TraitError naming the nearest layers
        try:
            return A.check_cam_layer(self.handle, proposal["value"])
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None

    @t.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        value = proposal["value"]  # the slow methods: computed when chosen (many passes)
        return value if value in AR.SLOW_METHODS else A.canonical_method(value)

    # ------------------------------------------------------------------ the run
    def _describe(self) -> str:
        cls = self.target
        if cls == -1:
            preds = self._preds.get(self._image_key())
            if preds is None:
                return f"{self.image_name}, top-1 prediction"
            cls = preds[0][0]
        return f"{self.image_name}, class {cls} ({self.handle.class_name(cls)})"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        h = self.handle
        key = self._image_key()
        x = h.preprocess(self.photo())
        if key not in self._preds:
            self._preds[key] = P.top_predictions(h, x, k=5)
        top, probs = self._preds[key]
        with self.hold_sync():
            self.predictions = P.prediction_rows(h, top, probs)
            self.class_options = P.class_options(h, top, probs)
        target = top[0] if self.target == -1 else self.target
        pixels = AR.display_pixels(h, x)
        shown = AR.PhotoMaps(self._maps, key, target, self.cam_layer, pixels,
                             options=self._method_options())  # fmt: skip
        self.original = I.encode(shown.pixels, "png")
        if stop_event.is_set():
            return
        for step in AR.attribution_steps(h, x, shown, self.method):
            self._shown = shown
            yield (step := dataclasses.replace(step, image=self._compose()))  # a composite
        yield from self._evidence_steps(x, shown, self.method, step.image, step.total)

    def _compose(self) -> torch.Tensor | None:
        """Set the picture traits from the cached maps; returns the composite (photo | map |
        overlay) for ``image`` / ``save()``, or None when the chosen map is not ready."""
        shown = self._shown
        pics = None if shown is None else shown.pictures(self.method, self.opacity)
        if pics is None:
            return None
        with self.hold_sync():
            self.method_notes = shown.summary(self.method)  # type: ignore[union-attr]
            self.heatmap = I.encode(pics["map"], "png")
            self.overlay = I.encode(pics["overlay"], "png")
            self.all_maps = I.encode(pics["strip"], "png")
        return pics["composite"]

    def _on_display(self, change: dict) -> None:
        """Method or opacity changed: re-composite from the cached maps (no new pass)."""
        if self._shown is not None and not self.running:  # the maps of the options as they are
            self._shown = dataclasses.replace(self._shown, options=self._method_options())
        picture = self._compose()
        if picture is None:
            if change["name"] == "method" and self._shown is not None:
                self.run()
            return
        pixels = picture[0].clamp(0, 1)
        self._last_pixels = pixels
        self.image = I.encode(pixels, "png")

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        shown = self._shown
        top, probs = self._preds.get(self._image_key(), ([], []))
        self._last_record = {} if shown is None else {
            "image": self.image_name if self.image_name != UPLOAD else self.upload_name,
            "target": shown.target,
            "target_name": self.handle.class_name(shown.target),
            "top5": P.prediction_record(self.handle, top, probs),
            "method": self.method,
            "cam_layer": shown.layer,
            "unsupported": dict(shown.unsupported),
            "notes": shown.summary(self.method),
            "completeness": shown.completeness(self.method),
            **self._evidence_record,
        }  # fmt: skip

    def _result_text(self) -> str:
        rec = self._last_record
        if not rec.get("top5"):
            return ""
        best = rec["top5"][0]
        text = f", top-1 {best['name']} ({best['probability']:.1%})"
        if rec.get("unsupported"):
            names = ", ".join(A.METHODS[m][0] for m in rec["unsupported"])
            text += f"; not available for this model's activations: {names}"
        return text
