"""Network Dissection (Bau et al. 2017): label every conv unit with the concept its top activations
overlap, count interpretable units per layer, compare models.

The algorithm, for each unit ``k`` of each dissected layer:

1. **Threshold.** ``T_k`` is the top ``quantile`` (0.005) value of the unit's activations over all
   positions of all probe images. One streaming pass computes it with a per-unit histogram on a
   power-of-two grid (:class:`StreamingQuantile`): no activation is kept, and the estimate is
   within one bin width (about ``range / bins``, reported per unit) of the exact order statistic.
   ``refine=True`` adds a second pass that histograms only the bin holding the quantile, shrinking
   the bound ``bins`` times.
2. **IoU.** Each activation map is upsampled bilinearly to the mask size and thresholded
   (``a > T_k``); intersections and unions with every concept are tallied over the probe set,
   counting the unit's activated area only on images annotated for the concept's category (the
   category-restricted denominator of NetDissect)::

       IoU(k, c) = sum |M_k & L_c| / (sum_{images with cat(c)} |M_k| + sum |L_c| - sum |M_k & L_c|)

3. **Label.** A unit's label is its best concept; it is *interpretable* when that IoU is at least
   ``iou_threshold`` (0.04). Unique detectors per category count distinct concepts (texture scales
   merged) among the interpretable units of a layer.

Everything is batch first and streamed: per stage one forward pass per probe batch (stopped after
the deepest dissected layer), tallies are integer sums, so they merge exactly across processes:
with ``torch.distributed`` initialised (gloo on CPU, nccl on GPU) each rank takes a slice of the
probe set and the tallies are all-reduced; every rank gets the same result as one process would.

Examples
--------
>>> from cnnvis_widgets import load_model                          # doctest: +SKIP
>>> from cnnvis_widgets.data.concepts import probe_set              # doctest: +SKIP
>>> h = load_model()                                               # doctest: +SKIP
>>> result = dissect(h, ["_blocks.4", "_blocks.8"], probe_set(256))  # doctest: +SKIP
>>> result.summary()[0]["interpretable"]                           # doctest: +SKIP
>>> result.units("_blocks.4")[:3]                                  # doctest: +SKIP
"""

from __future__ import annotations

# every name the single-module ``dissection.py`` had, private helpers included
from ..blocks.streaming import (  # noqa: F401
    NonFiniteActivationError,
    StreamingQuantile,
    _all_reduce,
    _pow2,
)
from . import exports as _exports
from . import views as _views
from .compare import (
    DissectionComparison,
    compare_dissections,
    compare_models,
    layers_per_model,
    matching_layers,
)
from .examples import UnitExamples, _outline, render_examples, unit_examples  # noqa: F401
from .exports import *  # noqa: F403 - the export functions (exports.__all__)
from .joint import DissectionJob, check_layers_of
from .probing import LUMA, _consume_outputs, probe_channels, to_model_channels  # noqa: F401
from .results import SAVE_VERSION, Dissection, LayerDissection  # noqa: F401
from .run import (  # noqa: F401
    Dissector,
    _all_gather,
    _dist_info,
    _top_sorted,
    check_layers,
    dissect,
    dissect_steps,
)
from .tallies import IoUTally, _category_of_labels, label_counts  # noqa: F401
from .views import *  # noqa: F403 - the views of a result (views.__all__)

__all__ = [
    "StreamingQuantile",
    "IoUTally",
    "Dissector",
    "Dissection",
    "LayerDissection",
    "DissectionComparison",
    "dissect",
    "dissect_steps",
    "compare_dissections",
    "compare_models",
    "layers_per_model",
    "matching_layers",
    "unit_examples",
    "UnitExamples",
    "render_examples",
    "NonFiniteActivationError",
    "check_layers",
    "DissectionJob",
    "check_layers_of",
    *_views.__all__,
    *_exports.__all__,
]
