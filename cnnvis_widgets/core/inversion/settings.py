"""Settings and presets of the regularized inversion (Mahendran & Vedaldi 2015; Olah et al. 2017).

:class:`InversionSettings` are read at every step of a run; :data:`PRESETS` name the recipes
from the literature; :func:`settings_for` builds a run's settings from a preset, explicit values
winning over the preset's.

>>> settings_for("olah", None, alpha_weight=1e-4)[1].alpha_weight
0.0001
>>> PRESETS["mahendran"].settings.tv_weight
3.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import limits
from ..blocks.settings import Settings, from_preset, knob, pick_preset

__all__ = ["InversionSettings", "Preset", "PRESETS", "settings_for"]


@dataclass
class InversionSettings(Settings):
    """Settings read at every step: change them while a run goes on and the next step uses them.

    Attributes
    ----------
    steps : int
        Number of steps of the run.
    lr : float
        Initial learning rate (Adam), decayed along a cosine to ``lr_end``.
    lr_end : float
        Learning rate at the last step.
    alpha : float
        Exponent of the alpha-norm prior (Mahendran & Vedaldi use 6).
    alpha_weight : float
        Weight of the alpha-norm term (on the image mapped to ``[-1, 1]``).
    tv_beta : float
        Exponent of the total-variation prior (2 in the paper).
    tv_weight : float
        Weight of the total-variation term (on the image mapped to ``[-1, 1]``).
    jitter : int
        Random shift of up to this many pixels before each forward pass (0: off).
    jitter_until : float
        Jitter only during this fraction of the steps (0.75: it stops for the last quarter, which
        the final feature error needs).
    """

    steps: int = 200
    lr: float = 0.02
    lr_end: float = 0.001
    # the widget's sliders: range, help, label, step (knob)
    alpha: float = knob(6.0, 1.0, 20.0, "Exponent of the alpha-norm prior (live).", "Alpha", 0.5)
    alpha_weight: float = knob(
        1e-3, 0.0, 10.0, "Weight of the alpha-norm prior (live).", "Alpha-norm weight", 0.001
    )
    tv_beta: float = knob(
        2.0, 1.0, 4.0, "Exponent of the total-variation prior (live).", "TV beta", 0.1
    )
    tv_weight: float = knob(
        3.0, 0.0, 100.0, "Weight of the total-variation prior (live).", "TV weight", 0.1
    )
    jitter: int = knob(
        2, 0, 64, "Random shift in pixels, during the first steps (live).", "Jitter (px)", 1
    )
    jitter_until: float = 0.75


@dataclass(frozen=True)
class Preset:
    """A recipe from the literature: parameterization, settings and a description."""

    name: str
    param: str  # "pixel" (raw pixels, clamped) or "fft" (FFT + decorrelated colour + sigmoid)
    settings: InversionSettings
    description: str
    sd: float = 0.01


PRESETS: dict[str, Preset] = {
    "mahendran": Preset(
        "mahendran",
        "pixel",
        InversionSettings(),
        "Mahendran & Vedaldi 2015: pixels, alpha-norm (alpha 6, weight 1e-3) and TV (beta 2, "
        "weight 3) priors, jitter 2 for the first three quarters, Adam lr 0.02 cosine-decayed to "
        "0.001, 200 steps.",
    ),
    "olah": Preset(
        "olah",
        "fft",
        InversionSettings(alpha_weight=0.0, tv_weight=1e-3, lr=0.05, lr_end=0.005),
        "Olah et al. 2017 (Feature Visualization) applied to inversion: FFT parameterization "
        "with decorrelated colour as the prior, a little TV (1e-3), jitter 2 for three quarters, "
        "Adam lr 0.05 cosine-decayed to 0.005, 200 steps.",
    ),
    "unregularized": Preset(
        "unregularized",
        "pixel",
        InversionSettings(alpha_weight=0.0, tv_weight=0.0, jitter=0),
        "The baseline of Mahendran & Vedaldi's ablation: feature matching alone, no prior, no "
        "jitter (deep layers give high-frequency patterns no photo contains), Adam lr 0.02 "
        "cosine-decayed to 0.001, 200 steps.",
    ),
}


def settings_for(
    preset: str, settings: InversionSettings | None, **explicit: Any
) -> tuple[Preset, InversionSettings]:
    """The preset named ``preset`` and the settings of a run.

    ``settings`` (a live object, changed in place) defaults to a copy of the preset's; the
    ``explicit`` values (``None``: not given) are set on top, so they win over the preset.
    ``KeyError`` for an unknown preset or setting name.
    """
    p = pick_preset(PRESETS, preset)
    checked = from_preset(p.settings if settings is None else settings, **explicit)
    limits.check_steps(checked.steps)  # checked on a copy: a live object keeps its values
    limits.check_transforms(jitter=checked.jitter)
    if settings is None:
        return p, checked
    return p, settings.update(**{k: v for k, v in explicit.items() if v is not None})
