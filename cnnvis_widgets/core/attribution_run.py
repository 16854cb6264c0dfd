"""Moved to :mod:`cnnvis_widgets.core.attribution.photo_maps` (re-export)."""

from .attribution.photo_maps import *  # noqa: F403
from .attribution.photo_maps import __all__  # noqa: F401
