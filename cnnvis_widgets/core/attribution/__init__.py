"""Attribution: which input pixels a score depends on, and the evidence that a map is right.

* ``gradients``: backward passes that differ by one rule at the rectifiers: saliency (the plain
  gradient), DeconvNet, guided backprop, Grad-CAM and guided Grad-CAM (:data:`METHODS`).
* ``occlusion``: occlusion sensitivity (Zeiler & Fergus 2014), also of one feature map.
* ``integrated_gradients``: integrated gradients (with the completeness check) and SmoothGrad.
* ``methods``: :func:`attribute` and :func:`explain` reach every method above by name, with its
  options (:class:`MethodOptions`: occlusion's patch, stride and score, integrated gradients'
  steps and baseline, SmoothGrad over any gradient method).
* ``contributions``: class contributions of a layer's units (activation x gradient).
* ``faithfulness``: deletion and insertion curves (Petsiuk et al. 2018): do the pixels matter?
* ``sanity``: cascading randomization (Adebayo et al. 2018): is the map about the model?
* ``predictions``, ``pictures``, ``photo_maps``: the top classes, the maps as pictures, and the
  run behind the Attribution widget (every method for one photo, cached).
* ``scoring``: a target's score and probability of many images in bounded batches.

The names of ``gradients`` and ``methods`` are importable from here (``from cnnvis_widgets.core
import attribution as A; A.saliency(...)``), as before this became a package; the other modules
by their names (``A.occlusion.occlusion(...)``, ``A.faithfulness.faithfulness(...)``).
"""

from __future__ import annotations

from . import gradients, methods  # noqa: F401  (the modules, for readers and tests)
from .gradients import *  # noqa: F403
from .gradients import patches_installed  # noqa: F401
from .methods import *  # noqa: F403  (after gradients: its attribute reaches every method)

__all__ = [
    # gradients: the names of the module before it became a package
    *gradients.__all__,
    "patches_installed",
    # methods: every method by name
    *(name for name in methods.__all__ if name not in gradients.__all__),
]
