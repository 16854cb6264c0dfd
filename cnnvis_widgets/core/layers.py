"""Which layer a method starts on when the user names none (shared by widgets and the report).

Examples
--------
>>> from cnnvis_widgets import load_model                            # doctest: +SKIP
>>> default_layer(load_model()), default_deconv_layer(load_model())  # doctest: +SKIP
('_blocks.8', '_blocks.4')
"""

from __future__ import annotations

from ..models import ModelHandle

__all__ = ["default_layer", "default_deconv_layer"]


def default_layer(handle: ModelHandle) -> str:
    """A middle block of the network (or a middle conv-like layer when there are no blocks).

    Parameters
    ----------
    handle : ModelHandle
        The network.

    Returns
    -------
    str
        The dotted layer name (activation maximization's and the report's default).
    """
    layers = handle.conv_layers()
    if not layers:
        raise ValueError(
            f"model {handle.name!r} has no layer with a spatial output (conv, activation, pool or "
            "block) to visualize"
        )
    for kind in ("block", "act", "conv", "pool"):
        picks = [li for li in layers if li.kind == kind and "." not in li.name.split(".", 1)[-1]]
        picks = picks or [li for li in layers if li.kind == kind]
        if len(picks) >= 1:
            return picks[len(picks) // 2].name
    return layers[len(layers) // 2].name


def default_deconv_layer(handle: ModelHandle) -> str:
    """A block a quarter of the way into the network (mid-size receptive fields), or the first
    activation-like layer for small networks: DeconvNet's default.

    Parameters
    ----------
    handle : ModelHandle
        The network.

    Returns
    -------
    str
        The dotted name of a layer with a spatial output larger than 1x1.
    """
    layers = [li for li in handle.conv_layers() if (li.height or 1) * (li.width or 1) > 1]
    if not layers:
        raise ValueError(
            f"model {handle.name!r} has no layer with a spatial output (conv, activation, pool or "
            "block) to rank patches for"
        )
    for kind in ("block", "act", "conv", "pool"):
        picks = [li for li in layers if li.kind == kind and li.name.count(".") <= 1]
        picks = picks or [li for li in layers if li.kind == kind]
        if picks:
            return picks[len(picks) // 4].name
    return layers[len(layers) // 4].name
