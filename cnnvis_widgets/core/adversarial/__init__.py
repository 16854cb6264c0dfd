"""Adversarial examples (FGSM, PGD) and what they change inside the network.

Everything here works in *pixel space*: images are float batches ``(B, C, H, W)`` in ``[0, 1]``
and ``eps`` is in pixel units (``4/255`` means four grey levels). The network sees
``handle.normalize(pixels)``. The perturbation ``adv - clean`` stays inside the eps-ball *exactly*,
so ``(adv - clean).abs().max() <= eps`` (L-infinity) or ``(adv - clean).flatten(1).norm(dim=1) <=
eps`` (L2) holds whether it is computed in float32 or float64: L-infinity attacks clamp every step
between per-pixel bounds computed once (``clean +- eps`` within ``[0, 1]``, each bound moved one ulp
inwards where float rounding overshot, see :func:`linf_bounds`); L2 attacks scale the perturbation
to a radius a hair inside eps and check the norm again after rounding.

Attacks (Goodfellow et al. 2015, *Explaining and harnessing adversarial examples*; Madry et al.
2018, *Towards deep learning models resistant to adversarial attacks*):

* :func:`fgsm` -- one signed-gradient step of size ``eps``;
* :func:`pgd` -- projected gradient ascent, L-infinity or L2, random start, targeted or not;
* :func:`pgd_steps` -- the same as a generator of :class:`~cnnvis_widgets.core.optimize.Step`
  that returns the adversarial batch (what the widget drives; a ``threading.Event`` stops it
  between steps).

Untargeted attacks push the cross-entropy of the clean image's own top-1 class up; targeted ones
push the cross-entropy of the target class down. When the cross-entropy's gradient of an image is
exactly zero (a saturated softmax), that image's step uses the logit margin instead, whose
gradient does not vanish, so the attack never stalls on a zero gradient.

The package, by idea: :mod:`.inputs` (what an attack accepts, checked), :mod:`.projection` (the
eps-ball, exactly), :mod:`.attacks` (FGSM, PGD), :mod:`.analysis` (what an attack changed),
:mod:`.pipeline` (one widget run as core steps: attack -> analyze -> maps -> unit pictures) and
:mod:`.pictures` (the run drawn: summary text, map tiles, unit grid, one report picture). Every
public name is importable from ``cnnvis_widgets.core.adversarial``.

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
