"""The dissection run: :class:`Dissector` (resumable, sharded over ``torch.distributed``),
:func:`dissect` and :func:`dissect_steps`.

The algorithm, its stages and how the tallies merge across processes are described in
:mod:`cnnvis_widgets.core.dissection`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import limits
from ...data.concepts import Probe, ProbeBatch
from ...models.handle import ModelHandle
from ..blocks.hooks import StopForward
from ..blocks.optimize import Step
from ..blocks.runs import finish
from ..blocks.streaming import NonFiniteActivationError, StreamingQuantile, _all_reduce
from .probing import _consume_outputs, probe_channels, to_model_channels
from .results import Dissection, LayerDissection
from .tallies import IoUTally, _category_of_labels, label_counts


def _all_gather(t: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    import torch.distributed as dist

    backend = dist.get_backend(group)
    src = t.cpu() if (t.device.type != "cpu" and backend == "gloo") else t.contiguous()
    out = [torch.empty_like(src) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, src, group=group)
    return [o.to(t.device) for o in out]


def _dist_info(distributed: bool | None, group: Any) -> tuple[int, int]:
    """(rank, world size) of the process group dissection shards over, (0, 1) when none."""
    if distributed is False:
        return 0, 1
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        if distributed:
            raise RuntimeError("torch.distributed is not available in this torch build") from None
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        if distributed:
            raise RuntimeError(
                "distributed=True but no process group is initialised: call torch.distributed."
                "init_process_group('gloo' or 'nccl', ...) first (or start with torchrun)"
            )
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def check_layers(handle: ModelHandle, layers: str | Sequence[str], which: str = "") -> list[str]:
    """The names of ``layers`` (repeats dropped, order kept), each checked to be a layer of
    ``handle`` with feature maps.

    Parameters
    ----------
    handle : ModelHandle
    layers : str or sequence of str
    which : str
        What ``handle`` is in the messages (``"comparison model"``); empty for the model.

    Raises
    ------
    KeyError
        An unknown layer (the message lists the nearest names).
    ValueError
        No layer, or a layer without spatial output (a linear layer, a pooled vector).

    Examples
    --------
    >>> check_layers(handle, ["_blocks.4", "_blocks.4", "_blocks.8"])   # doctest: +SKIP
    ['_blocks.4', '_blocks.8']
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise ValueError("give at least one layer to dissect")
    of = f" of the {which}" if which else ""
    for name in names:
        try:
            info = handle.layer(name)
        except KeyError as exc:
            raise KeyError(f"{which}: {exc.args[0]}" if which else exc.args[0]) from None
        if not info.spatial:
            valid = [li.name for li in handle.conv_layers()][:8]
            raise ValueError(
                f"layer {name!r}{of} has no spatial output ({info.kind}, {info.channels} "
                f"features); dissection needs feature maps, e.g. {', '.join(valid)}"
            )
    return names


