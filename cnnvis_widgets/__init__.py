"""cnnvis_widgets: interactive Jupyter widgets for the classic CNN visualization methods.

The algorithms live in :mod:`cnnvis_widgets.core` and need only torch; the widgets in
:mod:`cnnvis_widgets.widgets` are imported lazily so that ``import cnnvis_widgets`` works without
Jupyter packages installed.
"""

from __future__ import annotations

from typing import Any

from .models import LayerInfo, ModelHandle, load_model

__version__ = "0.1.0"
_WIDGETS = {
    "ActivationMaximization": "activation_max",
    "DeconvNet": "deconvnet",
    "Attribution": "attribution",
    "Inversion": "inversion",
    "Dissection": "dissection",
    "Adversarial": "adversarial",
    "Atlas": "atlas",
}
__all__ = ["load_model", "ModelHandle", "LayerInfo", "__version__", *_WIDGETS]


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        import importlib

        mod = importlib.import_module(f".widgets.{_WIDGETS[name]}", __name__)
        return getattr(mod, name)
    raise AttributeError(f"module 'cnnvis_widgets' has no attribute {name!r}")
