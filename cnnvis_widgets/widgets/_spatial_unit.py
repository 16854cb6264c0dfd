"""The base of widgets about one unit of a layer with a spatial output (DeconvNet, Atlas).

Their ``layer`` must be conv-like (a spatial output: receptive fields, top-9 patches, AM images)
and their ``unit`` one of its channels; the checks are declared here once. Subclasses declare
the ``layer`` and ``unit`` settings themselves.
"""

from __future__ import annotations

from typing import Any

import traitlets as t

from ..models import ModelHandle
from ._base import CnnvisWidget

__all__ = ["SpatialUnitWidget", "spatial_layer"]


def spatial_layer(handle: ModelHandle, name: str) -> Any:
    """``handle.layer(name)`` (a ``KeyError`` listing the nearest names), or a ``ValueError``
    when the layer has no spatial output."""
    info = handle.layer(name)
    if not info.spatial:
        raise ValueError(f"layer {name!r} has no spatial output; choose a conv-like layer")
    return info


class SpatialUnitWidget(CnnvisWidget):
    """A widget whose ``layer`` has a spatial output and whose ``unit`` is one of its channels.

    A value outside that is refused with a ``TraitError`` that names the valid range or the
    nearest layer names; :meth:`_follow_layer` keeps the unit in range when the layer changes.
    """

    layer: str
    unit: int

    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        if not self._layer_info(name).spatial:
            raise t.TraitError(f"layer {name!r} has no spatial output; choose a conv-like layer")
        return name

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        return self._unit_in_range(int(proposal["value"]), self.layer)

    def _follow_layer(self, layer: str) -> int:
        """After a change of ``layer``: the last unit when the unit was beyond the new layer's
        channels; returns their number."""
        n = int(self.handle.layer(layer).channels)
        if self.unit >= n:
            self.set_trait("unit", n - 1)
        return n
