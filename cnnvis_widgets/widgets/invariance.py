"""The Invariance widget (Zeiler & Fergus 2014, Fig. 5): move a photo, watch each layer change.

A photo is translated, scaled and rotated over a range; one chart per transformation draws, per
layer, the distance of its features from the unmoved photo's (relative to how far apart
different photos are, see :mod:`cnnvis_widgets.core.invariance`) and, dashed, the probability of
the photo's class; beneath each chart, the transformed photos as the network saw them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import torch
import traitlets as t

from .. import imaging as I
from ..core import invariance as inv
from ..core.blocks.optimize import Step
from ..models import ModelHandle
from ._base import BoundedFloat, BoundedInt, CnnvisWidget, ModelArg, setting
from ._photos import UPLOAD_TRAITS, SampleUploadMixin
from ._sample_photo import SamplePhoto

__all__ = ["Invariance"]


class Invariance(SamplePhoto, SampleUploadMixin, CnnvisWidget):
    """Feature distance per layer and class probability as a photo is moved, scaled, rotated.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default), ``"zf_mnist"``, your own module, or a handle.
    image : str, path, PIL image, tensor or bytes
        A packaged photo's name (default ``"cat"``) or your own picture (a pixel tensor
        ``(1, C, H, W)`` for a grey network, e.g. a digit).
    reference : "photos", tensor, list of images or None
        Other pictures the distances are measured against (default: the packaged photos for a
        3-channel network, none otherwise: then relative to the feature length).
    device : str, optional
    **traits
        Initial values of any trait below (``layers=``, ``steps=``, ``shift=``...).

    Examples
    --------
    >>> w = Invariance(image="cat")                                 # doctest: +SKIP
    >>> w                                                           # doctest: +SKIP
    >>> w.run(); w.wait(); w.result.curves["translate"].mean_distance("_act0")  # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    # the settings, in the order of their controls: Image (sample, upload: SamplePhoto)
    layers = setting(
        t.Unicode("", help="Comma-separated layers whose feature distance is charted."),
        "text", "Layers", "Layers", restart=True,
    )  # fmt: skip
    steps = setting(
        BoundedInt(9, 3, 33, help="Values per transformation (one batch each)."),
        "slider", "Steps", "Range", restart=True, step=2,
    )  # fmt: skip
    shift = setting(
        BoundedFloat(0.25, 0.05, 0.5, help="Largest vertical shift, a fraction of the side."),
        "slider", "Shift up to", "Range", restart=True, step=0.05,
    )  # fmt: skip
    zoom = setting(
        BoundedFloat(1.8, 1.1, 3.0, help="Largest scale factor (zoom in from 1)."),
        "slider", "Scale up to", "Range", restart=True, step=0.1,
    )  # fmt: skip
    angle = setting(
        BoundedFloat(180.0, 10.0, 180.0, help="Largest rotation in degrees (both ways)."),
        "slider", "Rotate up to", "Range", restart=True, step=10,
    )  # fmt: skip
    translate_chart = t.Dict(help="Chart value: distance per layer and p(class) (read-only).").tag(
        sync=True
    )
    scale_chart = t.Dict(help="Chart value of the scale range (read-only).").tag(sync=True)
    rotate_chart = t.Dict(help="Chart value of the rotation range (read-only).").tag(sync=True)
    translate_images = t.Bytes(b"", help="PNG: the shifted photos (read-only).").tag(sync=True)
    scale_images = t.Bytes(b"", help="PNG: the scaled photos (read-only).").tag(sync=True)
    rotate_images = t.Bytes(b"", help="PNG: the rotated photos (read-only).").tag(sync=True)

    def __init__(
        self,
        model: ModelArg | None = None,
        image: Any = "cat",
        *,
        reference: Any = "default",
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._image_arg = image
        self._reference_arg = reference
        super().__init__(model, device=device, **kwargs)

    @property
    def size(self) -> int:
        """The model's input side: the photo is shown and moved at the size the network reads."""
        return self.handle.input_size[0]

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.result: inv.Invariance | None = None
        ref = self._reference_arg
        self._reference = ("photos" if h.in_channels == 3 else None) if ref == "default" else ref
        sample, options = self._photo_choices(self._image_arg)
        layers = kwargs.pop("layers", None) or inv.default_layers(h)
        return dict(
            title="Invariance: move the photo, watch each layer",
            model_name=h.name,
            sample_options=options,
            sample=sample,
            layers=layers if isinstance(layers, str) else ", ".join(layers),
        )

    def _ready(self) -> None:
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(lambda change: self._show_original(), names=["sample"])
        chart: dict[str, Any] = {"kind": "chart", "y_range": [0, 1]}  # widened past 1
        self.panels = [
            {"kind": "image", "trait": "original", "label": "Photo"},
            {**chart, "trait": "translate_chart", "label": "Vertical shift: distance, p(class)"},
            {"kind": "image", "trait": "translate_images", "label": "Shifted"},
            {**chart, "trait": "scale_chart", "label": "Scale: distance, p(class)"},
            {"kind": "image", "trait": "scale_images", "label": "Scaled"},
            {**chart, "trait": "rotate_chart", "label": "Rotation: distance, p(class)"},
            {"kind": "image", "trait": "rotate_images", "label": "Rotated"},
            {"kind": "progress"},
        ]
        self._show_original()

    @t.validate("layers")
    def _valid_layers(self, proposal: dict) -> str:
        names = [p.strip() for p in str(proposal["value"]).split(",") if p.strip()]
        return self._layer_list(names, "layers", 8, "a chart")

    def _describe(self) -> str:
        return f"{self.sample}: {self.steps} shifts, scales and rotations"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        ranges = {
            "translate": (-self.shift, self.shift),
            "scale": (1.0, self.zoom),
            "rotate": (-self.angle, self.angle),
        }
        self.result = None
        run = inv.invariance_steps(
            self.handle,
            self.target(),
            [n.strip() for n in self.layers.split(",")],
            ranges=ranges,
            steps=self.steps,
            reference=self._reference,
        )
        strips = []
        try:
            while True:
                step = next(run)
                kind, batch = step.metrics["transform"], step.image
                assert batch is not None  # every step of invariance_steps has its batch
                strip = I.make_grid(batch.detach().cpu(), ncol=batch.shape[0])
                strips.append(strip)
                setattr(self, f"{kind}_images", I.encode(strip, "png"))
                yield Step(step.index, None, step.image, step.metrics, step.total + 1)
                if stop_event.is_set():
                    return
        except StopIteration as done:
            self.result = done.value
        res = self.result
        if res is None:
            return
        with self.hold_sync():
            for kind, curve in res.curves.items():
                setattr(self, f"{kind}_chart", curve.series())
        pixels = torch.cat([s if s.shape[0] == 3 else s.expand(3, -1, -1) for s in strips], 1)
        yield Step(len(res.curves), None, pixels.unsqueeze(0), {}, len(res.curves) + 1)

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        res = self.result
        self._last_record = {} if res is None else res.to_dict()

    def _result_text(self) -> str:
        res = self.result
        if res is None:
            return ""
        return f", class {res.class_name} ({res.probability:.1%}), distances vs {res.normalized}"
