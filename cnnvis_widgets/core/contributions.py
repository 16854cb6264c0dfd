"""Moved to :mod:`cnnvis_widgets.core.attribution.contributions` (re-export)."""

from .attribution.contributions import *  # noqa: F403
from .attribution.contributions import __all__  # noqa: F401
