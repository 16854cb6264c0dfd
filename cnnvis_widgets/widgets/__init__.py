"""Jupyter widgets (anywidget). Thin: traits in, core calls, steps out.

Imported lazily: ``from cnnvis_widgets.widgets import DeconvNet`` imports only that module.
"""

from __future__ import annotations

import importlib
from typing import Any

from .. import _WIDGETS

__all__ = list(_WIDGETS)


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        return getattr(importlib.import_module(f".{_WIDGETS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
