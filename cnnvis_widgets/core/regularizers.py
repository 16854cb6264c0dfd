"""Moved to :mod:`cnnvis_widgets.core.blocks.regularizers`; this name keeps working (re-export)."""

from .blocks.regularizers import *  # noqa: F403
from .blocks.regularizers import __all__  # noqa: F401
