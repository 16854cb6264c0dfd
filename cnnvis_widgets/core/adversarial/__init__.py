"""Adversarial examples (FGSM, PGD) and what they change inside the network.

Everything here works in *pixel space*: images are float batches ``(B, C, H, W)`` in ``[0, 1]``
and ``eps`` is in pixel units (``4/255`` means four grey levels). The network sees
``handle.normalize(pixels)``. The perturbation ``adv - clean`` stays inside the eps-ball *exactly*,
so ``(adv - clean).abs().max() <= eps`` (L-infinity) or ``(adv - clean).flatten(1).norm(dim=1) <=
eps`` (L2) holds whether it is computed in float32 or float64: L-infinity attacks clamp every step
between per-pixel bounds computed once (``clean +- eps`` within ``[0, 1]``, each bound moved one ulp
inwards where float rounding overshot, see :func:`linf_bounds`); L2 attacks scale the perturbation
to a radius a hair inside eps and check the norm again after rounding.

The attacks are FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), L-infinity or L2,
targeted or not, with :func:`pgd_steps` as the generator the widget drives; see
:mod:`.attacks` for the objective and its fallback on a saturated softmax.

The package, by idea: :mod:`.inputs` (what an attack accepts, checked), :mod:`.projection` (the
eps-ball, exactly), :mod:`.attacks` (FGSM, PGD) and :mod:`.analysis` (what an attack changed),
whose public names are importable from ``cnnvis_widgets.core.adversarial``; then one widget run:
:mod:`.settings` (what it computes with), :mod:`.pipeline` (attack -> analyze -> maps -> unit
pictures as core steps; every name of the run is importable from it) and :mod:`.pictures` (the
run drawn: summary text, tables, map tiles, unit grid, one report picture).

Analyses of a clean/adversarial pair: :func:`amplify` (the perturbation made visible),
:func:`top_k` (predictions before/after), :func:`unit_changes` (the units of a layer that change
most), :func:`attribution_maps` (saliency / guided backprop / Grad-CAM of both images for the
original and the new class) and :func:`analyze`, which does all of them.

Examples
--------
>>> import cnnvis_widgets as cw                                          # doctest: +SKIP
>>> from cnnvis_widgets.core import adversarial                          # doctest: +SKIP
>>> h = cw.load_model()                                                  # doctest: +SKIP
>>> x = h.to_pixels(cw.data.sample_image("cat"))                         # doctest: +SKIP
>>> adv = adversarial.pgd(h, x, eps=4 / 255, steps=10)                   # doctest: +SKIP
>>> float((adv - x).abs().max()) <= 4 / 255                              # doctest: +SKIP
True
>>> adversarial.top_k(h, adv)[0][0]["name"]                              # doctest: +SKIP
'...'
"""

from __future__ import annotations

from .analysis import (
    ATTRIBUTION_METHODS,
    PairAnalysis,
    amplify,
    analyze,
    attribution_maps,
    predict,
    top_k,
    unit_changes,
)
from .attacks import fgsm, pgd, pgd_steps
from .inputs import NORMS
from .projection import linf_bounds, project

__all__ = [
    "fgsm",
    "pgd",
    "pgd_steps",
    "project",
    "linf_bounds",
    "amplify",
    "predict",
    "top_k",
    "unit_changes",
    "attribution_maps",
    "analyze",
    "PairAnalysis",
    "NORMS",
    "ATTRIBUTION_METHODS",
]
