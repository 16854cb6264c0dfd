"""cnnvis_widgets: interactive Jupyter widgets for the classic CNN visualization methods.

The algorithms live in :mod:`cnnvis_widgets.core` and need only torch; the widgets in
:mod:`cnnvis_widgets.widgets` are imported lazily so that ``import cnnvis_widgets`` works without
Jupyter packages installed. The sub-packages are reachable as attributes and imported on first use:

>>> import cnnvis_widgets as cw                                  # doctest: +SKIP
>>> cw.data.sample_images()["cat"]                               # doctest: +SKIP
>>> cw.core.activation_max.maximize(cw.load_model(), "_blocks.8:3")  # doctest: +SKIP
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
    "Invariance": "invariance",
    "Training": "training",
}
#: sub-modules imported on first attribute access (``cw.core``, ``cw.data``...), so that
#: ``import cnnvis_widgets`` stays cheap and the core works without the widget packages
_SUBMODULES = ("core", "data", "models", "widgets", "cache", "export", "report", "cli")
__all__ = ["load_model", "ModelHandle", "LayerInfo", "__version__", *_WIDGETS]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _WIDGETS:
        mod = importlib.import_module(f".widgets.{_WIDGETS[name]}", __name__)
        return getattr(mod, name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cnnvis_widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})
