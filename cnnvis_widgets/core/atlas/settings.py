"""The AM recipe of the atlas and the key of everything an AM image depends on.

Shared by the layer grids (:mod:`.grid`) and the unit card (:mod:`.card`): the same preset and
settings give the same cache entries, so a unit computed in one view appears in the other.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...models.handle import ModelHandle
from .. import activation_max as am

__all__ = ["am_settings", "settings_key"]


def am_settings(
    preset: str = "lucid", steps: int | None = None, lr: float | None = None, **overrides: Any
) -> am.AMSettings:
    """The :class:`~cnnvis_widgets.core.activation_max.AMSettings` of ``preset`` with overrides,
    built like the ActivationMaximization widget builds them (the second jitter follows the
    first, on when ``jitter > 1``, unless ``jitter2`` is given: an explicit setting always wins
    over the preset)."""
    if preset not in am.PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {', '.join(am.PRESETS)}")
    s = dataclasses.replace(am.PRESETS[preset].settings)
    s.update(**overrides)
    if steps is not None:
        s.steps = int(steps)
    if lr is not None:
        s.lr = float(lr)
    if "jitter2" not in overrides:
        s.jitter2 = 4 if s.jitter > 1 else 0
    return s


def settings_key(preset: str, settings: am.AMSettings, size: int, seed: int) -> dict[str, Any]:
    """Everything an AM image depends on besides the model, layer and unit (JSON-able).

    The diversity weight is left out: grid images are optimized without it (each image of a
    batch is another unit). The batch size is left out too: a unit's image from a batch of 32 is
    an equally valid result of the same recipe as one optimized alone (only the random draws of
    the initialization differ).
    """
    d = dataclasses.asdict(settings)
    d.pop("diversity", None)
    d = {k: (round(v, 10) if isinstance(v, float) else v) for k, v in d.items()}
    return {"preset": preset, "size": int(size), "seed": int(seed), "settings": d}


def _fingerprint(handle: ModelHandle) -> str:
    return handle.fingerprint()
