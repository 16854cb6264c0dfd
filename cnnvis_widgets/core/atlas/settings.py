"""The AM recipe of the atlas and the key of everything an AM image depends on.

Shared by the layer grids (:mod:`.grid`) and the unit card (:mod:`.card`): the same preset and
settings give the same cache entries, so a unit computed in one view appears in the other.
:func:`am_settings` is :func:`~cnnvis_widgets.core.activation_max.preset_settings`, the one way
AM settings are built from a preset (an explicit setting wins; the second jitter follows the
first unless ``jitter2`` is given), so the atlas and the ActivationMaximization widget agree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import activation_max as am
from ..activation_max import preset_settings as am_settings

__all__ = ["am_settings", "settings_key"]


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
