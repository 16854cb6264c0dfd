"""Reconstructions by trained decoders, and the metrics of a finished inversion (moved).

Kept so that ``from cnnvis_widgets.core import inversion_results`` goes on working: the metrics
now live in :mod:`cnnvis_widgets.core.inversion.metrics`, the decoders' reconstructions and
training state in :mod:`cnnvis_widgets.core.upconv` (``reconstruct``, ``checkpoints``).

- :func:`decode_layers` reconstructs one photo from several layers with their trained decoders;
- :func:`reconstruction_metrics` recomputes the numbers for final images, one per layer;
- :func:`metric_lines` writes them as the text a person reads;
- :func:`trained_steps` says how far the decoder of a layer was trained (memory or disk).
"""

from __future__ import annotations

from .inversion.metrics import METRICS_NOTE, metric_lines, reconstruction_metrics  # noqa: F401
from .upconv.checkpoints import trained_steps
from .upconv.reconstruct import decode_layers

__all__ = ["decode_layers", "reconstruction_metrics", "metric_lines", "trained_steps"]
