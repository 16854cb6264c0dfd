"""The evidence beside the Attribution widget's map: a live sanity check and faithfulness curves.

:class:`AttributionEvidence` is a mixin of :class:`~cnnvis_widgets.widgets.attribution.Attribution`:
its settings (:func:`evidence_settings`, declared in the widget's class body so that their
controls come after the others), the result traits the panels show and the part of the run
that computes them (:mod:`cnnvis_widgets.core.attribution.evidence_run`):

* ``sanity_check``: cascading randomization (Adebayo et al. 2018) of the top ``sanity_blocks``
  blocks for saliency and guided backprop, streamed stage by stage: a strip of maps per method
  (``sanity_strip``), ``spearman_abs`` against depth per method (``sanity_saliency``,
  ``sanity_guided_backprop``, chart panels) and a verdict per method (``sanity_verdicts``).
* ``faithfulness``: deletion and insertion curves (Petsiuk et al. 2018) of the maps of
  ``curve_methods`` (the shown one first) and of the random and centre-first orders (dashed), in
  one chart per kind (``deletion_curve``, ``insertion_curve``: several series) that grows as the
  batches finish, and the AUC table of them all (``faithfulness_rows``).

Complete results are kept (a few, by photo, class, map and settings), so switching the method
or re-running does not repeat them: the curves of each map and of the baselines are kept apart.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
import traitlets as t

from .. import imaging as I
from ..core.attribution import ALL_METHODS, METHODS
from ..core.attribution import evidence_run as E
from ..core.attribution.photo_maps import PhotoMaps
from ..core.blocks.optimize import Step
from ..models import ModelHandle
from ._base import BoundedInt, setting

__all__ = ["AttributionEvidence", "evidence_settings"]

KEEP = 48  # complete sanity checks and curves (one map's, or the baselines') kept per widget
#: curve_methods: which maps get curves (the shown one always, first)
CURVE_CHOICES = {
    "gradients": "the gradient maps",
    "shown": "the shown map only",
    "computed": "every map computed",
}
_SANITY_ON = {"trait": "sanity_check", "in": [True]}
_CURVES_ON = {"trait": "faithfulness", "in": [True]}


def evidence_settings() -> tuple[t.TraitType, ...]:
    """``sanity_check``, ``sanity_blocks``, ``faithfulness``, ``curve_steps``,
    ``curve_methods``: the settings, in the order of their controls (group "Evidence")."""
    return (
        setting(t.Bool(False, help="Cascading randomization of saliency and guided backprop."),
                "checkbox", "Sanity check", "Evidence", restart=True,
                help="re-initialize the top blocks of a copy of the network, one by one"),
        setting(BoundedInt(6, 1, 256, help="Blocks randomized, from the logits down."),
                "int", "Blocks randomized", "Evidence", restart=True, visible_when=_SANITY_ON),
        setting(t.Bool(False, help="Deletion and insertion curves of the shown map."),
                "checkbox", "Deletion/insertion", "Evidence", restart=True,
                help="remove or reveal pixels in the map's order"),
        setting(BoundedInt(50, 1, 1000, help="Points along each deletion/insertion curve."),
                "int", "Curve steps", "Evidence", restart=True, visible_when=_CURVES_ON),
        setting(t.Enum(list(CURVE_CHOICES), "gradients", help="Maps with curves: the shown one "
                       "and " + "; ".join(f"{k}: {v}" for k, v in CURVE_CHOICES.items()) + "."),
                "select", "Curves of", "Evidence", restart=True, visible_when=_CURVES_ON,
                options=[[v, k] for k, v in CURVE_CHOICES.items()]),
    )  # fmt: skip


def _shown(trait: t.TraitType, help: str) -> Any:
    trait.help = trait.metadata["help"] = help
    return trait.tag(sync=True)


class AttributionEvidence(t.HasTraits):
    """The evidence traits, panels and run phase of the Attribution widget (a mixin)."""

    sanity_strip = _shown(t.Bytes(b""), "PNG: the maps at each randomization stage (read-only).")
    sanity_saliency = _shown(t.List(), "[stage, spearman_abs] of saliency (read-only).")
    sanity_guided_backprop = _shown(t.List(), "[stage, spearman_abs] of guided backprop.")
    sanity_verdicts = _shown(t.Unicode(""), "The sanity check's verdict per method (read-only).")
    deletion_curve = _shown(t.Dict(), "{series: [...]}: probability vs fraction deleted.")
    insertion_curve = _shown(t.Dict(), "{series: [...]}: probability vs fraction revealed.")
    faithfulness_rows = _shown(t.List(), "AUC per order: the maps, random, centre (read-only).")

    handle: ModelHandle
    _evidence: OrderedDict[tuple, Any]
    _evidence_record: dict[str, Any]

    def _evidence_ready(self, panels: list[dict]) -> None:
        """Show ``panels`` and the evidence panels that are on; follow the toggles."""
        self._evidence = OrderedDict()
        self._evidence_record = {}
        self._plain_panels = panels
        self._show_evidence_panels({})
        self.observe(self._show_evidence_panels, names=["sanity_check", "faithfulness"])
        self.observe(self._evidence_method, names=["method"])

    def _show_evidence_panels(self, change: dict) -> None:
        extra: list[dict] = []
        if self.sanity_check:  # type: ignore[attr-defined]
            extra += [
                {"kind": "image", "trait": "sanity_strip", "label": "Sanity check: maps as the "
                 "top blocks are randomized", "width": 640},
                *({"kind": "chart", "trait": f"sanity_{m}",
                   "label": f"{m}: spearman_abs vs blocks randomized"} for m in E.SANITY_METHODS),
                {"kind": "text", "trait": "sanity_verdicts", "label": "Sanity check verdict"},
            ]  # fmt: skip
        if self.faithfulness:  # type: ignore[attr-defined]
            extra += [
                {"kind": "chart", "trait": "deletion_curve", "y_range": [0, 1],
                 "label": "Deletion: probability vs pixels removed (dashed: baselines)"},
                {"kind": "chart", "trait": "insertion_curve", "y_range": [0, 1],
                 "label": "Insertion: probability vs pixels revealed (dashed: baselines)"},
                {"kind": "table", "trait": "faithfulness_rows", "label": "Area under the curves",
                 "columns": [{"key": "order", "label": "Order"},
                             {"key": "deletion", "label": "Deletion AUC (low: faithful)",
                              "numeric": True, "digits": 3},
                             {"key": "insertion", "label": "Insertion AUC (high: faithful)",
                              "numeric": True, "digits": 3}]},
            ]  # fmt: skip
        self.panels = [*self._plain_panels[:-1], *extra, self._plain_panels[-1]]  # progress last

    def _evidence_method(self, change: dict) -> None:
        """Another method: its curves first (the sanity check's methods are fixed)."""
        if self.faithfulness and getattr(self, "_shown", None) is not None:  # type: ignore[attr-defined]
            self.run()  # type: ignore[attr-defined]  # the maps and the kept curves are reused

    def _keep(self, key: tuple, value: Any) -> None:
        self._evidence[key] = value
        while len(self._evidence) > KEEP:
            self._evidence.popitem(last=False)

    def _evidence_steps(
        self, x: torch.Tensor, shown: PhotoMaps, method: str, picture: Any, first: int
    ) -> Iterator[Step]:
        """The evidence phase of a run, after the maps: the steps (numbered on from ``first``,
        carrying ``picture``) of the sanity check and the curves that are on."""
        h = self.handle
        self._evidence_record = {}
        with self.hold_sync():
            if not self.sanity_check:  # type: ignore[attr-defined]
                self.sanity_strip, self.sanity_verdicts = b"", ""
                self.sanity_saliency, self.sanity_guided_backprop = [], []
            if not self.faithfulness:  # type: ignore[attr-defined]
                self.deletion_curve, self.insertion_curve, self.faithfulness_rows = {}, {}, []

        def numbered(step: Step) -> Step:
            return dataclasses.replace(
                step, index=first + step.index, total=first + step.total, image=picture
            )

        if self.sanity_check:  # type: ignore[attr-defined]
            blocks = E.top_blocks(h, self.sanity_blocks)  # type: ignore[attr-defined]
            layer = shown.layer or None
            key = ("sanity", shown.key, shown.target, tuple(blocks), layer)
            strip = self._evidence.get(key)
            if strip is None:
                strip = E.SanityStrip(list(E.SANITY_METHODS))
                for step in E.sanity_steps(h, x, shown.target, strip, blocks, layer=layer):
                    self._show_sanity(strip)
                    yield numbered(step)
                self._keep(key, strip)
                first += len(strip.stages)
            self._show_sanity(strip)
            self._evidence_record["sanity"] = {m: strip.scores[m] for m in strip.methods}
        if self.faithfulness and shown.map(method) is not None:  # type: ignore[attr-defined]
            yield from map(numbered, self._curve_steps(x, shown, method))

    def _curve_maps(self, shown: PhotoMaps, method: str) -> dict[str, torch.Tensor]:
        """The maps of ``curve_methods``, the shown one first (those computed)."""
        choice = self.curve_methods  # type: ignore[attr-defined]
        names = {"shown": [], "gradients": list(METHODS), "computed": list(ALL_METHODS)}[choice]
        maps = {}
        for m in [method, *names]:
            attr = shown.map(m)
            if attr is not None:
                maps[m] = attr
        return maps

    def _curve_steps(self, x: torch.Tensor, shown: PhotoMaps, method: str) -> Iterator[Step]:
        n = int(self.curve_steps)  # type: ignore[attr-defined]
        maps = self._curve_maps(shown, method)
        keys = {m: ("curves", *shown.map_key(m), n) for m in maps}
        keys["baselines"] = ("baselines", shown.key, shown.target, n)
        board = E.CurveBoard(list(maps), n, x.shape[-2] * x.shape[-1])
        kept: dict[tuple, Any] = {
            k: self._evidence[k] for k in keys.values() if k in self._evidence
        }
        self._show_curves(board)
        for step in E.curves_steps(self.handle, x, shown.target, maps, board, kept, keys):
            self._show_curves(board)
            for k in keys.values():  # what is complete is kept, even if the run stops now
                if k in kept and k not in self._evidence:
                    self._keep(k, kept[k])
            yield step
        for k in keys.values():
            self._keep(k, kept[k])
        self._show_curves(board)
        self._evidence_record["faithfulness"] = self.faithfulness_rows

    def _show_curves(self, board: E.CurveBoard) -> None:
        with self.hold_sync():
            self.deletion_curve = board.chart("deletion")
            self.insertion_curve = board.chart("insertion")
            self.faithfulness_rows = board.rows()

    def _show_sanity(self, strip: E.SanityStrip) -> None:
        pixels = strip.picture()
        with self.hold_sync():
            self.sanity_strip = b"" if pixels is None else I.encode(pixels, "png")
            self.sanity_saliency = strip.series("saliency")
            self.sanity_guided_backprop = strip.series("guided_backprop")
            self.sanity_verdicts = strip.verdicts()
