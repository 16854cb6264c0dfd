"""Moved to :mod:`cnnvis_widgets.core.blocks.hooks`; this name keeps working (re-export)."""

from .blocks.hooks import *  # noqa: F403
from .blocks.hooks import __all__  # noqa: F401
