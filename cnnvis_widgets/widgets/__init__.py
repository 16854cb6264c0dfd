"""Jupyter widgets (anywidget). Thin: traits in, core calls, steps out."""

from .activation_max import ActivationMaximization

__all__ = ["ActivationMaximization"]