class Dissector:
    """A resumable dissection: holds the tallies between batches, so a stopped run continues.

    :meth:`steps` yields one :class:`~cnnvis_widgets.core.blocks.optimize.Step` per probe batch
    and stage (``image`` and ``loss`` are None; ``metrics`` has ``stage``, ``images``, ``of``)
    and returns the :class:`Dissection` (None when stopped; see
    :mod:`~cnnvis_widgets.core.blocks.runs`). Stop it between steps (``stop_event`` or closing
    the generator) and call :meth:`steps` again to resume.

    Parameters are those of :func:`dissect`.
    """

    def __init__(
        self,
        handle: ModelHandle,
        layers: str | Sequence[str],
        probe: Probe,
        *,
        quantile: float = 0.005,
        iou_threshold: float = 0.04,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        top_k: int = 8,
        bins: int = 2048,
        refine: bool = False,
        distributed: bool | None = None,
        group: Any = None,
        prefetch: bool = True,
    ) -> None:
        names = check_layers(handle, layers)
        if device is not None and torch.device(device).type != handle.device.type:
            raise ValueError(
                f"the model is on {handle.device}, device={device!r} was asked for: load it "
                f"there with load_model(..., device={str(device)!r})"
            )
        if not 0.0 < quantile < 0.5:
            raise ValueError(f"quantile must be between 0 and 0.5, got {quantile}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be between 0 and 1, got {iou_threshold}")
        side = limits.check_side(probe.size, "probe image size")
        batch_size = limits.check_batch(batch_size, side, side, name="batch_size")
        top_k = limits.check_int(top_k, "top_k", minimum=1, limit="MAX_TOP_K")
        bins = limits.check_int(bins, "bins", maximum=1 << 16)
        probe_channels(handle)  # ValueError for channel counts the probe images cannot give
        if len(probe) < 1:
            raise ValueError("the probe set is empty")
        self.handle = handle
        self.layers = names
        self.probe = probe
        self.quantile = float(quantile)
        self.iou_threshold = float(iou_threshold)
        self.batch_size = int(batch_size)
        self.top_k = int(top_k)
        self.bins = int(bins)
        self.refine = bool(refine)
        self.prefetch = bool(prefetch)
        self.group = group
        self.rank, self.world = _dist_info(distributed, group)
        self.device = handle.device
        self.stages = ["quantile"] + (["refine"] if refine else []) + ["iou"]
        n = len(probe)
        bounds = [(lo, min(n, lo + self.batch_size)) for lo in range(0, n, self.batch_size)]
        nb = len(bounds)
        # contiguous, batch-aligned slices: rank r gets batches [r*nb/W, (r+1)*nb/W)
        first, last = self.rank * nb // self.world, (self.rank + 1) * nb // self.world
        self.batches = bounds[first:last]
        self.stage_index = 0
        self.cursor = 0
        self.result: Dissection | None = None
        self.elapsed = 0.0
        self._labels = probe.labels
        self._n_labels = len(probe.labels)
        self._label_cat = _category_of_labels(probe.labels, probe.categories).to(self.device)
        self._label_area = torch.zeros(self._n_labels, dtype=torch.int64, device=self.device)
        units = {name: handle.layer(name).channels for name in names}
        self._quant = {
            name: StreamingQuantile(units[name], self.bins, self.device) for name in names
        }
        self._top_val = {
            name: torch.full((units[name], self.top_k), -math.inf, device=self.device)
            for name in names
        }
        self._top_idx = {
            name: torch.full((units[name], self.top_k), -1, dtype=torch.int64, device=self.device)
            for name in names
        }
        self._tally = {
            name: IoUTally(
                units[name], self._n_labels, len(probe.categories), probe.mask_size, self.device
            )
            for name in names
        }
        self._thresholds: dict[str, torch.Tensor] = {}
        self._bounds: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------- progress
    @property
    def total_steps(self) -> int:
        """Steps of the whole run on this process (batches x stages)."""
        return len(self.batches) * len(self.stages)

    @property
    def steps_done(self) -> int:
        return self.stage_index * len(self.batches) + self.cursor

    @property
    def done(self) -> bool:
        """True once the result is complete."""
        return self.result is not None

    @property
    def stage(self) -> str:
        """The current stage (``"quantile"``, ``"refine"``, ``"iou"`` or ``"done"``)."""
        return self.stages[self.stage_index] if self.stage_index < len(self.stages) else "done"

    # ----------------------------------------------------------------------------- the run
    def steps(
        self, stop_event: threading.Event | None = None
    ) -> Generator[Step, None, Dissection | None]:
        """Run (or resume) the dissection, yielding a step after every batch; returns the
        :class:`Dissection`, or None when ``stop_event`` stopped it first.

        With ``prefetch`` the next probe batch is drawn (or read) on a helper thread while the
        network runs on the current one."""
        total = self.total_steps
        pool = ThreadPoolExecutor(1, thread_name_prefix="cnnvis-probe") if self.prefetch else None
        try:
            while self.stage_index < len(self.stages):
                stage = self.stages[self.stage_index]
                if stage == "refine" and self.cursor == 0:
                    for q in self._quant.values():
                        if q._fine is None:
                            q.begin_refine(self.quantile)
                if not self.batches:  # more processes than batches: nothing local, still merge
                    self._finish_stage(stage)
                    continue
                ahead: Future | None = None
                while self.cursor < len(self.batches):
                    if stop_event is not None and stop_event.is_set():
                        return None
                    t0 = time.perf_counter()
                    lo, hi = self.batches[self.cursor]
                    if ahead is not None:
                        batch = ahead.result()
                    else:
                        batch = self._load(stage, self.cursor)
                    ahead = None
                    if pool is not None and self.cursor + 1 < len(self.batches):
                        ahead = pool.submit(self._load, stage, self.cursor + 1)
                    self._process(stage, lo, hi, batch)
                    self.cursor += 1
                    metrics: dict[str, Any] = {
                        "stage": stage,
                        "stage_index": self.stage_index,
                        "stages": len(self.stages),
                        "images": hi - self.batches[0][0],
                        "of": self.batches[-1][1] - self.batches[0][0],
                    }
                    last = self.cursor == len(self.batches)
                    if last:
                        self._finish_stage(stage)  # merges, thresholds or the result; next stage
                    self.elapsed += time.perf_counter() - t0
                    yield Step(
                        index=self.steps_done - 1 if self.result is None else total - 1,
                        loss=None,
                        image=None,
                        metrics=metrics,
                        total=total,
                    )
                    if last:
                        break
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return self.result

    def _load(self, stage: str, cursor: int) -> ProbeBatch:
        lo, hi = self.batches[cursor]
        return self.probe.batch(range(lo, hi), masks=(stage == "iou"), device=self.device)

    def run(self, stop_event: threading.Event | None = None) -> Dissection:
        """Run to the end (or resume) and return the result."""
        result = finish(self.steps(stop_event))
        if result is None:
            raise RuntimeError("the dissection was stopped before it finished; call run() again")
        return result

    def _finish_stage(self, stage: str) -> None:
        if stage in ("quantile", "refine"):
            if self.world > 1:
                for name in self.layers:
                    self._quant[name].all_reduce(self.group)
            for name in self.layers:
                if self._quant[name].count == 0:
                    raise RuntimeError("no probe image was processed")
                thr, bound = self._quant[name].quantile(self.quantile)
                self._thresholds[name], self._bounds[name] = thr, bound
        else:
            if self.world > 1:
                for t in self._tally.values():
                    t.all_reduce(self.group)
                for name in self.layers:
                    self._merge_top(name)
                _all_reduce(self._label_area, "sum", self.group)
            self.result = self._build(complete=True)
        self.stage_index += 1
        self.cursor = 0

    def _process(self, stage: str, lo: int, hi: int, batch: ProbeBatch) -> None:
        x = self.handle.normalize(to_model_channels(self.handle, batch.images))
        indices = batch.indices.to(self.device)

        def consume(name: str, out: torch.Tensor) -> None:
            if out.dim() != 4:
                raise ValueError(f"layer {name!r} gave a {out.dim()}-D output, expected 4-D")
            a = out.detach()
            if stage != "iou":
                try:
                    self._quant[name].update(a)
                except NonFiniteActivationError:
                    raise NonFiniteActivationError(
                        f"layer {name!r} gave NaN or infinite activations on probe images "
                        f"{lo}..{hi - 1}: check the model's weights and its input normalization"
                    ) from None
            else:
                area = self._tally[name].update(a, self._thresholds[name], batch)
                self._update_top(name, area, indices)

        with torch.inference_mode(), _consume_outputs(self.handle, self.layers, consume):
            try:
                self.handle.net(x)
            except StopForward:
                pass
        if stage == "iou":
            self._label_area += label_counts(batch, self._n_labels, self.probe.mask_size)

    def _update_top(self, name: str, area: torch.Tensor, indices: torch.Tensor) -> None:
        """Keep the images where each unit's thresholded map covers the most mask pixels (what
        the IoU counts; the peak activation would favour single hot spots, often at borders)."""
        score = area.t().to(torch.float32)  # (units, B)
        vals = torch.cat([self._top_val[name], score], dim=1)
        idx = torch.cat([self._top_idx[name], indices.view(1, -1).expand(score.shape[0], -1)], 1)
        self._top_val[name], self._top_idx[name] = _top_sorted(vals, idx, self.top_k)

    def _merge_top(self, name: str) -> None:
        vals = torch.cat(_all_gather(self._top_val[name], self.group), dim=1)
        idx = torch.cat(_all_gather(self._top_idx[name], self.group), dim=1)
        self._top_val[name], self._top_idx[name] = _top_sorted(vals, idx, self.top_k)

    # ----------------------------------------------------------------------------- results
    def partial_result(self) -> Dissection | None:
        """The result from the batches tallied so far (None before the IoU stage starts)."""
        if self.result is not None:
            return self.result
        if self.stage != "iou" or self.cursor == 0:
            return None
        return self._build(complete=False)

    def _build(self, complete: bool) -> Dissection:
        layers = {}
        for name in self.layers:
            iou = self._tally[name].iou(self._label_area, self._label_cat)
            layers[name] = LayerDissection(
                name=name,
                thresholds=self._thresholds[name].cpu().numpy(),
                threshold_error=self._bounds[name].cpu().numpy(),
                iou=iou.to(torch.float32).cpu().numpy(),
                top_images=self._top_idx[name].cpu().numpy(),
                top_values=self._top_val[name].cpu().numpy().astype(np.float32),
                activated=self._tally[name].activated.cpu().numpy(),
            )
        if complete:
            n_images = len(self.probe)
        else:
            n_images = self.batches[self.cursor - 1][1] - self.batches[0][0] if self.cursor else 0
        return Dissection(
            layers,
            self._labels,
            self.probe.categories,
            quantile=self.quantile,
            iou_threshold=self.iou_threshold,
            n_images=int(n_images),
            model=self.handle.describe(),
            probe=self.probe.describe(),
            complete=complete,
            meta={
                "bins": self.bins,
                "refine": self.refine,
                "batch_size": self.batch_size,
                "top_k": self.top_k,
                "world_size": self.world,
                "seconds": round(self.elapsed, 3),
            },
        )


