"""A network's features across training (Zeiler & Fergus 2014, Fig. 4), fed from any loop.

A :class:`Timeline` keeps snapshots of a network's weights taken while it trains: call
``timeline.snapshot(model, step, loss=..., accuracy=...)`` from inside your own training loop
(or pass the timeline to :func:`~.training.train_steps`, which snapshots before training and
after each epoch). Each snapshot is a CPU copy of the ``state_dict``; the timeline is bounded in
count and bytes (when full, every other snapshot is dropped, the first and the latest always kept,
so the snapshots keep spanning the whole run). ``timeline.record(step, loss=...)`` keeps light
per-step numbers for a chart without any weights.

Per snapshot, :func:`checkpoint_view` computes what Zeiler & Fergus looked at: the first-layer
filters (:func:`first_layer_filters`, each normalized on its own), activation-maximization images
of chosen units (:func:`cnnvis_widgets.core.activation_max.maximize`) and their top-9 patches
(:func:`cnnvis_widgets.core.topk.top_k_patches`), on the snapshot's weights.

Examples
--------
>>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
>>> tl = Timeline()
>>> for step in range(3):
...     with torch.no_grad():
...         _ = net[0].weight.add_(0.1)
...     _ = tl.snapshot(net, step, loss=1.0 / (step + 1))
>>> len(tl), tl[-1].step, tl[-1].metrics["loss"]
(3, 2, 0.3333333333333333)
>>> first_layer_filters(tl.module_at(0, net)).shape
torch.Size([4, 1, 3, 3])
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models import ModelHandle
from .filters import normalize_kernels

__all__ = [
    "Snapshot",
    "Timeline",
    "CheckpointView",
    "first_layer_filters",
    "checkpoint_view",
    "AM_OVERRIDES",
]


@dataclass
class Snapshot:
    """One moment of a training run.

    Attributes
    ----------
    step : int
        The training step (the caller's count).
    state_dict : dict of str to torch.Tensor
        CPU copies of the weights and buffers.
    metrics : dict of str to float
        What the caller passed (``loss``, ``accuracy``, ``epoch``...).
    id : int
        Unique within its timeline (the order of the snapshots).
    """

    step: int
    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    id: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state_dict.values())

    @property
    def label(self) -> str:
        """``"epoch 2 (step 160)"`` or ``"step 160"``."""
        e = self.metrics.get("epoch")
        return f"epoch {int(e)} (step {self.step})" if e is not None else f"step {self.step}"


def _module_of(model: nn.Module | ModelHandle) -> nn.Module:
    if isinstance(model, ModelHandle):
        return model.model
    if isinstance(model, nn.Module):
        return model
    raise TypeError(f"snapshot takes an nn.Module or a ModelHandle, got {type(model).__name__}")


class Timeline:
    """Bounded snapshots of a network's weights across training, plus light per-step numbers.

    Parameters
    ----------
    max_snapshots : int
        At most this many snapshots are kept (at least 2).
    max_bytes : int
        And at most this many bytes of weights in all (at least one snapshot is always kept).
    max_points : int
        Per-step records kept by :meth:`record` (thinned like the snapshots when full).

    Thread-safe: a training loop may snapshot from one thread while a widget reads from another;
    :attr:`version` grows with every change.
    """

    def __init__(
        self, max_snapshots: int = 64, max_bytes: int = 256 * 2**20, max_points: int = 20_000
    ) -> None:
        if int(max_snapshots) < 2:
            raise ValueError(f"max_snapshots must be at least 2, got {max_snapshots}")
        if int(max_bytes) < 1 or int(max_points) < 2:
            raise ValueError("max_bytes must be positive and max_points at least 2")
        self.max_snapshots = int(max_snapshots)
        self.max_bytes = int(max_bytes)
        self.max_points = int(max_points)
        self._snaps: list[Snapshot] = []
        self._points: list[tuple[int, dict[str, float]]] = []
        self._next_id = 0
        self._lock = threading.RLock()
        self.version = 0

    # ------------------------------------------------------------------ writing
    def snapshot(self, model: nn.Module | ModelHandle, step: int, **metrics: float) -> Snapshot:
        """Keep a CPU copy of ``model``'s weights at ``step`` with ``metrics`` (plain numbers).

        Call it from any training loop; the model is only read (``state_dict`` copied).
        """
        module = _module_of(model)
        state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        values = {k: float(v) for k, v in metrics.items()}
        with self._lock:
            snap = Snapshot(int(step), state, values, self._next_id)
            self._next_id += 1
            self._snaps.append(snap)
            self._thin()
            self.version += 1
        return snap

    def record(self, step: int, **metrics: float) -> None:
        """Keep per-step numbers (no weights), e.g. the batch loss, for a chart."""
        with self._lock:
            self._points.append((int(step), {k: float(v) for k, v in metrics.items()}))
            if len(self._points) > self.max_points:
                last = self._points[-1]
                self._points = self._points[:-1:2] + [last]
            self.version += 1

    def clear(self) -> None:
        """Forget every snapshot and record."""
        with self._lock:
            self._snaps, self._points = [], []
            self.version += 1

    def _thin(self) -> None:
        def over() -> bool:
            total = sum(s.nbytes for s in self._snaps)
            return len(self._snaps) > self.max_snapshots or (
                total > self.max_bytes and len(self._snaps) > 1
            )

        while over():
            snaps = self._snaps
            if len(snaps) <= 2:  # bytes only: keep the latest
                self._snaps = snaps[-1:]
                continue
            # drop every other one between the first and the latest (odd positions)
            middle = [s for i, s in enumerate(snaps[1:-1], start=1) if i % 2 == 0]
            self._snaps = [snaps[0], *middle, snaps[-1]]

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._snaps)

    def __getitem__(self, index: int) -> Snapshot:
        with self._lock:
            return self._snaps[index]

    def __iter__(self) -> Iterator[Snapshot]:
        with self._lock:
            return iter(list(self._snaps))

    @property
    def snapshots(self) -> list[Snapshot]:
        """The kept snapshots, oldest first (a copy of the list)."""
        with self._lock:
            return list(self._snaps)

    @property
    def points(self) -> list[tuple[int, dict[str, float]]]:
        """The kept :meth:`record` entries ``(step, metrics)``, oldest first."""
        with self._lock:
            return list(self._points)

    def series(self, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of metric ``name``: from the records when there are any, else from
        the snapshots."""
        with self._lock:
            rows = [(s, m[name]) for s, m in self._points if name in m]
            if not rows:
                rows = [(s.step, s.metrics[name]) for s in self._snaps if name in s.metrics]
        return rows

    def module_at(self, index: int, template: nn.Module | ModelHandle) -> nn.Module:
        """A copy of ``template`` (same architecture) with snapshot ``index``'s weights, in eval
        mode."""
        net = copy.deepcopy(_module_of(template))
        net.load_state_dict(self[index].state_dict)
        return net.eval()

    def handle_at(self, index: int, template: ModelHandle) -> ModelHandle:
        """Snapshot ``index`` as a :class:`ModelHandle` with ``template``'s input spec."""
        from .training import handle_of

        return handle_of(template, self.module_at(index, template), self[index].label)

    def __repr__(self) -> str:
        return f"Timeline({len(self)} snapshots, {len(self._points)} records)"


def first_layer_filters(model: nn.Module | ModelHandle) -> torch.Tensor:
    """The first convolution's kernels, each normalized on its own to ``[0, 1]``.

    Returns
    -------
    torch.Tensor
        ``(out_channels, in_channels, kh, kw)`` on the CPU: ``(w - min) / (max - min)`` per
        filter (0.5 for a constant filter), as Zeiler & Fergus show them.

    Raises
    ------
    ValueError
        The model has no ``nn.Conv2d``.
    """
    module = _module_of(model)
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the model has no nn.Conv2d: there are no first-layer filters to show")
    return normalize_kernels(conv.weight.detach().float().cpu())


#: activation-maximization settings for small inputs (28 px digits): Lucid's recipe with
#: transforms scaled down to the image (pad 2, jitter 2, scale +-5%, rotate +-5 deg)
AM_OVERRIDES: dict[str, Any] = dict(pad=2, jitter=2, scale=0.05, rotate=5.0, jitter2=1)


@dataclass
class CheckpointView:
    """What one snapshot shows (see :func:`checkpoint_view`).

    Attributes
    ----------
    snapshot : Snapshot
    filters : torch.Tensor
        :func:`first_layer_filters` of the snapshot.
    layer : str
    units : list of int
    am : torch.Tensor or None
        ``(U, C, H, W)`` activation-maximization images, pixels in ``[0, 1]`` (None if not asked).
    patches : list of list of torch.Tensor
        Per unit its top-9 patches ``(C, h, w)`` (empty without a dataset).
    values : list of list of float
        The units' maxima on those patches.
    """

    snapshot: Snapshot
    filters: torch.Tensor
    layer: str = ""
    units: list[int] = field(default_factory=list)
    am: torch.Tensor | None = None
    patches: list[list[torch.Tensor]] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)


