"""Network inversion: reconstruct an image from what one layer keeps of it.

Regularized reconstruction after Mahendran & Vedaldi (*Understanding deep image representations
by inverting them*, CVPR 2015): find the image ``x`` whose features ``phi(x)`` at a layer match
those of a photo, ``phi0``, under natural-image priors,

    loss(x) = ||phi(x) - phi0||^2 / ||phi0||^2 + a * alpha_norm(x) + b * TV_beta(x),

minimized with the project's one optimization loop (:func:`~cnnvis_widgets.core.optimize.
optimize_steps`), its image parameterizations (:class:`~cnnvis_widgets.core.params.ImageParam`)
and regularizers (:mod:`~cnnvis_widgets.core.regularizers`). Random jitter helps early on and
stops for the last quarter of the steps; the learning rate decays (cosine); the reported
*normalized feature error* is the one of the final image without jitter.

:func:`invert_steps` yields :class:`~cnnvis_widgets.core.optimize.Step` s and returns an
:class:`InversionResult`, :func:`invert` runs to the end, :func:`invert_layers` reconstructs
from several layers as one batch (the classic "what each layer keeps" figure). The learned
decoders of Dosovitskiy & Brox live in :mod:`cnnvis_widgets.core.upconv`.

The package, one idea per module:

* ``settings``: :class:`InversionSettings`, the literature's :data:`PRESETS`;
* ``features``: :func:`target_pixels` (the photo as the network sees it), :func:`layer_features`;
* ``regularized``: the optimization (:func:`invert_steps`, :func:`invert`, :func:`invert_layers`);
* ``layer_batch``: several layers as one batch that sheds rows once they are matched;
* ``metrics``: :func:`feature_error`, :func:`pixel_correlation`, :func:`pixel_error`,
  :func:`reconstruction_metrics` and :func:`metric_lines` (both methods end in these numbers).

Examples
--------
>>> from cnnvis_widgets import load_model                        # doctest: +SKIP
>>> from cnnvis_widgets.data import sample_image                 # doctest: +SKIP
>>> from cnnvis_widgets.core import inversion                    # doctest: +SKIP
>>> h = load_model()                                             # doctest: +SKIP
>>> r = inversion.invert(h, sample_image("cat"), "_blocks.3", size=128)  # doctest: +SKIP
>>> r.image.shape, float(r.feature_error[0]) < 0.05              # doctest: +SKIP
(torch.Size([1, 3, 128, 128]), True)
"""

from __future__ import annotations

from .features import layer_features, target_pixels
from .metrics import (
    feature_error,
    metric_lines,
    pixel_correlation,
    pixel_error,
    reconstruction_metrics,
)
from .regularized import (
    InversionResult,
    invert,
    invert_layers,
    invert_layers_steps,
    invert_steps,
)
from .settings import PRESETS, InversionSettings, Preset

__all__ = [
    "InversionSettings",
    "Preset",
    "PRESETS",
    "InversionResult",
    "invert_steps",
    "invert",
    "invert_layers",
    "invert_layers_steps",
    "target_pixels",
    "layer_features",
    "feature_error",
    "pixel_correlation",
    "pixel_error",
    "reconstruction_metrics",
    "metric_lines",
]