def _top_sorted(vals: torch.Tensor, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The ``k`` largest values per row with their indices; ties broken by the smaller index
    (deterministic whatever the order the candidates came in)."""
    order = torch.argsort(idx, dim=1, stable=True)
    vals, idx = vals.gather(1, order), idx.gather(1, order)
    order = torch.argsort(-vals, dim=1, stable=True)[:, :k]
    return vals.gather(1, order), idx.gather(1, order)


def dissect_steps(
    handle: ModelHandle,
    layers: str | Sequence[str],
    probe: Probe,
    *,
    stop_event: threading.Event | None = None,
    **settings: Any,
) -> Generator[Step, None, Dissection | None]:
    """Generator form of :func:`dissect` (without its cache): yields progress steps and returns
    the :class:`Dissection` (None when ``stop_event`` stopped it).

    Examples
    --------
    >>> result = yield from dissect_steps(handle, "_blocks.4", probe)   # doctest: +SKIP
    >>> run = Run(dissect_steps(handle, "_blocks.4", probe))          # doctest: +SKIP
    >>> for step in run: print(step.metrics["stage"], step.metrics["images"])  # doctest: +SKIP
    >>> run.result.summary()                                          # doctest: +SKIP
    """
    return (yield from Dissector(handle, layers, probe, **settings).steps(stop_event))


def dissect(
    handle: ModelHandle,
    layers: str | Sequence[str],
    probe: Probe,
    *,
    cache: bool = False,
    **settings: Any,
) -> Dissection:
    """Dissect ``layers`` of a network on a probe set (Bau et al. 2017).

    Parameters
    ----------
    handle : ModelHandle
        The network (:func:`cnnvis_widgets.load_model`).
    layers : str or list of str
        Layers with spatial output (conv, activation, block).
    probe : ProbeSet or BrodenProbe
        :func:`cnnvis_widgets.data.concepts.probe_set` or
        :func:`cnnvis_widgets.data.broden.broden_probe`.
    cache : bool
        Load the result from / save it to the results cache (``cnnvis_widgets.cache``), keyed by
        the model's fingerprint (its weights), layers, probe and settings.
    **settings
        The settings of :class:`Dissector`, with these defaults:
    quantile : float
        Fraction of the activations above each unit's threshold (0.005 = top 0.5 %).
    iou_threshold : float
        A unit is interpretable when its best IoU is at least this (0.04).
    batch_size : int
        Probe images per forward pass.
    device : str, optional
        Must be the model's device (``handle.device``, the default).
    top_k : int
        Top images kept per unit (those where its thresholded map covers the most pixels).
    bins : int
        Histogram bins per unit for the streaming quantile (power of two).
    refine : bool
        One more pass over the probe set to shrink the threshold error ``bins`` times.
    distributed : bool, optional
        Shard over the initialised ``torch.distributed`` process group (default: when one is
        initialised). Every process must call ``dissect`` with the same arguments; each gets
        the full result.
    group : optional
        The process group (default: the world).
    prefetch : bool
        Draw (or read) the next probe batch on a helper thread while the network runs.

    Returns
    -------
    Dissection

    Examples
    --------
    >>> from cnnvis_widgets import load_model                        # doctest: +SKIP
    >>> from cnnvis_widgets.data.concepts import probe_set            # doctest: +SKIP
    >>> probe = probe_set(256)                                          # doctest: +SKIP
    >>> pretrained = dissect(load_model(), "_blocks.4", probe)          # doctest: +SKIP
    >>> random = dissect(load_model(weights=None), "_blocks.4", probe)  # doctest: +SKIP
    >>> compare_dissections([pretrained, random])                     # doctest: +SKIP
    """
    d = Dissector(handle, layers, probe, **settings)  # checks the settings, hit or miss
    if not cache:
        return d.run()
    from ...cache import cache_key, cached

    key = cache_key(
        "dissection",
        model=handle.fingerprint(),
        layers=[layers] if isinstance(layers, str) else list(layers),
        probe=probe.describe(),
        quantile=d.quantile,
        bins=d.bins,
        refine=d.refine,
        top_k=d.top_k,
        batch_size=d.batch_size,
    )

    def load_checked(p: Path) -> Dissection:
        r = Dissection.load(p)
        for name in r.layers:  # a garbled entry can load: its arrays must agree
            ld = r[name]
            if ld.iou.shape[1:] != (len(r.labels),) or len(ld.thresholds) != ld.iou.shape[0]:
                raise ValueError(f"layer {name!r}: arrays of inconsistent shapes")
        return r.with_iou_threshold(d.iou_threshold)

    def save(p: Path, r: Dissection) -> None:
        if d.rank == 0:  # one writer when sharded over processes
            r.save(p)

    return cached("dissection", key, d.run, suffix="", load=load_checked, save=save)
