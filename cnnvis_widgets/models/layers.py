"""Which layers a method starts on when the user names none: the one home of the layer pickers.

One function per method, shared by core, the widgets and the report: :func:`default_layer`
(activation maximization, the report), :func:`default_deconv_layer` (DeconvNet's top-k),
:func:`default_cam_layer` (Grad-CAM), :func:`inversion_layers` / :func:`default_inversion_layer`,
:func:`dissection_layers` and :func:`atlas_layers`; :func:`spatial_layers` are the layers a
map can be taken at. Each takes a :class:`~cnnvis_widgets.models.ModelHandle` and returns dotted
layer names; a model without a layer that fits gets a ``ValueError`` saying so.

Examples
--------
>>> from cnnvis_widgets import load_model                            # doctest: +SKIP
>>> default_layer(load_model()), default_deconv_layer(load_model())  # doctest: +SKIP
('_blocks.8', '_blocks.4')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .handle import LayerInfo, ModelHandle

__all__ = [
    "spatial_layers",
    "default_layer",
    "default_deconv_layer",
    "default_cam_layer",
    "inversion_layers",
    "default_inversion_layer",
    "dissection_layers",
    "atlas_layers",
]

_KINDS = ("block", "act", "conv", "pool")


def spatial_layers(handle: ModelHandle) -> list[LayerInfo]:
    """The conv-like layers whose output is larger than 1x1, in network order: where a map
    (Grad-CAM, a DeconvNet patch) can be taken.

    Examples
    --------
    >>> [li.name for li in spatial_layers(load_model())][-1]           # doctest: +SKIP
    '_conv_head'
    """
    return [li for li in handle.conv_layers() if (li.height or 1) * (li.width or 1) > 1]


def _usable(handle: ModelHandle, what: str, *, spatial: bool = False) -> list[LayerInfo]:
    """The conv-like (``spatial``: larger than 1x1) layers, or a ``ValueError`` naming ``what``
    the method wanted them for."""
    layers = spatial_layers(handle) if spatial else handle.conv_layers()
    if not layers:
        raise ValueError(
            f"model {handle.name!r} has no layer with a spatial output (conv, activation, pool or "
            f"block) {what}"
        )
    return layers


def _first_kind(layers: list[LayerInfo], kinds: tuple[str, ...] = _KINDS) -> list[LayerInfo]:
    """The layers of the first of ``kinds`` the network has (its top-level ones, e.g.
    ``_blocks.3`` rather than ``_blocks.3._act1``, when there are any); else every layer."""
    for kind in kinds:
        of_kind = [li for li in layers if li.kind == kind]
        top = [li for li in of_kind if li.name.count(".") <= 1]
        if top or of_kind:
            return top or of_kind
    return layers


def default_layer(handle: ModelHandle) -> str:
    """A middle block of the network (or a middle conv-like layer when there are no blocks):
    activation maximization's and the report's default."""
    picks = _first_kind(_usable(handle, "to visualize"))
    return picks[len(picks) // 2].name


def default_deconv_layer(handle: ModelHandle) -> str:
    """A block a quarter of the way into the network (mid-size receptive fields), or the first
    activation-like layer for small networks, larger than 1x1: DeconvNet's default."""
    picks = _first_kind(_usable(handle, "to rank patches for", spatial=True))
    return picks[len(picks) // 4].name


def default_cam_layer(handle: ModelHandle) -> str:
    """The last layer with a spatial output larger than 1x1 (conv, activation, pool or block):
    Grad-CAM's usual choice, the last convolutional feature maps."""
    layers = _usable(handle, "for Grad-CAM", spatial=True)
    return max(layers, key=lambda li: li.order).name


def inversion_layers(handle: ModelHandle, n: int = 5) -> list[str]:
    """``n`` layers spread from the first to the last top-level block (or conv-like layer)."""
    layers = _usable(handle, "to invert")
    picks = [li for li in layers if li.kind == "block" and li.name.count(".") <= 1]
    if len(picks) < n:
        picks = [li for li in layers if li.kind in ("conv", "block")] or layers
    if len(picks) <= n:
        return [li.name for li in picks]
    idx = sorted({round(i * (len(picks) - 1) / (n - 1)) for i in range(n)})
    # start one in from the very first block: it is nearly the identity
    if len(picks) > n + 1:
        idx = sorted({max(1, i) for i in idx})
    return [picks[i].name for i in idx]


def default_inversion_layer(handle: ModelHandle) -> str:
    """An early block: a third of the way into the network (Inversion's default)."""
    names = inversion_layers(handle, 7)
    return names[min(len(names) - 1, 2)]


def dissection_layers(handle: ModelHandle, n: int = 4) -> list[str]:
    """About ``n`` blocks spread from early to late (conv-like layers when there are no blocks)."""
    picks = _first_kind(_usable(handle, "to dissect"), ("block", "act", "conv"))
    if len(picks) <= n:
        return [li.name for li in picks]
    # skip the very first block (mostly colour), end with the last one
    first = 1 if len(picks) > n + 1 else 0
    span = len(picks) - 1 - first
    return [picks[first + round(i * span / (n - 1))].name for i in range(n)]


def atlas_layers(handle: ModelHandle, limit: int = 24) -> list[str]:
    """The network's top-level blocks (or its conv-like layers), at most ``limit`` of them."""
    layers = _usable(handle, "for an atlas")
    picks: list[Any] = []
    for kind in ("block", "act", "conv"):
        picks = [li for li in layers if li.kind == kind and li.name.count(".") <= 1]
        picks = [li for li in picks if not any(li.name.startswith(o.name + ".") for o in picks)]
        if len(picks) >= 2:
            break
    if len(picks) < 2:
        picks = layers
    if len(picks) > limit:
        picks = [picks[round(i * (len(picks) - 1) / (limit - 1))] for i in range(limit)]
    return [li.name for li in picks]
