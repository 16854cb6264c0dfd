"""The Training widget's pictures and chart, and the background job that draws a checkpoint.

Pictures (pixel space, 3 channels, encoded by the widget): the first-layer filters enlarged
(:func:`filters_picture`), the AM images of the chosen units (:func:`am_picture`), their top-9
patches, one 3x3 grid per unit (:func:`patches_picture`) and the randomization comparison
(:func:`comparison_picture`). :func:`chart_value` turns a run's losses and its timeline into the
multi-series chart value of ``js/PROTOCOL.md``. :class:`ViewJob` computes a checkpoint's AM
images and patches on its own thread, newest request first, so scrubbing the epoch slider never
cancels the training run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from ..core import imaging as I
from ..core import training as TR
from ..core import unit_grids as G
from ..core.blocks.optimize import Step
from ..core.timeline import CheckpointView, Timeline, checkpoint_view, first_layer_filters

__all__ = [
    "filters_picture",
    "am_picture",
    "patches_picture",
    "comparison_picture",
    "chart_value",
    "thin",
    "ViewJob",
    "CompareJob",
    "CheckpointPictures",
]

FILTER_CELL = 40  # pixels per first-layer filter
AM_CELL = 84  # pixels per AM image (28 px digits x 3)
MAX_POINTS = 400  # points per chart series sent to the browser


def _rgb(p: torch.Tensor) -> torch.Tensor:
    p = p.detach().float().cpu().clamp(0, 1)
    return p.expand(3, -1, -1) if p.shape[0] == 1 else p[:3]


def _enlarge(batch: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(batch.float(), size=(side, side), mode="nearest")


def filters_picture(filters: torch.Tensor, ncol: int = 8) -> torch.Tensor:
    """``(N, C, k, k)`` filters in ``[0, 1]`` -> one grid picture; multi-channel filters show
    their first three channels as colour, others as grey."""
    shown = filters if filters.shape[1] in (1, 3) else filters[:, :1]
    big = _enlarge(shown, FILTER_CELL)
    return _rgb(I.make_grid(big, ncol=min(ncol, len(big)), pad=2, fill=1.0))


def am_picture(am: torch.Tensor) -> torch.Tensor:
    """``(U, C, H, W)`` AM images -> one row, enlarged."""
    return _rgb(I.make_grid(_enlarge(am, AM_CELL), ncol=len(am), pad=4, fill=1.0))


def patches_picture(view: CheckpointView) -> torch.Tensor:
    """One 3x3 grid of top-9 patches per unit, side by side."""
    inner = G.CELL - 2 * G.GAP
    grids = [G.cells([I.letterbox(_rgb(p), inner) for p in patches]) for patches in view.patches]
    return I.make_grid(torch.stack(grids), ncol=len(grids), pad=8, fill=1.0)


def comparison_picture(images: torch.Tensor, normal: torch.Tensor, randomized: torch.Tensor):
    """Rows of (digit, normal network's map, randomized-label network's map), maps as heat
    maps of their absolute values (each normalized on its own)."""
    rows = []
    for x, a, b in zip(images, normal, randomized):
        maps = [I.colorize(I.normalize_map(m.abs().sum(0, keepdim=True))) for m in (a, b)]
        rows += [_rgb(x), *maps]
    batch = _enlarge(torch.stack(rows), AM_CELL)
    return I.make_grid(batch, ncol=3, pad=4, fill=1.0)


def thin(points: list[list[float]], limit: int = MAX_POINTS) -> list[list[float]]:
    """At most ``limit`` points, evenly spaced, the last always kept."""
    if len(points) <= limit:
        return points
    stride = -(-len(points) // limit)
    out = points[::stride]
    return out if out[-1] == points[-1] else [*out, points[-1]]


def chart_value(
    losses: list[tuple[int, float, float]], timeline: Timeline | None
) -> dict[str, Any]:
    """The chart of a run: the batch loss and accuracy per step (from ``losses``, or the
    timeline's records) and the test accuracy at each snapshot (dashed)."""
    if losses:
        loss = [[s, v] for s, v, _ in losses]
        acc = [[s, a] for s, _, a in losses]
    elif timeline is not None:
        loss = [[s, v] for s, v in timeline.series("loss")]
        acc = [[s, v] for s, v in timeline.series("accuracy")]
    else:
        loss, acc = [], []
    test = (
        [[s.step, s.metrics["test_accuracy"]] for s in timeline if "test_accuracy" in s.metrics]
        if timeline is not None
        else []
    )
    series = [
        {"name": "loss", "points": thin(loss)},
        {"name": "batch accuracy", "points": thin(acc)},
        {"name": "test accuracy", "points": thin(test), "dashed": True},
    ]
    return {"series": series, "y_range": [0, 1]}


class ViewJob:
    """Computes checkpoint views on a thread of its own; a new request replaces a waiting one.

    ``compute(request)`` runs on the job's thread and ``publish(request, result)`` gets its
    result (or ``publish(request, exc)`` when it raised); both are the widget's.
    """

    def __init__(self, compute: Callable[[Any], Any], publish: Callable[[Any, Any], None]) -> None:
        self._compute, self._publish = compute, publish
        self._cond = threading.Condition()
        self._request: Any = None
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, request: Any) -> None:
        with self._cond:
            if self._closed:
                return
            self._request = request
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cnnvis-view", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._request is None or self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                request, self._request, self._busy = self._request, None, True
            try:
                result: Any = self._compute(request)
            except Exception as exc:  # noqa: BLE001 - shown by the widget
                result = exc
            self._publish(request, result)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no view is waiting or being computed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._request is None and not self._busy, timeout=timeout
            )

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._request = None
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)


