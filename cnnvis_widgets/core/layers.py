"""Moved to :mod:`cnnvis_widgets.models.layers` (layer pickers are model facts): an alias."""

from __future__ import annotations

from ..models.layers import *  # noqa: F403
from ..models.layers import default_deconv_layer, default_layer

__all__ = ["default_layer", "default_deconv_layer"]
