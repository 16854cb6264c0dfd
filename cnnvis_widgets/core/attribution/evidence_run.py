"""The evidence beside a map in the Attribution widget: a live sanity check and faithfulness curves.

:func:`sanity_steps` runs :func:`~.sanity.cascading_randomization` of one photo and class for a
few gradient methods (the top ``n`` blocks, from the logits down, by default) and keeps what a
view shows in a :class:`SanityStrip` as the stages complete: a strip of maps per method and
stage (:meth:`SanityStrip.picture`), the rank correlation of the absolute maps against depth per
method (:meth:`SanityStrip.series`) and a verdict in words per method updated at every stage
(:meth:`SanityStrip.badge`: provisional until the stage it is judged at, then the same as
:meth:`~.sanity.SanityResult.verdict`).

:func:`curves_steps` computes the deletion and insertion curves of several maps and of the
random and centre-first orders (:func:`~.faithfulness.faithfulness_steps`), each once (complete
curves are kept by the caller), into a :class:`CurveBoard` batch by batch: one chart value of
several series per kind (:meth:`CurveBoard.chart`, the baselines dashed) and the AUC table
(:meth:`CurveBoard.rows`). :func:`curve_series` and :func:`auc_rows` turn one
:class:`~.faithfulness.Curves` into a chart's points and table rows.

Examples
--------
>>> strip = SanityStrip(["saliency", "guided_backprop"])
>>> strip = finish(sanity_steps(handle, x, 281, strip, top_blocks(handle, 6)))  # doctest: +SKIP
>>> strip.series("saliency")                                        # doctest: +SKIP
[[0, 1.0], [1, 0.12], ...]
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ... import imaging as I
from ...models import ModelHandle
from ..blocks.optimize import Step
from ..blocks.runs import Run
from .faithfulness import BASELINE_ORDERS, KINDS, Curves, auc, faithfulness_steps
from .gradients import METHODS, canonical_method
from .pictures import map_picture
from .sanity import SanityResult, cascading_randomization, weight_blocks
from .scoring import batch_size_for

__all__ = [
    "SANITY_METHODS",
    "SanityStrip",
    "top_blocks",
    "sanity_steps",
    "CurveBoard",
    "curves_steps",
    "curve_series",
    "auc_rows",
]

#: the methods the widget's sanity check randomizes (the paper's pair: one falls apart, one not)
SANITY_METHODS = ("saliency", "guided_backprop")
MEASURE = "spearman_abs"  # the measure charted and judged (Adebayo et al.'s main one)
THRESHOLD = 0.5  # at or above: the map "still looks the same" (SanityResult.verdict's default)


def top_blocks(handle: ModelHandle, n: int) -> list[str]:
    """The ``n`` blocks with weights nearest the logits, top first (all when there are fewer).

    Examples
    --------
    >>> top_blocks(handle, 2)                                        # doctest: +SKIP
    ['_fc', '_conv_head']
    """
    return list(reversed(weight_blocks(handle.model)))[: max(1, int(n))]


@dataclass
class SanityStrip:
    """What a view of the sanity check shows, filled stage by stage by :func:`sanity_steps`.

    Attributes
    ----------
    methods : list of str
        The methods randomized (keys of :data:`~.gradients.METHODS`).
    stages : list of str
        ``"trained"``, then the block randomized at each completed stage.
    maps : dict
        Method -> the map ``(C, H, W)`` of the first image at each completed stage (CPU).
    scores : dict
        Method -> :data:`MEASURE` against the trained model's map at each completed stage.
    result : SanityResult or None
        The complete run's result (None while it runs or after a stop).
    planned : int
        Blocks the run randomizes (set by :func:`sanity_steps`; 0: unknown, judged at the last
        stage seen).
    """

    methods: list[str]
    stages: list[str] = field(default_factory=list)
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    result: SanityResult | None = None
    planned: int = 0

    def add(self, metrics: dict[str, Any]) -> None:
        """Keep one stage of :func:`~.sanity.cascading_randomization` (its Step's metrics)."""
        self.stages.append(str(metrics["stage"]))
        for m in self.methods:
            self.maps.setdefault(m, []).append(metrics["maps"][m][0].float())
            self.scores.setdefault(m, []).append(float(metrics["scores"][m][MEASURE]))

    def series(self, method: str) -> list[list[float]]:
        """``[[stage index, spearman_abs], ...]``: stage 0 is the trained model, stage ``i`` has
        the top ``i`` blocks random."""
        return [[i, round(v, 4)] for i, v in enumerate(self.scores.get(method, []))]

    def picture(self, tile: int = 96) -> torch.Tensor | None:
        """One row per method, one map per stage with the stage's name and its rank correlation
        (:data:`MEASURE`) under it: pixels ``(3, h, w)``; None before the first stage."""
        if not self.stages:
            return None
        rows = []
        for m in self.methods:
            tiles = [map_picture(m, a) for a in self.maps[m]]
            captions = [
                f"{s}\nrho {v:.2f}" for s, v in zip(self.stages, self.scores[m], strict=True)
            ]
            title = f"{METHODS[m][0]}: rho = rank corr. of |map| with trained"
            rows.append(I.labelled_row(tiles, captions, tile, title=title))
        return I.pil_to_tensor(I.stack_rows(rows))[0]

    def judged_stage(self) -> int:
        """The stage the verdict is judged at: the top quarter of the planned blocks randomized
        (at least one), as :meth:`~.sanity.SanityResult.verdict`."""
        return max(1, (self.planned or max(1, len(self.stages) - 1)) // 4)

    def badge(self, method: str) -> str:
        """``method``'s verdict in words as the run stands: provisional until the judged stage
        (:meth:`judged_stage`) is done, then fixed (the same as the complete run's
        :meth:`~.sanity.SanityResult.verdict`), with the latest correlation after it."""
        label = METHODS[method][0]
        scores = self.scores.get(method, [])
        done = len(scores) - 1  # blocks randomized so far
        if done < 1:
            return f"{label}: the trained model's map; randomizing the top blocks..."
        at = self.judged_stage()
        k = min(at, done)
        value = scores[k]
        blocks = f"{k} block{'s' if k != 1 else ''} (down to {self.stages[k]})"
        if value < THRESHOLD:
            text = (f"{label}: map changes with the weights (passes): rank corr. {value:.2f} "
                    f"after randomizing {blocks}")  # fmt: skip
        else:
            text = (f"{label}: still looks the same after randomizing {blocks}, rank corr. "
                    f"{value:.2f}: not about the model (fails)")  # fmt: skip
        if done < at:
            return text + f"; so far, judged after {at} blocks"
        if done > k:
            text += f"; {scores[done]:.2f} after {done} blocks"
        return text

    def verdicts(self) -> str:
        """A line per method: its :meth:`badge`, updated at every stage."""
        return "\n".join(self.badge(m) for m in self.methods)


def sanity_steps(
    handle: ModelHandle,
    x: torch.Tensor,
    target: int,
    strip: SanityStrip,
    blocks: Sequence[str],
    *,
    layer: str | None = None,
) -> Generator[Step, None, SanityStrip]:
    """Cascading randomization of ``blocks`` (top first) for ``strip``'s methods, kept in
    ``strip`` as the stages complete.

    Parameters
    ----------
    handle : ModelHandle
        The trained network (never changed: a copy is randomized).
    x : torch.Tensor
        The photo, a model-input batch of one.
    target : int
        The class explained.
    strip : SanityStrip
        Where the stages go (``strip.methods``: which methods).
    blocks : sequence of str
        The blocks randomized, top first (:func:`top_blocks`).
    layer : str, optional
        Grad-CAM's layer, for a Grad-CAM method.

    Yields
    ------
    Step
        One per stage (``metrics``: ``stage``, ``evidence="sanity"``); no picture.

    Returns
    -------
    SanityStrip
        ``strip``, with :attr:`SanityStrip.result` set.
    """
    strip.methods = [canonical_method(m) for m in strip.methods]
    strip.planned = len(blocks)
    run = Run(cascading_randomization(handle, x, target, strip.methods, layer=layer,
                                      blocks=list(blocks)))  # fmt: skip
    for step in run:
        strip.add(step.metrics)
        yield Step(step.index, None, None, {"stage": step.metrics["stage"],
                                            "evidence": "sanity"}, step.total)  # fmt: skip
    strip.result = run.result
    return strip


@dataclass
class CurveBoard:
    """The deletion and insertion curves a view shows, filled batch by batch by
    :func:`curves_steps`: every map's curve and the baseline orders', as chart values.

    Attributes
    ----------
    names : list of str
        The maps' methods, in the order of the legend (the baselines follow).
    steps : int
        Points along each curve minus one.
    pixels : int
        Pixels of the image (``H * W``): the fractions changed at each point.
    values : dict
        Kind -> order -> the probabilities so far (NaN where a point is not computed yet).
    complete : dict
        Order -> its complete :class:`~.faithfulness.Curves` (for the AUC table).
    """

    names: list[str]
    steps: int
    pixels: int
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    complete: dict[str, Curves] = field(default_factory=dict)

    def fractions(self) -> list[float]:
        """The share of pixels changed at each point (as in :func:`~.faithfulness_steps`)."""
        counts = torch.linspace(0, self.pixels, self.steps + 1).round()
        return [round(float(c) / self.pixels, 4) for c in counts]

    def add(self, metrics: dict[str, Any]) -> None:
        """Keep one batch of :func:`~.faithfulness.faithfulness_steps` (its Step's metrics)."""
        row = self._row(metrics["kind"], metrics["order"])
        start = int(metrics["start"])
        for i, v in enumerate(metrics["values"].tolist()):
            row[start + i] = float(v)

    def put(self, curves: Curves) -> None:
        """Keep complete curves (every kind and order of ``curves``)."""
        for kind, per in curves.curves.items():
            for name, v in per.items():
                self._row(kind, name)[:] = [float(p) for p in v]
                self.complete[name] = curves

    def _row(self, kind: str, name: str) -> list[float]:
        per = self.values.setdefault(kind, {})
        return per.setdefault(name, [float("nan")] * (self.steps + 1))

    def orders(self) -> list[str]:
        """The maps' names, then the baselines (those seen so far)."""
        seen = {n for per in self.values.values() for n in per}
        return [n for n in [*self.names, *BASELINE_ORDERS] if n in seen]

    def chart(self, kind: str) -> dict[str, Any]:
        """The chart value of ``kind``: ``{"series": [...], "y_range": [0, 1]}``, a series per
        map, then the random and centre-first orders dashed; points not computed are left out."""
        fr = self.fractions()
        series = []
        for name in self.orders():
            vals = self.values.get(kind, {}).get(name)
            if vals is None:
                continue
            pts = [[f, round(v, 4)] for f, v in zip(fr, vals, strict=True) if v == v]
            series.append({"name": name, "points": pts, "dashed": name in BASELINE_ORDERS})
        return {"series": series, "y_range": [0, 1]}

    def rows(self) -> list[dict[str, Any]]:
        """The AUC table of the complete curves: a row per map, then the baselines."""
        out = []
        for name in self.orders():
            c = self.complete.get(name)
            if c is not None:
                row: dict[str, Any] = {"order": name}
                row.update({k: round(auc(c.curves[k][name]), 4) for k in KINDS if
                            name in c.curves.get(k, {})})  # fmt: skip
                out.append(row)
        return out


def curves_steps(
    handle: ModelHandle,
    x: torch.Tensor,
    target: int,
    maps: Mapping[str, torch.Tensor],
    board: CurveBoard,
    kept: MutableMapping[tuple, Curves],
    keys: Mapping[str, tuple],
) -> Generator[Step, None, CurveBoard]:
    """Deletion and insertion curves of every map of ``maps`` and of the baseline orders (random,
    centre-first) into ``board``, each computed once: complete curves are taken from ``kept``
    and put there under ``keys[name]`` (``keys["baselines"]`` for the baselines).

    The first map comes first, then the baselines, then the other maps; ``board`` is filled as
    each batch of modified copies finishes.

    Yields
    ------
    Step
        One per batch (``metrics``: ``kind``, ``order``, ``evidence="faithfulness"``); ``total``
        counts the batches still to compute.

    Returns
    -------
    CurveBoard
        ``board``, complete.
    """
    _, _, h, w = x.shape
    names = list(maps)
    todo = [*names[:1], "baselines", *names[1:]]
    missing = [n for n in todo if keys[n] not in kept]
    per_order = 2 * ((board.steps + batch_size_for(None, h, w)) // batch_size_for(None, h, w))
    total = sum(per_order * (len(BASELINE_ORDERS) if n == "baselines" else 1) for n in missing)
    done = 0
    for name in todo:
        curves = kept.get(keys[name])
        if curves is None:
            own = {} if name == "baselines" else {name: maps[name]}
            orders = BASELINE_ORDERS if name == "baselines" else ()
            run = Run(faithfulness_steps(handle, x, target, own, steps=board.steps,
                                         baselines=orders))  # fmt: skip
            for step in run:
                board.add(step.metrics)
                metrics = {"kind": step.metrics["kind"], "order": step.metrics["order"],
                           "evidence": "faithfulness"}  # fmt: skip
                yield Step(done, None, None, metrics, max(total, done + 1))
                done += 1
            assert run.result is not None
            curves = kept[keys[name]] = run.result
        board.put(curves)
    return board


def curve_series(curves: Curves, kind: str, name: str) -> list[list[float]]:
    """``[[fraction of pixels changed, probability], ...]`` of one curve (a chart's series)."""
    values = curves.curves[kind][name]
    return [
        [round(float(f), 4), round(float(v), 4)]
        for f, v in zip(curves.fractions, values, strict=True)
    ]


def auc_rows(curves: Curves) -> list[dict[str, Any]]:
    """The AUC table: a row per order (the map's method, then ``random`` and ``centre``) with
    ``deletion`` (lower is better) and ``insertion`` (higher is better), rounded to 4 digits."""
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        for row in curves.table()
    ]
