"""The Attribution widget's method options: occlusion's patch, stride and score, integrated
gradients' steps and baseline, SmoothGrad over the gradient methods.

:func:`method_settings` declares them (ranges, help and labels from the core fields'
:func:`~cnnvis_widgets.core.blocks.settings.knob`, :class:`~cnnvis_widgets.core.attribution.
MethodOptions`), in the widget's class body after the method so that their controls follow it;
each is shown only with the methods it applies to, and a change restarts the run (the maps of
other options stay cached). :class:`AttributionOptions` (a mixin) turns the traits into a
:class:`~cnnvis_widgets.core.attribution.MethodOptions` and shows what the shown map's run took
in ``method_notes`` (integrated gradients: the completeness check).
"""

from __future__ import annotations

from typing import Any

import traitlets as t

from ..core import attribution as A
from ..core.blocks.settings import knobs
from ._base import BoundedFloat, BoundedInt, setting

__all__ = ["OPTION_TRAITS", "AttributionOptions", "method_settings"]

#: trait -> the :class:`~cnnvis_widgets.core.attribution.MethodOptions` field it sets
OPTION_TRAITS = {
    "occlusion_patch": "patch",
    "occlusion_stride": "stride",
    "occlusion_score": "score",
    "ig_steps": "steps",
    "ig_baseline": "baseline",
    "smoothgrad": "smoothgrad",
    "smoothgrad_samples": "samples",
    "smoothgrad_noise": "noise",
}
_OCCLUSION = {"trait": "method", "in": ["occlusion"]}
_IG = {"trait": "method", "in": ["integrated_gradients"]}
_GRADIENTS = {"trait": "method", "in": list(A.METHODS)}
_SMOOTH = {"trait": "smoothgrad", "in": [True]}


def _knob(name: str, kind: str, visible: dict, **control: Any) -> t.TraitType:
    default, k = knobs(A.MethodOptions)[name]
    bounded = BoundedInt if isinstance(default, int) else BoundedFloat
    trait = bounded(default, k.low, k.high, help=k.help)
    return setting(trait, kind, k.label, "Method", restart=True, step=k.step,
                   visible_when=visible, **control)  # fmt: skip


def method_settings() -> tuple[t.TraitType, ...]:
    """The traits of :data:`OPTION_TRAITS`, in that order (group "Method")."""
    o = A.MethodOptions()
    return (
        _knob("patch", "int", _OCCLUSION),
        _knob("stride", "int", _OCCLUSION),
        setting(t.Enum(list(A.OCCLUSION_SCORES), o.score, help="Occlusion: what the map shows."),
                "select", "Occlusion score", "Method", restart=True, visible_when=_OCCLUSION,
                options=[[v, k] for k, v in A.OCCLUSION_SCORES.items()],
                help="'feature' follows the Grad-CAM layer's strongest feature map"),
        _knob("steps", "int", _IG),
        setting(t.Enum(list(A.IG_BASELINES), o.baseline, help="Integrated gradients' start."),
                "select", "IG baseline", "Method", restart=True, visible_when=_IG,
                options=[[v, k] for k, v in A.IG_BASELINES.items()]),
        setting(t.Bool(o.smoothgrad, help="SmoothGrad: average the gradient maps over noisy "
                       "copies of the photo."),
                "checkbox", "SmoothGrad", "Method", restart=True, visible_when=_GRADIENTS),
        _knob("samples", "int", _SMOOTH),
        _knob("noise", "slider", _SMOOTH),
    )  # fmt: skip


class AttributionOptions(t.HasTraits):
    """The options' traits as :class:`~cnnvis_widgets.core.attribution.MethodOptions`, and the
    shown map's notes (a mixin of the Attribution widget)."""

    method_notes = t.Unicode(
        "", help="What the shown map's run took; integrated gradients: the completeness check."
    ).tag(sync=True)

    def _method_options(self) -> A.MethodOptions:
        """The options as the traits stand."""
        return A.MethodOptions().update(**{f: getattr(self, k) for k, f in OPTION_TRAITS.items()})
