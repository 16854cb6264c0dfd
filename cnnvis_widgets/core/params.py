"""Moved to :mod:`cnnvis_widgets.core.blocks.params`; this name keeps working (re-export)."""

from .blocks.params import *  # noqa: F403
from .blocks.params import __all__  # noqa: F401
