"""The algorithms. Imports only torch, models and data: never widgets (a test proves it).

Every method module is reachable as an attribute and imported on first use
(``cnnvis_widgets.core.topk``, ``cw.core.activation_max``), so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def _modules() -> list[str]:
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def __getattr__(name: str) -> Any:
    if not name.startswith("_") and name in _modules():
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_modules()})
