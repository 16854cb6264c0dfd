"""Moved to :mod:`cnnvis_widgets.core.attribution.predictions` (re-export)."""

from .attribution.predictions import *  # noqa: F403
from .attribution.predictions import __all__  # noqa: F401
