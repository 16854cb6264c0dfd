"""Moved to :mod:`cnnvis_widgets.core.adversarial.pipeline`; this name stays importable.

Every public name of the pipeline (the run, its settings and its pictures) is re-exported here.
Monkeypatch the module where the code lives, ``cnnvis_widgets.core.adversarial.pipeline``.
"""

from __future__ import annotations

from .adversarial.pipeline import *  # noqa: F403
from .adversarial.pipeline import __all__  # noqa: F401
