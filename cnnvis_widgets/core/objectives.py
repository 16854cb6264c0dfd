"""Moved to :mod:`cnnvis_widgets.core.blocks.objectives`; this name keeps working (re-export)."""

from .blocks.objectives import *  # noqa: F403
from .blocks.objectives import __all__  # noqa: F401