class CompareJob:
    """The Training widget's label-randomization run (Adebayo et al. 2018): the same network
    trained on permuted labels of 10 digits per class until it memorizes them, then both
    networks' saliency maps of a few test digits, side by side, with their rank correlation."""

    def _compare_steps(self, stop_event: threading.Event) -> Iterator[Step]:
        w: Any = self  # the Training widget: handle, data, traits
        normal_net = w._state.model if w._state is not None else w.handle.model
        normal = TR.handle_of(w.handle, normal_net, "normal")
        small = w.data.subset(10, test_limit=200)
        s = TR.TrainSettings(
            epochs=w.random_epochs, lr=3e-3, lr_decay=1.0, seed=w.seed, permute_labels=True
        )
        state = TR.start_training(w.handle, small, s)
        yield from TR.train_steps(w.handle, small, s, stop_event=stop_event, resume=state)
        if stop_event.is_set():
            return
        rand = TR.handle_of(w.handle, state.model, "randomized labels")
        x = w.data.x_test[:: max(1, len(w.data.x_test) // w.n_compare)][: w.n_compare]
        c = TR.compare_randomized(normal, rand, x, method="saliency")
        acc = TR.evaluate(normal_net, w.data.x_test, w.data.y_test, normal.normalize)
        last = state.history[-1]
        memo = "memorized" if last["train_accuracy"] >= 0.9 else "not memorized yet: more epochs"
        with w.hold_sync():
            w.comparison = I.encode(comparison_picture(c.images, c.normal, c.randomized))
            w.compare_details = (
                f"normal network: test accuracy {acc:.3f}\n"
                f"random labels: train accuracy {last['train_accuracy']:.3f} "
                f"({memo}), test accuracy {last['test_accuracy']:.3f} (chance 0.1)\n"
                f"Spearman rank correlation of |saliency| per digit: "
                + ", ".join(f"{v:.2f}" for v in c.correlations)
                + f" (mean {c.mean:.2f}; 1 = the same map)"
            )
        w._last_record = {
            "spearman_abs": c.correlations,
            "random_test_accuracy": last["test_accuracy"],
        }


class CheckpointPictures:
    """The Training widget's pictures of the checkpoint shown: the filters at once, the AM
    images and top-9 patches on the view job (:class:`ViewJob`)."""

    def _show(self) -> None:
        """Draw the filters now, the AM images and patches on the view job."""
        w: Any = self
        n = len(w.timeline)
        if not n or w._closed:
            return
        i = min(w.checkpoint, n - 1)
        snap = w.timeline[i]
        net = w.timeline.module_at(i, w.handle)
        pic = filters_picture(first_layer_filters(net))
        w._last_pixels = pic
        units = list(range(w.unit, min(w.unit + w.n_units, w.unit_max + 1)))
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in snap.metrics.items() if k != "epoch")
        with w.hold_sync():
            w.filters = I.encode(pic, "png")
            w.details = f"{snap.label} of {n - 1}: {metrics}"
        w._view_job.submit((i, snap.id, w.layer, tuple(units), w.am_steps))

    def _compute_view(self, request: tuple) -> Any:
        w: Any = self
        i, snap_id, layer, units, am_steps = request
        if w.timeline[i].id != snap_id:
            return None  # thinned away meanwhile
        test = w.data.x_test[:500]
        return checkpoint_view(w.timeline, i, w.handle, layer, units, test, am_steps=am_steps)

    def _publish_view(self, request: tuple, view: Any) -> None:
        w: Any = self
        if isinstance(view, Exception):
            w.error = f"checkpoint view: {type(view).__name__}: {view}"
            return
        if view is None or request[0] != w.checkpoint:
            return  # a newer request is on its way
        with w.hold_sync():
            w.am_images = I.encode(am_picture(view.am), "png") if view.am is not None else b""
            w.top_patches = I.encode(patches_picture(view), "png") if view.patches else b""