def checkpoint_view(
    timeline: Timeline,
    index: int,
    template: ModelHandle,
    layer: str | None = None,
    units: Sequence[int] = (),
    dataset: Any = None,
    *,
    am_steps: int = 64,
    k: int = 9,
    seed: int = 0,
) -> CheckpointView:
    """First-layer filters, AM images and top-k patches of ``units`` of ``layer`` at snapshot
    ``index`` (``template`` supplies the architecture and the input spec).

    Parameters
    ----------
    timeline : Timeline
    index : int
        Which snapshot (negative counts from the end).
    template : ModelHandle
        The network's handle (any weights: the snapshot's replace them in a copy).
    layer : str, optional
        A spatial layer; without it only the filters are computed.
    units : sequence of int
        Units of ``layer`` to show.
    dataset : optional
        Images for the top-k pass (e.g. ``Digits.dataset()``); without it no patches.
    am_steps : int
        Steps of activation maximization per unit (0: none), with :data:`AM_OVERRIDES`.
    k : int
        Patches per unit (9 in Zeiler & Fergus).
    seed : int
        Seed of the AM initialisation (the same for every snapshot, so they compare).
    """
    from . import activation_max, topk

    snap = timeline[index]
    handle = timeline.handle_at(index, template)
    view = CheckpointView(snap, first_layer_filters(handle))
    if layer is None or not units:
        return view
    unit_list = [int(u) for u in units]
    for u in unit_list:
        handle.check_unit(layer, u)
    view.layer, view.units = layer, unit_list
    if am_steps > 0:
        side = min(handle.input_size)
        images = [
            activation_max.maximize(
                handle, f"{layer}:{u}", preset="lucid", steps=am_steps, size=side, seed=seed,
                **AM_OVERRIDES,
            ).image[0].detach().cpu()
            for u in unit_list
        ]  # fmt: skip
        view.am = torch.stack(images)
    if dataset is not None:
        top = topk.top_k_patches(handle, layer, dataset, k=k, units=unit_list)
        for u in unit_list:
            view.patches.append([p.cpu() for p in top.patches(u, dataset, handle)])
            view.values.append([e.value for e in top.entries(u)])
    return view
