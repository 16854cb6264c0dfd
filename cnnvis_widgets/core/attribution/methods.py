"""Every attribution method by name, with its options: :func:`attribute` and :func:`explain`.

The gradient methods (:data:`~.gradients.METHODS`: saliency, DeconvNet, guided backprop,
Grad-CAM, guided Grad-CAM) take a ``smoothgrad=`` option (Smilkov et al. 2017: the map averaged
over noisy copies, sent through the network as batches); ``"occlusion"`` (Zeiler & Fergus 2014)
takes ``patch``, ``stride`` and ``score`` (the logit's drop, the probability's drop, the
probability while occluded, or the paper's Fig. 7 variant ``"feature"``: the total activation of
``layer``'s strongest feature map); ``"integrated_gradients"`` (Sundararajan et al. 2017) takes
``steps`` and ``baseline`` (``"black"`` or ``"blur"``) and reports its completeness check.

:class:`MethodOptions` holds the options (with their ranges, :func:`~..blocks.settings.knob`, for
a widget's controls); an option given to a method it does not apply to is an error, never
silently ignored. :func:`explain` returns an :class:`Explanation` (the map, the options that
applied, the passes it took, IG's completeness); :func:`attribute` only the map.

Examples
--------
>>> attribute(handle, x, 281, "occlusion", patch=16, score="probability")  # doctest: +SKIP
>>> e = explain(handle, x, 281, "integrated_gradients", baseline="blur")  # doctest: +SKIP
>>> print(e.summary())                                                    # doctest: +SKIP
>>> attribute(handle, x, 281, "saliency", smoothgrad=dict(samples=8))     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ... import limits
from ...models.handle import ModelHandle
from ..blocks.settings import Settings, knob, knobs
from . import gradients as G
from .integrated_gradients import IGResult, integrated_gradients, smoothgrad
from .occlusion import OcclusionMaps, feature_occlusion, occlusion

__all__ = [
    "ALL_METHODS",
    "PERTURBATION_METHODS",
    "OCCLUSION_SCORES",
    "IG_BASELINES",
    "MethodOptions",
    "Explanation",
    "explain",
    "attribute",
]

#: the methods beyond the gradient ones: name -> label
PERTURBATION_METHODS: dict[str, str] = {
    "occlusion": "Occlusion (Zeiler & Fergus 2014)",
    "integrated_gradients": "Integrated gradients (Sundararajan et al. 2017)",
}
#: every method :func:`attribute` reaches: name -> label (the gradient methods first)
ALL_METHODS: dict[str, str] = {
    **{k: v[0] for k, v in G.METHODS.items()},
    **PERTURBATION_METHODS,
}
#: occlusion's scores: what the map at a pixel is while a patch covers it
OCCLUSION_SCORES: dict[str, str] = {
    "logit": "drop of the class logit (or unit)",
    "probability": "drop of the class probability",
    "occluded_probability": "class probability while hidden (Fig. 7 d)",
    "feature": "drop of the strongest feature map's total activation (Fig. 7 b)",
}
IG_BASELINES: dict[str, str] = {"black": "a black image", "blur": "a blurred copy"}

# which method an option belongs to (the error names it)
_FOR_OCCLUSION = ("patch", "stride", "score")
_FOR_IG = ("steps", "baseline")
_FOR_SMOOTHGRAD = ("smoothgrad", "samples", "noise", "seed")


@dataclass
class MethodOptions(Settings):
    """The options of the methods that have any (defaults: the papers').

    Attributes
    ----------
    patch, stride : int
        Occlusion: side of the grey square and its step, in input pixels.
    score : str
        Occlusion: a key of :data:`OCCLUSION_SCORES`.
    steps : int
        Integrated gradients: points of the midpoint Riemann sum.
    baseline : str
        Integrated gradients: the path's start, a key of :data:`IG_BASELINES`.
    smoothgrad : bool
        The gradient methods: average the map over ``samples`` noisy copies.
    samples : int
        SmoothGrad: noisy copies per image.
    noise : float
        SmoothGrad: the noise's standard deviation as a fraction of the image's value range.
    seed : int
        SmoothGrad: the noise's seed (the global random state is untouched).
    """

    patch: int = knob(32, 1, 512, "Side of the grey occluding square (pixels).", "Patch (px)", 1)
    stride: int = knob(8, 1, 512, "Step of the occluding square (pixels).", "Stride (px)", 1)
    score: str = "logit"
    steps: int = knob(
        32,
        1,
        1024,
        "Points between the baseline and the image (integrated gradients).",
        "IG steps",
        1,
    )
    baseline: str = "black"
    smoothgrad: bool = False
    samples: int = knob(16, 1, 256, "Noisy copies averaged by SmoothGrad.", "Samples", 1)
    noise: float = knob(
        0.15, 0.0, 1.0, "SmoothGrad noise: its std as a fraction of the image's range.",
        "Noise level", 0.01,
    )  # fmt: skip
    seed: int = 0

    def check(self, name: str, value: Any) -> Any:
        """Closed sets, bools and the knobs' ranges; a clear error naming the choices."""
        declared = knobs(type(self))
        if name in declared:
            _, k = declared[name]
            if isinstance(self.__dataclass_fields__[name].default, int):
                return limits.check_int(value, name, minimum=int(k.low), maximum=int(k.high))
            return limits.check_float(value, name, minimum=k.low, maximum=k.high)
        if name == "score" and value not in OCCLUSION_SCORES:
            raise ValueError(f"unknown occlusion score {value!r}: use one of "
                             f"{', '.join(OCCLUSION_SCORES)}")  # fmt: skip
        if name == "baseline" and value not in IG_BASELINES:
            raise ValueError(f"unknown baseline {value!r}: use one of {', '.join(IG_BASELINES)}")
        if name == "smoothgrad" and not isinstance(value, bool):
            raise TypeError(f"smoothgrad must be True or False, got {value!r}")
        if name == "seed":
            return limits.check_int(value, "seed", minimum=0)
        return value

    def key(self, method: str) -> tuple:
        """What ``method``'s map depends on among the options (a cache key's part)."""
        if method == "occlusion":
            return ("occlusion", self.patch, self.stride, self.score)
        if method == "integrated_gradients":
            return ("ig", self.steps, self.baseline)
        if self.smoothgrad:
            return ("smoothgrad", self.samples, float(self.noise), self.seed)
        return ()

    def describe(self, method: str) -> str:
        """The options of ``method`` in words ('' for a plain gradient method)."""
        if method == "occlusion":
            return (f"{self.patch} px grey patch, {self.stride} px stride, "
                    f"{OCCLUSION_SCORES[self.score]}")  # fmt: skip
        if method == "integrated_gradients":
            return f"{self.steps} steps from {IG_BASELINES[self.baseline]}"
        if self.smoothgrad:
            return f"SmoothGrad: {self.samples} noisy copies, noise {self.noise:.0%} of the range"
        return ""


@dataclass
class Explanation:
    """What :func:`explain` returns.

    Attributes
    ----------
    method : str
        The method (a key of :data:`ALL_METHODS`).
    attributions : torch.Tensor
        The maps ``(B, C, H, W)`` (``C`` = 1 for Grad-CAM and occlusion) at the input's size.
    options : MethodOptions
        The options (those of other methods at their defaults).
    passes : int
        Forward (occlusion) or forward+backward passes of single images it took.
    completeness : IGResult or None
        Integrated gradients: the sum of the attributions against ``f(x) - f(baseline)``.
    occlusion : OcclusionMaps or None
        Occlusion: every map of the run (logit, probability, occluded probability).
    units : list of int or None
        Occlusion with ``score="feature"``: the feature map followed in each image.
    layer : str
        The layer the map depends on (Grad-CAM's, the feature occlusion's), or ''.
    """

    method: str
    attributions: torch.Tensor
    options: MethodOptions
    passes: int
    completeness: IGResult | None = None
    occlusion: OcclusionMaps | None = None
    units: list[int] | None = None
    layer: str = ""
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The run in words: the method, its options and, for integrated gradients, the
        completeness check per image (the gap within 5% means enough steps)."""
        label = ALL_METHODS[self.method]
        how = self.options.describe(self.method)
        passes = f"{self.passes} pass" + ("es" if self.passes != 1 else "")
        lines = [f"{label}" + (f" ({how})" if how else "") + f": {passes}"]
        if self.units is not None:
            lines.append(f"feature map followed in {self.layer}: {', '.join(map(str, self.units))}")
        if self.completeness is not None:
            c = self.completeness
            for i, gap in enumerate(c.relative_gap().tolist()):
                verdict = "within 5%: enough steps" if gap <= 0.05 else "over 5%: use more steps"
                lines.append(
                    f"completeness{f' (image {i})' if len(c.total) > 1 else ''}: the attributions "
                    f"sum to {float(c.total[i]):.4g}, f(image) - f(baseline) = "
                    f"{float(c.delta[i]):.4g}; gap {gap:.1%} ({verdict})"
                )
        return "\n".join(lines + self.notes)


def _options(method: str, options: MethodOptions | None, given: dict[str, Any]) -> MethodOptions:
    """``options`` (or the defaults) updated with ``given``, refusing options of other methods."""
    names = {f.name for f in dataclasses.fields(MethodOptions)}
    for k in given:
        if k not in names:
            raise TypeError(
                f"unknown option {k!r} of attribute(); valid: {', '.join(sorted(names))}"
            )
        home = ("occlusion" if k in _FOR_OCCLUSION else
                "integrated_gradients" if k in _FOR_IG else None)  # fmt: skip
        if home is not None and home != method:
            raise ValueError(f"{k}= is an option of {home!r}, not of {method!r}")
        if k in _FOR_SMOOTHGRAD and method not in G.METHODS and given[k] is not False:
            raise ValueError(
                f"{k}= is a SmoothGrad option: SmoothGrad averages a gradient method's map "
                f"({', '.join(G.METHODS)}), not {method!r}'s"
            )
    opts = dataclasses.replace(options) if options is not None else MethodOptions()
    sg = given.pop("smoothgrad", None)
    if isinstance(sg, Mapping):
        inner = {k: v for k, v in sg.items()}
        for k in inner:
            if k not in ("samples", "noise", "seed"):
                raise TypeError(f"unknown SmoothGrad option {k!r}; valid: samples, noise, seed")
        given = {**given, **inner}
        sg = True
    if sg is not None:
        opts.update(smoothgrad=sg)
    if not opts.smoothgrad and any(k in given for k in ("samples", "noise", "seed")):
        raise ValueError("samples=, noise= and seed= are SmoothGrad's: pass smoothgrad=True too")
    return opts.update(**given)


def explain(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    method: str = "saliency",
    layer: str | None = None,
    *,
    options: MethodOptions | None = None,
    batch_size: int | None = None,
    **given: Any,
) -> Explanation:
    """Any method's maps, with what it took and, for integrated gradients, the completeness.

    Parameters
    ----------
    handle, images, target
        As for :func:`~.gradients.saliency`: the network, a model-input batch ``(B, C, H, W)``,
        a class index (for all or per image) or a hidden-unit objective.
    method : str
        A key of :data:`ALL_METHODS` (earlier spellings: :func:`~.gradients.canonical_method`).
    layer : str, optional
        Grad-CAM's layer; for occlusion with ``score="feature"``, the layer whose strongest
        feature map is followed (default for both: the last spatial layer).
    options : MethodOptions, optional
        The options as one object (a widget's); ``given`` options are set on a copy of it.
    batch_size : int, optional
        Copies per pass for occlusion, integrated gradients and SmoothGrad (results do not
        depend on it).
    **given
        :class:`MethodOptions` fields by name (``patch=``, ``steps=``, ``smoothgrad=True``,
        ``samples=``...); ``smoothgrad`` also takes a mapping ``{"samples": 8, "noise": 0.1}``.
        An option of another method raises ``ValueError``; an unknown one ``TypeError``.
    """
    name = method if method in PERTURBATION_METHODS else G.canonical_method(method)
    opts = _options(name, options, dict(given))
    x = G._as_input(handle, images)
    if name == "integrated_gradients":
        r = integrated_gradients(handle, x, target, steps=opts.steps, baseline_kind=opts.baseline,
                                 batch_size=batch_size)  # fmt: skip
        return Explanation(name, r.attributions, opts, r.passes, completeness=r)
    if name == "occlusion":
        kw = dict(patch=opts.patch, stride=opts.stride, batch_size=batch_size)
        if opts.score == "feature":
            cam = G.check_cam_layer(handle, layer)
            m, units = feature_occlusion(handle, x, cam, **kw)  # type: ignore[arg-type]
            return Explanation(name, m.score, opts, m.passes, occlusion=m, units=units, layer=cam)
        m = occlusion(handle, x, target, **kw)  # type: ignore[arg-type]
        maps = {"logit": m.score, "probability": m.probability,
                "occluded_probability": m.occluded_probability}[opts.score]  # fmt: skip
        if maps is None:
            raise ValueError(f"score={opts.score!r} needs a class target, not a hidden unit")
        return Explanation(name, maps, opts, m.passes, occlusion=m)
    needs_layer = G.METHODS[name][2]
    cam = G.check_cam_layer(handle, layer) if needs_layer else ""
    if opts.smoothgrad:
        a = smoothgrad(handle, x, target, name, samples=opts.samples, noise=opts.noise,
                       seed=opts.seed, layer=cam or None, batch_size=batch_size)  # fmt: skip
        return Explanation(name, a, opts, opts.samples * x.shape[0], layer=cam)
    a = G.attribute(handle, x, target, name, layer)
    return Explanation(name, a, opts, x.shape[0], layer=cam)


def attribute(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    method: str = "saliency",
    layer: str | None = None,
    **options: Any,
) -> torch.Tensor:
    """The maps of any method by name: ``"saliency"``, ``"deconvnet"``, ``"guided_backprop"``,
    ``"grad_cam"``, ``"guided_grad_cam"``, ``"occlusion"``, ``"integrated_gradients"`` (see
    :func:`explain` for ``layer`` and the options; :func:`explain` also returns what the run
    took and integrated gradients' completeness check).

    Examples
    --------
    >>> attribute(handle, x, 281, "grad_cam", layer="_blocks.12")           # doctest: +SKIP
    >>> attribute(handle, x, 281, "occlusion", stride=4, score="feature")   # doctest: +SKIP
    >>> attribute(handle, x, 281, "saliency", smoothgrad=True, samples=32)  # doctest: +SKIP
    """
    name = method if method in PERTURBATION_METHODS else G.canonical_method(method)  # warns here
    return explain(handle, images, target, name, layer, **options).attributions
