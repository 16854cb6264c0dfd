"""The Training widget: watch a network learn (Zeiler & Fergus 2014, Fig. 4; Adebayo et al. 2018).

Run trains a copy of the network (by default the embedded ``zf_mnist`` from its random
initialisation) on the MNIST digits with :func:`cnnvis_widgets.core.training.train_steps`: the
loss and accuracy chart grows live, Stop keeps what was learned and Run continues from there.
After every epoch a snapshot goes to a :class:`~cnnvis_widgets.core.timeline.Timeline`; the
checkpoint slider scrubs through them and shows that checkpoint's first-layer filters, the
activation-maximization images of the chosen units and their top-9 patches. Your own training
loop can feed it: pass ``timeline=`` and call ``timeline.snapshot(model, step, ...)`` in the
loop. "Compare with random labels" trains the same network on permuted labels (it memorizes) and
shows both networks' saliency maps side by side with their rank correlation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import traitlets as t

from ..core import training as TR
from ..core.blocks.optimize import Step
from ..core.timeline import Timeline
from ..models import ModelHandle
from ..models.layers import default_layer
from . import _training_views as V
from ._base import BoundedFloat, BoundedInt, button, get_handle, setting

from ._base import CnnvisWidget  # isort: skip

__all__ = ["Training"]

_SAME_RUN = ("batch_size", "seed", "train_per_class")  # a change of these starts over


class Training(V.CheckpointPictures, V.CompareJob, CnnvisWidget):
    """Train a small CNN live and scrub through its features across epochs.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle, optional
        Default: ``zf_mnist`` with random weights (``load_model("zf_mnist", weights=None)``).
        Any network with a 1x28x28 input (digits) can train here; with ``timeline=`` any
        network whose snapshots you feed.
    data : TrainData, optional
        Default :func:`cnnvis_widgets.core.training.digits_data` (4,000 + 1,000 MNIST digits).
    timeline : Timeline, optional
        Snapshots your own loop feeds (``timeline.snapshot(model, step, test_accuracy=...)``,
        and ``timeline.record(step, loss=..., accuracy=...)`` for the chart's per-step lines);
        the widget shows them as they come (and adds its own runs' snapshots to it).
    device : str, optional
    **traits
        Initial values of any trait below (``epochs=``, ``layer=``, ``unit=``...).

    Examples
    --------
    >>> w = Training(epochs=3)                                      # doctest: +SKIP
    >>> w                                                           # doctest: +SKIP
    >>> w.run(); w.wait(); w.checkpoint = 1                         # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    layer_options = t.List(t.List(), help="[label, name] of every spatial layer (read-only).").tag(
        sync=True
    )
    unit_max = t.Int(0, help="Largest first unit of the layer (read-only).").tag(sync=True)
    checkpoint_max = t.Int(0, help="Index of the latest snapshot (read-only).").tag(sync=True)

    # ---------------------------------------------------------------------- Training
    epochs = setting(
        BoundedInt(4, 1, 50, help="Passes over the training digits (live: read each epoch)."),
        "slider", "Epochs", "Training", live=True, step=1,
    )  # fmt: skip
    lr = setting(
        BoundedFloat(2e-3, 1e-5, 0.05, help="Adam's learning rate of the first epoch (live)."),
        "slider", "Learning rate", "Training", live=True, log=True, step=1e-5,
    )  # fmt: skip
    lr_decay = setting(
        BoundedFloat(0.5, 0.05, 1.0, help="Learning-rate factor per epoch (live)."),
        "slider", "LR decay per epoch", "Training", live=True, step=0.05,
    )  # fmt: skip
    batch_size = setting(
        BoundedInt(50, 1, 1000, help="Digits per step (a change starts over)."),
        "int", "Batch", "Training",
    )  # fmt: skip
    train_per_class = setting(
        BoundedInt(0, 0, 100_000, help="Training digits per class, 0 = all (change: start over)."),
        "int", "Digits per class", "Training",
    )  # fmt: skip
    seed = setting(
        BoundedInt(0, 0, 2**31 - 1, help="Seed of the batch order (a change starts over)."),
        "int", "Seed", "Training",
    )  # fmt: skip
    # ---------------------------------------------------------------------- Checkpoint
    checkpoint = setting(
        t.Int(0, help="Which snapshot is shown (0: before training; then one per epoch)."),
        "slider", "Checkpoint", "Checkpoint", min=0, max_trait="checkpoint_max", step=1,
    )  # fmt: skip
    layer = setting(
        t.Unicode("", help="Layer whose units are shown (AM images and top-9 patches)."),
        "select", "Layer", "Checkpoint", options_trait="layer_options",
    )  # fmt: skip
    unit = setting(
        t.Int(0, help="First unit shown."),
        "slider", "First unit", "Checkpoint", min=0, max_trait="unit_max", step=1,
    )  # fmt: skip
    n_units = setting(
        BoundedInt(4, 1, 8, help="Number of units shown."),
        "slider", "Units", "Checkpoint", step=1,
    )  # fmt: skip
    am_steps = setting(
        BoundedInt(64, 0, 512, help="Activation-maximization steps per unit (0: none)."),
        "slider", "AM steps", "Checkpoint", step=1,
    )  # fmt: skip
    # ---------------------------------------------------------------------- Randomization
    random_epochs = setting(
        BoundedInt(25, 1, 200, help="Epochs of the randomized-label network (on 10 per class)."),
        "slider", "Epochs (random labels)", "Label randomization", step=1, collapsed=True,
    )  # fmt: skip
    n_compare = setting(
        BoundedInt(6, 1, 16, help="Test digits whose maps are compared."),
        "slider", "Digits compared", "Label randomization", step=1,
    )  # fmt: skip

    _buttons = (
        button("Start over", "reset", "Training"),
        button("Compare with random labels", "compare", "Label randomization"),
    )

    curves = t.Dict(help="Chart: loss, batch accuracy, test accuracy (read-only).").tag(sync=True)
    filters = t.Bytes(b"", help="PNG: the checkpoint's first-layer filters (read-only).").tag(
        sync=True
    )
    am_images = t.Bytes(b"", help="PNG: AM images of the units (read-only).").tag(sync=True)
    top_patches = t.Bytes(b"", help="PNG: the units' top-9 patches (read-only).").tag(sync=True)
    comparison = t.Bytes(b"", help="PNG: digit, normal map, randomized map (read-only).").tag(
        sync=True
    )
    details = t.Unicode("", help="Text: the checkpoint and its numbers (read-only).").tag(sync=True)
    compare_details = t.Unicode("", help="Text: the randomization test (read-only).").tag(sync=True)

    def __init__(
        self,
        model: Any = None,
        *,
        data: TR.TrainData | None = None,
        timeline: Timeline | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            model = get_handle("zf_mnist", weights=None, **({"device": device} if device else {}))
        self._data_arg = data
        self._own_timeline = timeline is None
        self.timeline = Timeline() if timeline is None else timeline
        super().__init__(model, device=device, **kwargs)

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._state: TR.TrainResult | None = None
        self._state_key: tuple | None = None
        self._losses: list[tuple[int, float, float]] = []
        self._job = self._running_job = "train"
        self._view_job = V.ViewJob(self._compute_view, self._publish_view)
        self._seen_version = -1
        layer = kwargs.pop("layer", None) or default_layer(h)
        h.layer(layer)
        return dict(
            title="Training: watch the network learn",
            model_name=h.name,
            layer_options=[[li.label(), li.name] for li in h.conv_layers() if li.spatial],
            layer=layer,
            unit_max=max(0, h.layer(layer).channels - 1),
        )

    def _ready(self) -> None:
        self.observe(self._on_layer, names=["layer"])
        self.observe(lambda c: self._show(), names=["checkpoint", "unit", "n_units", "am_steps"])
        self.panels = [
            {"kind": "chart", "trait": "curves", "label": "Loss and accuracy", "y_range": [0, 1]},
            {"kind": "progress"},
            {"kind": "text", "trait": "details", "label": "Checkpoint"},
            {"kind": "image", "trait": "filters", "label": "First-layer filters", "width": 360},
            {"kind": "image", "trait": "am_images", "label": "Activation maximization",
             "width": 360},
            {"kind": "image", "trait": "top_patches", "label": "Top-9 patches", "width": 720},
            {"kind": "image", "trait": "comparison", "label": "Saliency: digit, normal, random "
             "labels", "width": 300},
            {"kind": "text", "trait": "compare_details", "label": "Label randomization"},
        ]  # fmt: skip
        self.refresh()
        if not self._own_timeline:
            threading.Thread(target=self._poll, name="cnnvis-timeline", daemon=True).start()

    @property
    def data(self) -> TR.TrainData:
        """The training data (loaded on first use)."""
        if self._data_arg is None:
            self._data_arg = TR.digits_data()
        return self._data_arg

    @property
    def result(self) -> TR.TrainResult | None:
        """The state of the latest training run (its trained copy: ``result.model``)."""
        return self._state

    # ------------------------------------------------------------------ validation, observers
    @t.validate("checkpoint")
    def _valid_checkpoint(self, proposal: dict) -> int:
        c, n = int(proposal["value"]), len(self.timeline)
        if not 0 <= c < max(1, n):
            raise t.TraitError(f"checkpoint {c} is out of range: valid 0..{max(0, n - 1)}")
        return c

    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        info = self._layer_info(proposal["value"])
        if not info.spatial:
            raise t.TraitError(f"layer {info.name!r} has no spatial output")
        return info.name

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        return self._unit_in_range(proposal["value"], self.layer)

    def _on_layer(self, change: dict) -> None:
        n = self.handle.layer(change["new"]).channels
        with self.hold_sync():
            self.unit_max = n - 1
            if self.unit > n - 1:
                self.set_trait("unit", 0)
        self._show()

    def _on_action(self, name: str, content: dict) -> None:
        if name == "reset":
            self._state = None
            self.run()
        elif name == "compare":
            self.compare()

    def compare(self) -> None:
        """Train the network on permuted labels and compare saliency maps, as the next run."""
        self._job = "compare"
        self.run()

    def _on_live_trait(self, change: dict) -> None:
        if self._state is not None and self.running and self._running_job == "train":
            setattr(self._state.settings, change["name"], change["new"])

    # ------------------------------------------------------------------ the checkpoint shown
    def refresh(self) -> None:
        """Take in the timeline's new snapshots (the slider follows the latest while it is at
        the end) and redraw the chart."""
        n = len(self.timeline)
        self._seen_version = self.timeline.version
        at_end = self.checkpoint >= self.checkpoint_max
        with self.hold_sync():
            self.checkpoint_max = max(0, n - 1)
            self.curves = V.chart_value(self._losses, self.timeline)
            if n and at_end and self.checkpoint != n - 1:
                self.checkpoint = n - 1  # (observer: _show)
                return
        self._show()

    def _poll(self) -> None:
        while not self._closed:
            if self.timeline.version != self._seen_version and not self.running:
                self.refresh()
            time.sleep(0.5)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no run is in progress and the checkpoint pictures are drawn."""
        return super().wait(timeout) and self._view_job.wait(timeout)

    def close(self) -> None:
        if hasattr(self, "_view_job"):
            self._view_job.close()
        super().close()

    # ------------------------------------------------------------------ the runs
    def _before_run(self) -> None:
        self._running_job, self._job = self._job, "train"

    def _describe(self) -> str:
        if self._running_job == "compare":
            return "label randomization"
        return f"training {self.handle.name}"

    def _train_data(self) -> TR.TrainData:
        d = self.data
        return d.subset(self.train_per_class) if self.train_per_class else d

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        if self._running_job == "compare":
            yield from self._compare_steps(stop_event)
            return
        s = TR.TrainSettings(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            lr_decay=self.lr_decay, seed=self.seed,
        )  # fmt: skip
        key = tuple(getattr(self, k) for k in _SAME_RUN)
        data = self._train_data()
        st = self._state
        if st is None or self._state_key != key or (st.finished and st.epoch >= s.epochs):
            if self._own_timeline:
                self.timeline.clear()
            self._losses = []
            self._state = TR.start_training(self.handle, data, s, timeline=self.timeline)
            self._state_key = key
        self.refresh()
        yield from TR.train_steps(self.handle, data, s, timeline=self.timeline, resume=self._state)

    def _on_step(self, step: Step) -> None:
        if self._running_job != "train":
            return
        if step.loss is not None and "accuracy" in step.metrics:
            self._losses.append((step.index + 1, step.loss, step.metrics["accuracy"]))
        if "test_accuracy" in step.metrics:
            self.refresh()

    def _sync_extra(self, step: Step) -> None:
        if self._running_job == "train":
            self.curves = V.chart_value(self._losses, self.timeline)
