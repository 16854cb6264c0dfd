"""Moved to :mod:`cnnvis_widgets.core.blocks.transforms`; this name keeps working (re-export)."""

from .blocks.transforms import *  # noqa: F403
from .blocks.transforms import __all__  # noqa: F401
