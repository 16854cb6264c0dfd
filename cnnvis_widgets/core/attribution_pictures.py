"""Moved to :mod:`cnnvis_widgets.core.attribution.pictures` (re-export)."""

from .attribution.pictures import *  # noqa: F403
from .attribution.pictures import __all__  # noqa: F401
