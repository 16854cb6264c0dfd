"""The Inversion widget's decoder side: the trained decoders of its layers and the training job.

The decoder method (Dosovitskiy & Brox 2016) reconstructs in one pass once an up-convolutional
decoder is trained for the layer. :class:`DecoderTraining` keeps the decoders a widget loaded or
trained, says in ``decoder_info`` how far the current layer's was trained, and runs the
training as the widget's next job (:meth:`DecoderTraining.train_decoder`): progress streams
like any run, Stop keeps what was learned (a checkpoint) and a new call resumes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import traitlets as t

from ..core import inversion_results as R
from ..core import upconv
from ..core.blocks.optimize import Step
from ..imaging import encode, make_grid
from ._base import BoundedFloat, BoundedInt, setting
from ._optimization import live_slider

__all__ = ["DecoderTraining", "TRAIN_TRAITS", "training_settings"]

#: the widget's training traits and the DecoderSettings field each one sets
TRAIN_TRAITS = {
    "train_steps": "steps",
    "train_lr": "lr",
    "train_batch": "batch_size",
    "feature_weight": "feature_weight",
}


def training_settings(visible_when: dict[str, Any]) -> tuple[t.TraitType, ...]:
    """The ``train_steps``, ``train_batch`` and ``feature_weight`` settings (all live), in the
    order of their controls (the ``Decoder`` group, shown when ``visible_when`` holds)."""
    return (
        setting(
            BoundedInt(500, 1, 1_000_000, help="Decoder training: total updates (live; resumes)."),
            "slider", "Training steps", "Decoder", live=True, log=True, step=1,
            visible_when=visible_when,
        ),
        setting(
            BoundedInt(8, 1, 512, help="Decoder training: images per update (live)."),
            "slider", "Batch", "Decoder", live=True, log=True, step=1, visible_when=visible_when,
        ),
        live_slider(
            BoundedFloat(
                0.0, 0.0, 10.0,
                help="Decoder training: weight of the feature L2 loss (live; 0 = pixel loss only).",
            ),
            "Feature loss weight", "Decoder", 0.01, visible_when=visible_when,
        ),
    )  # fmt: skip


class DecoderTraining(t.HasTraits):
    """Mixin for the Inversion widget (``layer``, ``size``, ``seed``, ``details``, ``target()``
    and the settings of :func:`training_settings`): declares ``train_lr`` (no control) and the
    read-only ``decoder_info``."""

    train_lr = setting(
        BoundedFloat(1e-3, 1e-07, 1.0, help="Decoder training: Adam learning rate (live)."),
        live=True,
    )
    decoder_info = t.Unicode("", help="State of the decoder of the layer (read-only).").tag(
        sync=True
    )

    _decoders: dict[str, upconv.UpconvDecoder]
    _job = "run"  # the job of the next run: "run" or "train"

    def _decoder(self, layer: str) -> upconv.UpconvDecoder | None:
        """The decoder of ``layer`` (memory, else disk), or None when none was trained."""
        dec = self._decoders.get(layer)
        if dec is None:
            dec = upconv.load_decoder(self.handle, layer, size=self.size)  # type: ignore[attr-defined]
            if dec is not None:
                self._decoders[layer] = dec
        return dec

    def _refresh_decoder_info(self) -> None:
        w: Any = self
        try:
            steps = R.trained_steps(w.handle, w.layer, w.size, self._decoders.get(w.layer))
            if steps:
                w.decoder_info = f"decoder for {w.layer}: trained {steps} steps"
            else:
                w.decoder_info = (
                    f"no decoder for {w.layer} yet: press 'Train decoder' (method decoder)"
                )
        except Exception as exc:  # noqa: BLE001 - informative only
            w.decoder_info = f"decoder state unknown ({type(exc).__name__}: {exc})"

    def train_decoder(self) -> None:
        """Train (or resume training) the decoder of the current layer, as the next run.

        Progress streams like any run; :meth:`stop` keeps what was learned (a checkpoint is
        written) and a new call resumes from it, up to ``train_steps``.
        """
        self._job = "train"
        self.run()  # type: ignore[attr-defined]

    def _on_action(self, name: str, content: dict) -> None:
        if name == "train":
            self.train_decoder()

    def _train_steps(self, stop_event: threading.Event) -> Iterator[Step]:
        w: Any = self
        settings = upconv.DecoderSettings(
            **{field: getattr(w, trait) for trait, field in TRAIN_TRAITS.items()}
        )
        w._live = settings
        self._decoders.pop(w.layer, None)
        try:
            yield from upconv.train_decoder_steps(
                w.handle,
                w.layer,
                None,
                settings=settings,
                size=w.size,
                seed=w.seed,
                sample=w.target(),
                stop_event=stop_event,
            )
        finally:
            self._refresh_decoder_info()

    def _finish_training(self, step: Step, rec: dict[str, Any]) -> bytes:
        """The record and ``details`` of a training run that made ``step`` last; returns the
        PNG of the photo beside its reconstruction."""
        w: Any = self
        rec["train_loss"] = step.loss
        rec["trained_steps"] = step.index + 1
        rec["images_per_s"] = round(float(step.metrics.get("images_per_s", 0.0)), 2)
        dec = step.metrics.get("decoder")
        if dec is not None:
            self._decoders[w.layer] = dec
        w.details = (
            f"decoder for {w.layer}: {step.index + 1} of {step.total} steps, training "
            f"loss {step.loss:.4g}, {rec['images_per_s']:.1f} images/s\n"
            "left: the photo, right: its reconstruction from the layer's features"
        )
        assert step.image is not None
        return encode(make_grid(step.image.detach().clamp(0, 1), ncol=2))

    def _on_live_trait(self, change: dict) -> None:
        live = getattr(self, "_live", None)
        if not isinstance(live, upconv.DecoderSettings):
            super()._on_live_trait(change)  # type: ignore[misc]
        elif change["name"] in TRAIN_TRAITS:  # (``steps`` is the inversion's, not the decoder's)
            setattr(live, TRAIN_TRAITS[change["name"]], change["new"])
