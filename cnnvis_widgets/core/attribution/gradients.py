"""Attribution maps: saliency, DeconvNet, guided backprop, Grad-CAM and guided Grad-CAM.

All of them are gradients of one score (a class logit or a hidden unit) with respect to the input
image, taken through a backward pass that differs by **one rule** at the rectifiers
(:func:`relu_rule`):

* ``"gradient"``: the plain gradient (Simonyan et al. 2013, *saliency maps*);
* ``"deconvnet"``: the rectifier passes ``relu(incoming gradient)`` whatever its input was
  (Zeiler & Fergus 2014); max-pooling routes the signal through the switches recorded in the
  forward pass (its ordinary backward, i.e. max-unpooling) and convolutions apply their transposed
  filters (their ordinary backward);
* ``"guided"``: guided backpropagation (Springenberg et al. 2015), ``relu(incoming gradient)``
  masked by the forward sign as well.

Grad-CAM (Selvaraju et al. 2017) weighs the feature maps of a layer by their mean gradient; guided
Grad-CAM multiplies it with guided backprop.

Conventions (DESIGN.md): attribution functions take and return **model-input** tensors
``(B, C, H, W)`` (like Captum), batch first, on ``handle.device``. Normalisation and colouring for
display live in :mod:`cnnvis_widgets.core.imaging` (``heatmap``, ``overlay``...). ``target`` is a
class index (the same for every image), a tensor or list with one class index per image, an
:class:`~cnnvis_widgets.core.objectives.Objective` (e.g. ``objectives.channel("_blocks.4", 7)``,
``objectives.neuron(...)`` or :func:`unit_at`), or the ``"layer:unit"`` shorthand.

Examples
--------
>>> from cnnvis_widgets import load_model                            # doctest: +SKIP
>>> from cnnvis_widgets.data import sample_image                      # doctest: +SKIP
>>> h = load_model()                                                  # doctest: +SKIP
>>> x = h.preprocess(sample_image("cat"))                             # doctest: +SKIP
>>> saliency(h, x, 281).shape                                         # doctest: +SKIP
torch.Size([1, 3, 224, 224])
>>> grad_cam(h, x, 281, "_blocks.15").shape                           # doctest: +SKIP
torch.Size([1, 1, 224, 224])
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ... import limits
from ...models.handle import ModelHandle
from ...models.layers import default_cam_layer, spatial_layers
from ..blocks.hooks import capture, forward_to
from ..blocks.objectives import LOGITS, Objective, as_objective, class_logit
from ..blocks.optimize import NonFiniteLossError
from ..blocks.rules import (
    RULES,
    RuleState,
    UnsupportedActivationError,
    relu_rule,
)
from ..blocks.rules import (
    patches_installed as patches_installed,  # tests: nothing left installed
)

__all__ = [
    "RULES",
    "METHODS",
    "DEPRECATED_METHODS",
    "canonical_method",
    "RuleState",
    "UnsupportedActivationError",
    "relu_rule",
    "unit_at",
    "saliency",
    "deconvnet",
    "guided_backprop",
    "grad_cam",
    "guided_grad_cam",
    "attribute",
    "default_cam_layer",
    "check_cam_layer",
    "as_target",
]

# ------------------------------------------------------------------------------------------------
# Targets


def unit_at(
    layer: str, units: int | Sequence[int], ys: int | Sequence[int], xs: int | Sequence[int]
) -> Objective:
    """A hidden unit at one spatial position, possibly different for every image.

    ``units``, ``ys`` and ``xs`` are each one int (the same for the whole batch) or one value per
    image. The score of image ``b`` is ``acts[layer][b, units[b], ys[b], xs[b]]``.

    Examples
    --------
    >>> obj = unit_at("conv2", [3, 5], [0, 2], [1, 1])
    >>> obj(dict(conv2=torch.arange(2 * 6 * 3 * 3.0).view(2, 6, 3, 3))).tolist()
    [28.0, 106.0]
    """
    lists = [
        [limits.as_int(v, "unit_at")]
        if limits.is_scalar(v)
        else [limits.as_int(u, "unit_at") for u in v]  # type: ignore[union-attr]
        for v in (units, ys, xs)
    ]

    def fn(acts: dict[str, torch.Tensor]) -> torch.Tensor:
        t = acts[layer]
        b = t.shape[0]
        idx = []
        for vals in lists:
            if len(vals) not in (1, b):
                raise ValueError(f"{len(vals)} positions or units given for a batch of {b}")
            idx.append(torch.as_tensor(vals * (b if len(vals) == 1 else 1), device=t.device))
        if t.dim() == 2:
            return t[torch.arange(b, device=t.device), idx[0]]
        return t[torch.arange(b, device=t.device), idx[0], idx[1], idx[2]]

    desc = ",".join(str(v[0]) if len(v) == 1 else "per-image" for v in lists)
    return Objective(fn, [layer], f"{layer}:unit@({desc})", [(layer, u) for u in set(lists[0])])


def as_target(handle: ModelHandle, target: Any, batch: int) -> Objective:
    """The objective for ``target`` (class index, per-image indices, objective or shorthand),
    validated against the model; clear errors for classes or units out of range."""
    if isinstance(target, Objective):
        obj = target
    elif isinstance(target, str):
        obj = as_objective(target)
    elif isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be a class index or an objective, got {target!r}")
    elif limits.is_scalar(target) and not isinstance(target, (torch.Tensor, np.ndarray)):
        c = limits.as_int(target, "target")
        handle.check_class(c)
        return class_logit(c)
    elif isinstance(target, (torch.Tensor, np.ndarray, list, tuple)):
        if isinstance(target, (list, tuple)):
            target = [limits.as_int(v, "class index") for v in target]
        idx = torch.as_tensor(target).flatten()
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"class indices must be integers, got a tensor of {idx.dtype}")
        if idx.numel() == 1:
            handle.check_class(int(idx))
            return class_logit(int(idx))
        if idx.numel() != batch:
            raise ValueError(
                f"{idx.numel()} class indices given for a batch of {batch} images: give one per "
                "image, or a single int for all"
            )
        values = [int(i) for i in idx.tolist()]
        for c in values:
            handle.check_class(c)
        return class_logit(values)
    else:
        raise TypeError(
            f"target must be a class index, a tensor of indices or an Objective, got {target!r}"
        )
    for name in obj.hidden_layers:
        handle.layer(name)  # KeyError listing the nearest names
    for name, unit in obj.units:
        handle.check_unit(name, int(unit))
    for c in obj.classes:
        handle.check_class(int(c))
    return obj


def _as_input(handle: ModelHandle, images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a model-input tensor (B, C, H, W), got {type(images).__name__}; "
            "use handle.preprocess(photo) for a PIL image"
        )
    x = images.unsqueeze(0) if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] != handle.in_channels:
        raise ValueError(
            f"images must have shape (B, {handle.in_channels}, H, W), got {tuple(images.shape)}"
        )
    limits.check_int(max(x.shape[-2:]), "image side", limit="MAX_IMAGE_SIDE")
    limits.check_batch(x.shape[0], x.shape[-2], x.shape[-1], name="images")
    return x.detach().to(handle.device, torch.float32)


def _check_finite(score: torch.Tensor, what: str) -> None:
    if not torch.isfinite(score).all():
        bad = (~torch.isfinite(score)).nonzero().flatten().tolist()
        raise NonFiniteLossError(
            f"the {what} is NaN or infinite for image(s) {bad}; check the input images and the "
            "model's weights"
        )


def _backward(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    rule: str,
    *,
    cam_layer: str | None = None,
    strict: bool = True,
    guided_input: bool = False,
    switches: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """One forward pass and the backward pass(es) under ``rule``.

    Returns ``(input gradient or None, cam layer activations, cam layer plain gradient)``.
    With ``cam_layer`` the layer gradient is plain (Grad-CAM); with ``guided_input`` too, the
    input gradient is taken afterwards under ``rule`` (guided Grad-CAM, one forward pass).
    """
    x0 = _as_input(handle, images)
    obj = as_target(handle, target, x0.shape[0])
    layers = list(obj.hidden_layers) + ([cam_layer] if cam_layer else [])
    # plain gradients need no rule (and then cost exactly autograd's backward)
    plain = rule == "gradient" and not guided_input
    rules = (
        contextlib.nullcontext()
        if plain
        else relu_rule(handle, rule, strict=strict, switches=switches)
    )
    with rules as state:
        x = x0.clone().requires_grad_(True)
        with capture(handle, layers, stop_early=not obj.needs_logits) as acts:
            out = forward_to(handle, x, acts, needs_logits=obj.needs_logits)
        values = dict(acts)
        if obj.needs_logits:
            values[LOGITS] = out
        score = obj(values)
        _check_finite(score, f"score of {obj.name}")
        total = score.sum()
        if cam_layer is None:
            (g,) = torch.autograd.grad(total, x)
            return g.detach(), None, None
        act = values[cam_layer]
        if state is not None:
            state.rule = "gradient"
        (ga,) = torch.autograd.grad(total, act, retain_graph=guided_input, allow_unused=True)
        if ga is None:
            ga = torch.zeros_like(act)
        gx = None
        if guided_input and state is not None:
            state.rule = rule
            (gx,) = torch.autograd.grad(total, x)
            gx = gx.detach()
        return gx, act.detach(), ga.detach()


def _input_gradient(
    handle: ModelHandle, images: torch.Tensor, target: Any, rule: str, switches: bool = True
):
    g, _, _ = _backward(handle, images, target, rule, switches=switches)
    assert g is not None
    return g


def saliency(handle: ModelHandle, images: torch.Tensor, target: Any) -> torch.Tensor:
    """Plain gradient of the target's score with respect to the input (Simonyan et al. 2013).

    Parameters
    ----------
    handle : ModelHandle
        The network.
    images : torch.Tensor
        Model-input batch ``(B, C, H, W)`` (``handle.preprocess(photo)``).
    target : int, tensor, Objective or str
        A class index for all images, one class index per image, or a hidden-unit objective.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` gradient on ``handle.device`` (raw: reduce and normalise for display
        with :func:`cnnvis_widgets.core.imaging.heatmap`; Simonyan's map is ``|g|`` max over
        channels).

    Examples
    --------
    >>> saliency(handle, x, 281)                                      # doctest: +SKIP
    """
    return _input_gradient(handle, images, target, "gradient")


def deconvnet(
    handle: ModelHandle, images: torch.Tensor, target: Any, *, switches: bool = True
) -> torch.Tensor:
    """DeconvNet projection of the target back to the input (Zeiler & Fergus 2014).

    Rectifiers pass ``relu`` of the signal coming from above, max-pooling unpools through the
    forward switches, convolutions apply transposed filters. Same arguments and output as
    :func:`saliency`; raises :class:`UnsupportedActivationError` for models with activations
    other than ReLU/ReLU6. ``switches=False`` unpools without the switches (each pooling
    window's signal goes to all of its positions): the projection then loses the image's own
    structure (Zeiler & Fergus, section 2.1). Moot for a model without max pooling.

    Examples
    --------
    >>> deconvnet(handle, x, objectives.channel("_blocks.4", 7))        # doctest: +SKIP
    """
    return _input_gradient(handle, images, target, "deconvnet", switches)


def guided_backprop(
    handle: ModelHandle, images: torch.Tensor, target: Any, *, switches: bool = True
) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): DeconvNet's rule masked by the
    forward sign of each rectifier. Same arguments and output as :func:`saliency`
    (``switches`` as for :func:`deconvnet`).

    Examples
    --------
    >>> guided_backprop(handle, x, 281)                                # doctest: +SKIP
    """
    return _input_gradient(handle, images, target, "guided", switches)


def check_cam_layer(handle: ModelHandle, layer: str | None, target: Objective | None = None) -> str:
    """The Grad-CAM layer to use: ``layer`` (or :func:`default_cam_layer`) when its output is a
    map larger than 1x1 that ``target`` (an objective on a hidden layer) depends on.

    Raises ``KeyError`` naming the nearest layers for an unknown name, ``ValueError`` naming
    layers that fit otherwise.

    Examples
    --------
    >>> check_cam_layer(handle, "_blocks.15")                          # doctest: +SKIP
    '_blocks.15'
    """
    name = layer or default_cam_layer(handle)
    info = handle.layer(name)
    if not info.spatial or (info.height or 1) * (info.width or 1) == 1:
        fits = [li.name for li in spatial_layers(handle)][-5:]
        raise ValueError(
            f"Grad-CAM needs a layer with a spatial output larger than 1x1; {name!r} has none. "
            f"Try one of: {', '.join(fits)}"
        )
    for hidden in target.hidden_layers if target is not None else ():
        if handle.layer(hidden).order < info.order:
            raise ValueError(
                f"Grad-CAM layer {name!r} runs after the target's layer {hidden!r}: the target "
                "does not depend on it. Choose a layer at or before the target's."
            )
    return name


def _cam_pass(
    handle: ModelHandle, images: torch.Tensor, target: Any, layer: str | None, *, guided: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One forward pass: the Grad-CAM map at ``layer`` upsampled to the input (``(B, 1, H, W)``)
    and, when ``guided``, the guided-backprop input gradient of the same pass."""
    x = _as_input(handle, images)
    name = check_cam_layer(handle, layer, as_target(handle, target, x.shape[0]))
    rule = "guided" if guided else "gradient"
    gx, act, ga = _backward(handle, x, target, rule, cam_layer=name, guided_input=guided)
    assert act is not None and ga is not None
    weights = ga.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    size = (x.shape[-2], x.shape[-1])
    return gx, F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


def grad_cam(
    handle: ModelHandle, images: torch.Tensor, target: Any, layer: str | None = None
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer``, upsampled to the input size.

    ``relu(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the target's gradient with
    respect to the feature map ``A_k`` of ``layer``.

    Parameters
    ----------
    handle, images, target
        As for :func:`saliency`. A hidden-unit target must sit at or after ``layer``.
    layer : str, optional
        Any layer with a spatial output (default: :func:`default_cam_layer`, the last one).

    Returns
    -------
    torch.Tensor
        ``(B, 1, H, W)``: one non-negative map per image, at the input's height and width
        (bilinear upsampling), not normalised.

    Examples
    --------
    >>> grad_cam(handle, x, 281, "_blocks.15").shape                   # doctest: +SKIP
    torch.Size([1, 1, 224, 224])
    """
    return _cam_pass(handle, images, target, layer, guided=False)[1]


def guided_grad_cam(
    handle: ModelHandle, images: torch.Tensor, target: Any, layer: str | None = None
) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map (one forward pass).

    Same arguments as :func:`grad_cam`; returns ``(B, C, H, W)`` like :func:`guided_backprop`.

    Examples
    --------
    >>> guided_grad_cam(handle, x, 281).shape                          # doctest: +SKIP
    torch.Size([1, 3, 224, 224])
    """
    gx, cam = _cam_pass(handle, images, target, layer, guided=True)
    assert gx is not None
    return gx * cam


#: Method name -> (label, function, needs a layer). The widget and :func:`attribute` use it.
#: The names are the functions' names: one spelling per method in the API, the widgets' options
#: and their records (the labels are for people).
METHODS: dict[str, tuple[str, Callable[..., torch.Tensor], bool]] = {
    "saliency": ("Saliency (gradient)", saliency, False),
    "deconvnet": ("DeconvNet", deconvnet, False),
    "guided_backprop": ("Guided backprop", guided_backprop, False),
    "grad_cam": ("Grad-CAM", grad_cam, True),
    "guided_grad_cam": ("Guided Grad-CAM", guided_grad_cam, True),
}

#: Earlier spellings of method names, still accepted with a ``DeprecationWarning``.
DEPRECATED_METHODS: dict[str, str] = {
    "guided": "guided_backprop",
    "gradcam": "grad_cam",
    "guided_gradcam": "guided_grad_cam",
}


def canonical_method(method: str) -> str:
    """The one spelling of an attribution method's name (a key of :data:`METHODS`).

    Earlier spellings (:data:`DEPRECATED_METHODS`: ``"guided"``, ``"gradcam"``,
    ``"guided_gradcam"``) give their new name with a ``DeprecationWarning``; unknown names raise
    ``ValueError`` listing the valid ones.

    Examples
    --------
    >>> canonical_method("grad_cam")
    'grad_cam'
    """
    if method in METHODS:
        return method
    if method in DEPRECATED_METHODS:
        new = DEPRECATED_METHODS[method]
        warnings.warn(
            f"attribution method {method!r} is now spelled {new!r}", DeprecationWarning, 3
        )
        return new
    raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")


def attribute(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    method: str = "saliency",
    layer: str | None = None,
) -> torch.Tensor:
    """Dispatch to one of :data:`METHODS` by name (``layer`` is used by the Grad-CAM ones):
    ``"saliency"``, ``"deconvnet"``, ``"guided_backprop"``, ``"grad_cam"``,
    ``"guided_grad_cam"`` (the functions' names; see :func:`canonical_method`).

    Examples
    --------
    >>> attribute(handle, x, 281, "grad_cam", layer="_blocks.12")      # doctest: +SKIP
    """
    _, fn, needs_layer = METHODS[canonical_method(method)]
    return fn(handle, images, target, layer) if needs_layer else fn(handle, images, target)
