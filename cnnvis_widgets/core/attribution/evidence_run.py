"""The evidence beside a map in the Attribution widget: a live sanity check and faithfulness curves.

:func:`sanity_steps` runs :func:`~.sanity.cascading_randomization` of one photo and class for a
few gradient methods (the top ``n`` blocks, from the logits down, by default) and keeps what a
view shows in a :class:`SanityStrip` as the stages complete: a strip of maps per method and
stage (:meth:`SanityStrip.picture`), the rank correlation of the absolute maps against depth per
method (:meth:`SanityStrip.series`) and a verdict in words per method once the run is complete
(:meth:`SanityStrip.verdicts`, from :meth:`~.sanity.SanityResult.verdict`).

:func:`curve_steps` computes the deletion and insertion curves of one map beside the random and
centre-first orders (:func:`~.faithfulness.faithfulness_steps`); :func:`curve_series` and
:func:`auc_rows` turn them into chart series and table rows.

Examples
--------
>>> strip = SanityStrip(["saliency", "guided_backprop"])
>>> strip = finish(sanity_steps(handle, x, 281, strip, top_blocks(handle, 6)))  # doctest: +SKIP
>>> strip.series("saliency")                                        # doctest: +SKIP
[[0, 1.0], [1, 0.12], ...]
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ... import imaging as I
from ...models import ModelHandle
from ..blocks.optimize import Step
from ..blocks.runs import Run
from .faithfulness import Curves, faithfulness_steps
from .gradients import METHODS, canonical_method
from .pictures import map_picture
from .sanity import SanityResult, cascading_randomization, weight_blocks

__all__ = [
    "SANITY_METHODS",
    "SanityStrip",
    "top_blocks",
    "sanity_steps",
    "curve_steps",
    "curve_series",
    "auc_rows",
]

#: the methods the widget's sanity check randomizes (the paper's pair: one falls apart, one not)
SANITY_METHODS = ("saliency", "guided_backprop")
MEASURE = "spearman_abs"  # the measure charted and judged (Adebayo et al.'s main one)


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
    """

    methods: list[str]
    stages: list[str] = field(default_factory=list)
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    result: SanityResult | None = None

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

    def verdicts(self) -> str:
        """A line per method: its verdict (:meth:`~.sanity.SanityResult.verdict`) once the run
        is complete, how far it got until then."""
        lines = []
        for m in self.methods:
            label = METHODS[m][0]
            if self.result is not None:
                lines.append(f"{label}: {self.result.verdict(m, MEASURE)}")
            else:
                lines.append(f"{label}: running, {max(0, len(self.stages) - 1)} blocks randomized")
        return "\n".join(lines)


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
    run = Run(cascading_randomization(handle, x, target, strip.methods, layer=layer,
                                      blocks=list(blocks)))  # fmt: skip
    for step in run:
        strip.add(step.metrics)
        yield Step(step.index, None, None, {"stage": step.metrics["stage"],
                                            "evidence": "sanity"}, step.total)  # fmt: skip
    strip.result = run.result
    return strip


def curve_steps(
    handle: ModelHandle, x: torch.Tensor, target: int, method: str, attr: torch.Tensor,
    steps: int = 50,
) -> Generator[Step, None, Curves]:  # fmt: skip
    """Deletion and insertion curves of ``method``'s map ``attr`` of the photo ``x``, beside the
    random and centre-first orders (:func:`~.faithfulness.faithfulness_steps`).

    Yields a Step per batch of modified copies (``metrics``: ``kind``, ``order``,
    ``evidence="faithfulness"``); returns the :class:`~.faithfulness.Curves`.
    """
    run = Run(faithfulness_steps(handle, x, target, {method: attr}, steps=steps))
    for step in run:
        metrics = {"kind": step.metrics["kind"], "order": step.metrics["order"]}
        yield Step(step.index, None, None, {**metrics, "evidence": "faithfulness"}, step.total)
    assert run.result is not None
    return run.result


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
