"""DeconvNet's pipeline for one unit: its top images, their receptive-field patches and the
projections of its activation back to pixel space (Zeiler & Fergus 2014).

A top-k pass (:func:`~cnnvis_widgets.core.topk.top_k_patches`) ranks the images; this module
turns one unit of that result into pictures:

1. the unit's top images, re-read from the dataset of the pass (:meth:`TopK.images_for`);
2. each image cropped to the receptive field of its strongest position (:func:`crop_patches`);
3. the activation at exactly that position projected back to the input by DeconvNet or guided
   backprop (:func:`project_unit`), one position per image, in one batch;
4. the projection shown as a signed image (grey is zero) and cropped like the patch.

The DeconvNet widget, the atlas's unit card and the static report all use it, so the three show
the same pictures for the same unit. No widget package is needed.

Examples
--------
>>> from cnnvis_widgets.core import projections, topk                # doctest: +SKIP
>>> top = topk.top_k_patches(handle, "_blocks.4", data, units=[7])   # doctest: +SKIP
>>> up = projections.unit_projections(handle, top, 7, data)          # doctest: +SKIP
>>> up.patches[0].shape, up.projection_patches[0].shape             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..imaging import signed_to_pixels
from ..models import ModelHandle
from . import attribution as A
from .topk import Entry, TopK

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "NO_POOL_NOTE",
    "UnitProjections",
    "add_projections",
    "crop_patches",
    "has_max_pooling",
    "project_unit",
    "unit_projections",
]

#: the projection rules: DeconvNet (Zeiler & Fergus 2014), guided backprop (Springenberg et al.)
METHODS = ("deconvnet", "guided_backprop")
#: how the projection rules are called on a control
METHOD_LABELS = {"deconvnet": "DeconvNet", "guided_backprop": "guided backprop"}

#: what to tell a user of a model without max-pooling (see :func:`has_max_pooling`)
NO_POOL_NOTE = (
    "This model has no max-pooling, so DeconvNet has no switches: its projections are nearly the "
    "same pattern for every image (correct, not a bug). Guided backprop, shown by default here, "
    "depends on the image."
)


def has_max_pooling(handle: ModelHandle) -> bool:
    """True when the model has a max-pooling module: DeconvNet's switches (where each maximum
    was) are what make its projections depend on the image.

    Examples
    --------
    >>> from cnnvis_widgets import load_model
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2))
    >>> has_max_pooling(load_model(net, device="cpu", input_size=16))
    True
    """
    pools = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d, torch.nn.AdaptiveMaxPool2d)
    return any(isinstance(m, pools) for m in handle.model.modules())


@dataclass
class UnitProjections:
    """One unit's top images, patches and projections (see :func:`unit_projections`).

    Attributes
    ----------
    layer : str
    unit : int
    method : str
        ``"deconvnet"`` or ``"guided_backprop"``.
    entries : list of Entry
        The unit's top images, best first (value, position, receptive-field box).
    images : torch.Tensor
        ``(n, C, H, W)`` the whole images, pixels in ``[0, 1]`` on the CPU.
    patches : list of torch.Tensor
        ``(C, h, w)`` each image cropped to its entry's box (smaller at the image borders).
    projections : torch.Tensor or None
        ``(n, C, H, W)`` the signed projections (input gradients of the unit at each entry's
        position, CPU); None when the model's activations do not allow them (see ``note``).
    shown : torch.Tensor or None
        ``projections`` as pictures (:func:`~cnnvis_widgets.core.imaging.signed_to_pixels`).
    projection_patches : list of torch.Tensor
        ``shown`` cropped like ``patches`` (empty without projections).
    note : str
        Empty, or why there are no projections.
    """

    layer: str
    unit: int
    method: str
    entries: list[Entry]
    images: torch.Tensor
    patches: list[torch.Tensor]
    projections: torch.Tensor | None = None
    shown: torch.Tensor | None = None
    projection_patches: list[torch.Tensor] = field(default_factory=list)
    note: str = ""


def crop_patches(images: torch.Tensor, entries: Sequence[Entry]) -> list[torch.Tensor]:
    """Each image cropped to its entry's receptive-field box ``(top, left, bottom, right)``.

    Parameters
    ----------
    images : torch.Tensor
        ``(n, C, H, W)``, one image per entry, in the order of ``entries``.
    entries : sequence of Entry
        From :meth:`TopK.entries`.

    Returns
    -------
    list of torch.Tensor
        ``(C, bottom - top, right - left)`` views of the images, one per entry.

    Examples
    --------
    >>> e = Entry(0, 1.0, 0, "a", 0, 0, (1, 2, 3, 5))
    >>> crop_patches(torch.zeros(1, 3, 8, 8), [e])[0].shape
    torch.Size([3, 2, 3])
    """
    if len(images) != len(entries):
        raise ValueError(f"{len(images)} images for {len(entries)} entries: give one per entry")
    return [img[:, e.box[0] : e.box[2], e.box[1] : e.box[3]] for e, img in zip(entries, images)]


def _rule(method: str) -> Callable[..., torch.Tensor]:
    if method == "deconvnet":
        return A.deconvnet
    if method == "guided_backprop":
        return A.guided_backprop
    raise ValueError(f"unknown projection method {method!r}: use one of {', '.join(METHODS)}")


def project_unit(
    handle: ModelHandle,
    layer: str,
    unit: int,
    images: torch.Tensor,
    entries: Sequence[Entry],
    method: str = "deconvnet",
    *,
    switches: bool = True,
) -> torch.Tensor:
    """Project the unit's activation at each entry's position back to the input pixels.

    Image ``b`` gets the input gradient of ``acts[layer][b, unit, y_b, x_b]`` (the position of
    its maximum, as in Zeiler & Fergus) under the DeconvNet or guided-backprop rule.

    Parameters
    ----------
    handle : ModelHandle
        The network (left as it was: mode, flags, statistics).
    layer : str
        The layer of the top-k pass.
    unit : int
        The channel.
    images : torch.Tensor
        ``(n, C, H, W)`` pixels in ``[0, 1]`` (normalized here like the model's input).
    entries : sequence of Entry
        One per image: the positions ``(y, x)``.
    method : str
        ``"deconvnet"`` (default) or ``"guided_backprop"``.
    switches : bool
        ``False``: unpool without the forward switches (see
        :func:`~cnnvis_widgets.core.attribution.deconvnet`); moot without max pooling.

    Returns
    -------
    torch.Tensor
        ``(n, C, H, W)`` signed projections on the CPU.

    Raises
    ------
    UnsupportedActivationError
        For activations the rule cannot pass (e.g. SiLU); a ``ValueError``.
    """
    fn = _rule(method)
    if len(images) != len(entries):
        raise ValueError(f"{len(images)} images for {len(entries)} entries: give one per entry")
    target = A.unit_at(layer, int(unit), [e.y for e in entries], [e.x for e in entries])
    x = handle.normalize(images.to(handle.device))
    return fn(handle, x, target, switches=switches).detach().cpu()


def unit_projections(
    handle: ModelHandle,
    top: TopK,
    unit: int,
    dataset: Any = None,
    method: str = "deconvnet",
    *,
    project: bool = True,
) -> UnitProjections:
    """The DeconvNet pictures of one unit of a top-k pass: patches and projections.

    Parameters
    ----------
    handle : ModelHandle
        The network of the pass.
    top : TopK
        The pass (:func:`~cnnvis_widgets.core.topk.top_k_patches`).
    unit : int
        A unit of the pass.
    dataset : optional
        The dataset of the pass, to re-read the images (not needed when ``top`` kept them).
    method : str
        ``"deconvnet"`` (default) or ``"guided_backprop"``.
    project : bool
        False: only the images and patches (the projections cost a forward and backward pass).

    Returns
    -------
    UnitProjections
        When the model's activations cannot be projected, ``projections`` is None and ``note``
        says why (the patches are still there).
    """
    _rule(method)  # a bad method fails before any work
    u = int(unit)
    entries = top.entries(u)
    images = top.images_for(u, dataset, handle)
    out = UnitProjections(top.layer, u, method, entries, images, crop_patches(images, entries))
    if not project or not entries:
        return out
    try:
        return add_projections(handle, out)
    except A.UnsupportedActivationError as exc:
        out.note = str(exc)
        return out


def add_projections(handle: ModelHandle, up: UnitProjections) -> UnitProjections:
    """Fill in the projections of ``up`` (made with ``project=False``): ``projections``,
    ``shown`` and ``projection_patches``, with ``up.method``; returns ``up``.

    Raises
    ------
    UnsupportedActivationError
        For activations the rule cannot pass (``up`` is left without projections).
    """
    proj = project_unit(handle, up.layer, up.unit, up.images, up.entries, up.method)
    up.projections = proj
    up.shown = signed_to_pixels(proj)
    up.projection_patches = crop_patches(up.shown, up.entries)
    return up
