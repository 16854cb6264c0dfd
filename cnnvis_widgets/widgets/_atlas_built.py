"""The Atlas widget opening a built atlas directory (``Atlas(model, atlas=DIR)``).

What the directory has (``cnnvis atlas build``, format ``cnnvis-atlas/1``) is shown at once: the
network view's rows and strips, each layer's AM grid and dissection labels, each unit's card;
only what it lacks is computed (:mod:`cnnvis_widgets.core.atlas.opened`), with the recipe the
atlas was built with. The directory is a constructor argument only, never a trait.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

from ..core import atlas as A
from ..core.atlas import opened as O
from ..core.blocks.optimize import Step
from ..core.imaging import encode
from ..models import ModelHandle

__all__ = ["BuiltAtlasMixin"]

#: Atlas settings read from the build's settings (when not given to the constructor)
_RECIPE = ("preset", "steps", "size", "seed", "batch")


class BuiltAtlasMixin:
    """Reads of a built atlas for the Atlas widget (``self._built``: a BuiltAtlas or None)."""

    _built: A.BuiltAtlas | None = None

    def _open_built(self, atlas: Any) -> None:
        self._built = None if atlas is None else A.open_atlas(atlas)

    def _built_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The atlas's layers and recipe as initial traits (explicit keywords win); a
        ``ValueError`` when it was built from another model."""
        b = self._built
        if b is None:
            return {}
        if b.fingerprint != h.fingerprint():
            raise ValueError(
                f"the atlas in {str(b.root)!r} was built from another model (or other weights) "
                f"than {h.name!r}: open it with the model it was built from"
            )
        recipe = b.settings
        return {k: recipe[k] for k in _RECIPE if k in recipe and k not in kwargs}

    def _default_layers(self, h: ModelHandle) -> list[str]:
        """The atlas's layers, else the default atlas layers of the model."""
        return self._built.layers if self._built is not None else A.default_atlas_layers(h)

    def _labels_of(self, layer: str) -> dict[int, tuple[str, float]]:
        """Dissection labels of ``layer``: the atlas's, else the network view's."""
        b, summary = self._built, getattr(self, "_summary", None)
        if b is not None and layer in b.layers:
            return b.labels(layer)
        return summary.labels(layer) if summary is not None else {}

    def _built_network(self) -> bool:
        """Show the network view from the atlas when it has every layer of the view."""
        b = self._built
        layers = list(self.layers)  # type: ignore[attr-defined]
        if b is None or layers != b.layers:
            return False
        with self.hold_sync():  # type: ignore[attr-defined]
            self.network_rows = b.rows()
            self.strips = encode(O.atlas_strips(b), "png")
        return True

    def _grid_steps(
        self, h: ModelHandle, stop_event: threading.Event
    ) -> Generator[Step, None, A.LayerGrid | None]:
        """The layer grid's run: from the atlas (its missing units computed), else computed."""
        b, layer, batch = self._built, self.layer, self.batch  # type: ignore[attr-defined]
        am = self._am_kwargs()  # type: ignore[attr-defined]
        if b is None or layer not in b.layers:
            return A.layer_grid_steps(h, layer, batch=batch, stop_event=stop_event, **am)
        return O.completed_grid_steps(h, b, layer, batch=batch, stop_event=stop_event, **am)

    def _built_card(self, h: ModelHandle, layer: str, unit: int) -> Any:
        b = self._built
        return None if b is None else O.atlas_card(h, b, layer, unit)
