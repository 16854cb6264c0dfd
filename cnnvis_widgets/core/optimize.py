"""Moved to :mod:`cnnvis_widgets.core.blocks.optimize`; this name keeps working (re-export)."""

from .blocks.optimize import *  # noqa: F403
from .blocks.optimize import __all__  # noqa: F401
