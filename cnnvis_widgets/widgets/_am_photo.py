"""The Activation Maximization widget's photo and pictures past Lucid (issue 17).

:class:`AMPhoto` lets a run start from a photo (feature accentuation, Hamblin et al. 2023): the
``sample`` select (a packaged photo, an upload, the constructor's picture, or ``"noise"`` for
plain activation maximization) and the ``upload`` control of
:class:`~._sample_photo.SamplePhoto`. With a photo every unit is optimized twice in one batch,
accentuated and plain (both from the photo), drawn side by side. It also shows MaCo's
importance map (Fel et al. 2023) over the image when ``show_alpha`` is on.
"""

from __future__ import annotations

from typing import Any

import torch
import traitlets as t

from ..core import activation_max as am
from ..core.activation_max_accent import alpha_picture
from ..core.blocks.optimize import Step
from ..imaging import encode, make_grid
from ._photos import UPLOAD_TRAITS, SampleUploadMixin
from ._sample_photo import SamplePhoto

__all__ = ["NOISE", "AMPhoto"]

NOISE = "noise"  # the ``sample`` that starts from noise: plain activation maximization


class AMPhoto(SamplePhoto, SampleUploadMixin):
    """Mixin of :class:`~.activation_max.ActivationMaximization` (see the module's text)."""

    has_photo = t.Bool(False, help="True while the run starts from a photo (read-only).").tag(
        sync=True
    )
    accent_options = t.List(help="[label, name] of the layers accentuation can keep close to the "
                            "photo (read-only).").tag(sync=True)  # fmt: skip
    alpha_image = t.Bytes(
        b"", help="PNG of the last image seen through its importance (alpha) map (read-only)."
    ).tag(sync=True)

    def _photo_traits(self, image: Any) -> dict[str, Any]:
        """``sample`` and ``sample_options`` for the constructor's ``image`` (None: noise)."""
        if image is None or image == NOISE:
            _, options = self._photo_choices("cat")
            sample = NOISE
        else:
            sample, options = self._photo_choices(image)
        w: Any = self
        layers = [[li.label(), li.name] for li in w.handle.conv_layers()]
        return dict(
            sample_options=[["none: start from noise", NOISE], *options],
            sample=sample,
            accent_options=[["auto: halfway to the objective's layer", ""], *layers],
        )

    def _photo_ready(self) -> None:
        self.observe(self._on_upload, names=UPLOAD_TRAITS)
        self.observe(self._on_photo, names=["sample", "size"])
        self.observe(lambda change: self._set_panels(), names=["show_alpha"])
        self._on_photo({})

    def _on_photo(self, change: dict) -> None:
        w: Any = self
        self.has_photo = w.sample != NOISE
        self._set_panels()
        self._show_original()

    def _show_original(self) -> None:
        if not self.has_photo:
            self.original = b""
            return
        super()._show_original()

    def _set_panels(self) -> None:
        w: Any = self
        photo = self.has_photo
        label = "Accentuated | plain AM, both from the photo" if photo else "Synthesized image"
        w.panels = [
            *([{"kind": "image", "trait": "original", "label": "Photo"}] if photo else []),
            {"kind": "image", "label": label},
            *(
                [{"kind": "image", "trait": "alpha_image", "label": "Importance (alpha) map"}]
                if w.show_alpha
                else []
            ),
            {"kind": "chart", "label": "Loss", "trait": "history"},
            {"kind": "progress"},
        ]

    # ------------------------------------------------------------------ the run
    def _start_kwargs(self, grid: int) -> dict[str, Any]:
        """What :func:`~cnnvis_widgets.core.activation_max.maximize_steps` gets for the photo:
        the start pixels and, per image, accentuated or plain (in pairs)."""
        if not self.has_photo:
            return {}
        w: Any = self
        return dict(
            start=self.target(),
            accentuate=[True, False] * grid,
            accent_layer=w.accent_layer or None,
        )

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        img = step.image
        if img is None or img.shape[0] == 1:
            return super()._frame_pixels(step)  # type: ignore[misc]
        ncol = 2 if self.has_photo else None  # a row per unit: accentuated, plain
        return make_grid(img.clamp(0, 1), ncol=ncol)

    def _on_step(self, step: Step) -> None:
        self._alpha_so_far = step.metrics.get("alpha")  # an AlphaMap: read when stopped

    def _show_alpha_map(self, result: am.AMResult | None, last: Step | None = None) -> None:
        """``alpha_image`` from the run's result, else (stopped) from its last step's image and
        the gradients accumulated until then; empty when there is neither."""
        acc = getattr(self, "_alpha_so_far", None)
        if result is not None:
            image, alpha = result.image, result.alpha
        elif last is not None and last.image is not None and acc is not None:
            image, alpha = last.image.detach().clamp(0, 1).cpu(), acc.map()
        else:
            image, alpha = None, None
        if image is None or alpha is None:
            self.alpha_image = b""
            return
        shown = alpha_picture(image, alpha)
        ncol = 2 if self.has_photo else None
        self.alpha_image = encode(shown[0] if shown.shape[0] == 1 else make_grid(shown, ncol=ncol))
