"""Attribution: which input pixels a score depends on, and the evidence that a map is right.

* ``gradients``: backward passes that differ by one rule at the rectifiers: saliency (the plain
  gradient), DeconvNet, guided backprop, Grad-CAM and guided Grad-CAM; :func:`attribute`
  dispatches by name (:data:`METHODS`).
* ``occlusion``: occlusion sensitivity (Zeiler & Fergus 2014), also of one feature map.
* ``integrated_gradients``: integrated gradients (with the completeness check) and SmoothGrad.
* ``contributions``: class contributions of a layer's units (activation x gradient).
* ``faithfulness``: deletion and insertion curves (Petsiuk et al. 2018): do the pixels matter?
* ``sanity``: cascading randomization (Adebayo et al. 2018): is the map about the model?
* ``predictions``, ``pictures``, ``photo_maps``: the top classes, the maps as pictures, and the
  run behind the Attribution widget (every method for one photo, cached).
* ``scoring``: a target's score and probability of many images in bounded batches.

Everything of ``gradients`` is importable from here (``from cnnvis_widgets.core import
attribution as A; A.saliency(...)``), as before this became a package.
"""

from __future__ import annotations

from . import gradients  # noqa: F401  (the module, for readers and tests)
from .gradients import *  # noqa: F403
from .gradients import __all__ as _gradients_all
from .gradients import _as_input, _backward, _check_finite  # noqa: F401  (used by the family)

__all__ = list(_gradients_all)
# every other public name the module had before it became ``gradients`` (e.g. patches_installed)
globals().update(
    {k: v for k, v in vars(gradients).items() if not k.startswith("_") and k not in globals()}
)
del _gradients_all
