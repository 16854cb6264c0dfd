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
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import limits
from ..models.handle import ModelHandle
from .hooks import capture, forward_to
from .objectives import LOGITS, Objective, as_objective, class_logit
from .optimize import NonFiniteLossError

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
    "as_target",
]

#: The backward rules at the rectifiers (see the module docstring).
RULES = ("gradient", "deconvnet", "guided")
_INTERNAL_RULES = ("structural",)  # identity backward: receptive fields (core.topk)


class UnsupportedActivationError(ValueError):
    """The model uses an activation a DeconvNet / guided-backprop rule cannot cover."""


# ------------------------------------------------------------------------------------------------
# The rule mechanism: one autograd function for every rectifier, switched by a rule that is read
# when the backward pass runs. Rectifiers are found by temporarily wrapping the functions every
# ReLU/ReLU6 goes through (``F.relu``, ``F.hardtanh``, ``torch.relu``, ``Tensor.relu``, a clamp
# at zero...): modules (``nn.ReLU``, ``nn.ReLU6``, in place or not) call these, and so does
# functional code inside a model's ``forward``. The wrappers act only in the thread that entered
# :func:`relu_rule` and only on tensors that need a gradient; everything is restored on exit.


class RuleState:
    """The live state of one :func:`relu_rule` block.

    Attributes
    ----------
    rule : str
        The rule applied by backward passes through rectifiers recorded in this block. It may be
        changed between two backward passes of the same forward pass (guided Grad-CAM does).
    strict : bool
        Raise :class:`UnsupportedActivationError` for activations the rule cannot cover.
    rectifiers : int
        Number of rectifier calls the rule was attached to in this block (forward passes).
    """

    def __init__(self, model: nn.Module, rule: str, strict: bool) -> None:
        self.model = model
        self._rule = ""
        self.rule = rule
        self.strict = strict
        self.rectifiers = 0

    @property
    def rule(self) -> str:
        return self._rule

    @rule.setter
    def rule(self, value: str) -> None:
        if value not in RULES + _INTERNAL_RULES:
            raise ValueError(f"unknown rule {value!r}: use one of {', '.join(RULES)}")
        self._rule = value


_aten = torch.ops.aten  # the operators themselves: never the wrapped Python functions


class _Rectifier(torch.autograd.Function):
    """``clamp(x, 0, hi)`` (ReLU: ``hi`` None) whose backward follows ``state.rule``.

    The forward pass is the native operator (one pass over the tensor, in place when asked) and
    saves its output, like PyTorch's own ReLU: ``out > 0`` (and ``out < hi``) is exactly the
    forward mask, so the plain rule is PyTorch's own backward kernel and the others add at most
    one pass (the clamp of the incoming gradient).
    """

    @staticmethod
    def forward(ctx, x, hi, state, inplace):  # type: ignore[override]
        if hi is None:
            out = _aten.relu_(x) if inplace else _aten.relu(x)
        else:
            out = _aten.hardtanh_(x, 0.0, hi) if inplace else _aten.hardtanh(x, 0.0, hi)
        if inplace:
            ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        ctx.hi = hi
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        rule = ctx.state.rule
        if rule == "deconvnet":
            return grad.clamp_min(0), None, None, None
        if rule == "structural":  # every path counts
            return grad, None, None, None
        if ctx.hi is None:
            g = _aten.threshold_backward(grad, out, 0.0)
        else:
            g = _aten.hardtanh_backward(grad, out, 0.0, ctx.hi)
        if rule == "guided":
            g = g.clamp_min_(0)
        return g, None, None, None


class _Threshold(torch.autograd.Function):
    """``nn.Threshold(t, v)``: ``x`` where ``x > t``, else ``v``; a ReLU whose forward mask is
    ``x > t`` (a shifted ReLU when ``v == t``). Its backward follows ``state.rule`` like
    :class:`_Rectifier`: plain ``grad * (x > t)``, DeconvNet ``relu(grad)``, guided
    ``relu(grad) * (x > t)``."""

    @staticmethod
    def forward(ctx, x, threshold, value, state, inplace):  # type: ignore[override]
        mask = x > threshold
        if inplace:
            out = _aten.threshold_(x, threshold, value)
            ctx.mark_dirty(x)
        else:
            out = _aten.threshold(x, threshold, value)
        ctx.save_for_backward(mask)
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        rule = ctx.state.rule
        if rule == "deconvnet":
            g = grad.clamp_min(0)
        elif rule == "structural":
            g = grad
        elif rule == "guided":
            g = grad.clamp_min(0) * mask
        else:
            g = grad * mask
        return g, None, None, None, None


_TLS = threading.local()


def _active() -> RuleState | None:
    stack = getattr(_TLS, "stack", None)
    return stack[-1] if stack else None


def _needs(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()


def _is_zero(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0


def _positive_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)


def _module_in_stack(model: nn.Module) -> str:
    """Name of the innermost module of ``model`` whose ``forward`` is on the call stack."""
    names = {id(m): n for n, m in model.named_modules()}
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            name = names[id(owner)]
            return repr(name) if name else f"the forward of {type(owner).__name__} itself"
        frame = frame.f_back
    return "(not found: called outside the model's modules)"


def _uncovered(state: RuleState, what: str) -> None:
    where = _module_in_stack(state.model)
    raise UnsupportedActivationError(
        f"module {where} of {type(state.model).__name__} applies {what}, an activation the "
        f"{state.rule!r} rule cannot cover (it is defined for ReLU, ReLU6 and Threshold only). "
        "Use "
        "saliency or Grad-CAM for this model, or pass strict=False to let plain gradients "
        "through such activations."
    )


def _rectify(orig: Callable, x: Any, lo: float, hi: float | None, inplace: bool, args, kwargs):
    state = _active()
    if state is None or not _needs(x):
        return orig(*args, **kwargs)
    state.rectifiers += 1
    return _Rectifier.apply(x, None if hi is None else float(hi), state, inplace)


def _wrap_relu(orig: Callable, inplace_always: bool = False) -> Callable:
    def relu(input, *args, **kwargs):
        inplace = inplace_always or bool(kwargs.get("inplace", args[0] if args else False))
        return _rectify(orig, input, 0.0, None, inplace, (input, *args), kwargs)

    return relu


def _wrap_relu6(orig: Callable) -> Callable:
    def relu6(input, inplace=False):
        return _rectify(orig, input, 0.0, 6.0, bool(inplace), (input, inplace), {})

    return relu6


def _wrap_threshold(orig: Callable, inplace_always: bool = False) -> Callable:
    def threshold(input, threshold, value, *args, **kwargs):
        state = _active()
        if state is None or not _needs(input):
            return orig(input, threshold, value, *args, **kwargs)
        inplace = inplace_always or bool(kwargs.get("inplace", args[0] if args else False))
        state.rectifiers += 1
        return _Threshold.apply(input, float(threshold), float(value), state, inplace)

    return threshold


def _wrap_hardtanh(orig: Callable, inplace_always: bool = False) -> Callable:
    def hardtanh(input, min_val=-1.0, max_val=1.0, *args, **kwargs):
        state = _active()
        if state is not None and _needs(input) and not _is_zero(min_val):
            if state.strict and state.rule in ("deconvnet", "guided"):
                _uncovered(state, f"hardtanh({min_val}, {max_val})")
        if not _is_zero(min_val):
            return orig(input, min_val, max_val, *args, **kwargs)
        inplace = inplace_always or bool(kwargs.get("inplace", args[0] if args else False))
        return _rectify(
            orig, input, 0.0, max_val, inplace, (input, min_val, max_val, *args), kwargs
        )

    return hardtanh


def _wrap_clamp(orig: Callable, inplace: bool = False, min_only: bool = False) -> Callable:
    """``clamp(x, min=0[, max>0])`` is a rectifier; any other clamp runs unchanged."""

    def clamp(input, *args, **kwargs):
        if min_only:
            lo = args[0] if args else kwargs.get("min")
            hi = None
            rest = set(kwargs) - {"min"}
        else:
            lo = args[0] if args else kwargs.get("min")
            hi = args[1] if len(args) > 1 else kwargs.get("max")
            rest = set(kwargs) - {"min", "max"}
        if rest or not _is_zero(lo) or not _positive_or_none(hi):
            return orig(input, *args, **kwargs)
        return _rectify(orig, input, 0.0, hi, inplace, (input, *args), kwargs)

    return clamp


def _wrap_uncovered(orig: Callable, what: str) -> Callable:
    def activation(input, *args, **kwargs):
        state = _active()
        if (
            state is not None
            and state.strict
            and state.rule in ("deconvnet", "guided")
            and _needs(input)
        ):
            _uncovered(state, what)
        return orig(input, *args, **kwargs)

    return activation


def _wrap_max_pool(orig: Callable, adaptive: bool = False) -> Callable:
    """Under the internal "structural" rule, max pooling becomes average pooling (every input of
    a window counts); otherwise the ordinary max pooling (its backward is max-unpooling)."""

    def max_pool(input, *args, **kwargs):
        state = _active()
        if state is None or state.rule != "structural":
            return orig(input, *args, **kwargs)
        if adaptive:
            if kwargs.get("return_indices") or (len(args) > 1 and args[1]):
                raise NotImplementedError("receptive fields through return_indices=True pooling")
            size = args[0] if args else kwargs["output_size"]
            return F.adaptive_avg_pool2d(input, size)
        names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
        p = dict(zip(names, args))
        p.update(kwargs)
        dil = p.get("dilation", 1)
        if (dil not in (1, (1, 1), [1, 1])) or p.get("return_indices", False):
            raise NotImplementedError(
                "receptive fields through dilated max pooling or return_indices=True are not "
                "supported"
            )
        return F.avg_pool2d(
            input,
            p["kernel_size"],
            p.get("stride") or None,
            p.get("padding", 0),
            ceil_mode=bool(p.get("ceil_mode", False)),
            count_include_pad=True,
        )

    return max_pool


_UNCOVERED_F = (
    "silu",
    "gelu",
    "elu",
    "selu",
    "celu",
    "leaky_relu",
    "prelu",
    "rrelu",
    "hardswish",
    "hardsigmoid",
    "mish",
    "softplus",
    "logsigmoid",
    "softsign",
    "tanhshrink",
)


def _uncovered_factory(what: str) -> Callable[[Callable], Callable]:
    return lambda orig: _wrap_uncovered(orig, what)


def _patch_table() -> list[tuple[Any, str, Callable[[Callable], Callable]]]:
    T = torch.Tensor
    table: list[tuple[Any, str, Callable[[Callable], Callable]]] = [
        (F, "relu", _wrap_relu),
        (F, "relu_", lambda o: _wrap_relu(o, True)),
        (torch, "relu", _wrap_relu),
        (torch, "relu_", lambda o: _wrap_relu(o, True)),
        (T, "relu", _wrap_relu),
        (T, "relu_", lambda o: _wrap_relu(o, True)),
        (F, "relu6", _wrap_relu6),
        (F, "threshold", _wrap_threshold),
        (F, "threshold_", lambda o: _wrap_threshold(o, True)),
        (torch, "threshold", _wrap_threshold),
        (torch, "threshold_", lambda o: _wrap_threshold(o, True)),
        (F, "hardtanh", _wrap_hardtanh),
        (F, "hardtanh_", lambda o: _wrap_hardtanh(o, True)),
        (torch, "clamp", _wrap_clamp),
        (torch, "clip", _wrap_clamp),
        (T, "clamp", _wrap_clamp),
        (T, "clip", _wrap_clamp),
        (T, "clamp_", lambda o: _wrap_clamp(o, inplace=True)),
        (torch, "clamp_min", lambda o: _wrap_clamp(o, min_only=True)),
        (T, "clamp_min", lambda o: _wrap_clamp(o, min_only=True)),
        (F, "max_pool2d", _wrap_max_pool),
        (F, "adaptive_max_pool2d", lambda o: _wrap_max_pool(o, adaptive=True)),
        (torch, "sigmoid", lambda o: _wrap_uncovered(o, "sigmoid")),
        (torch, "tanh", lambda o: _wrap_uncovered(o, "tanh")),
        (T, "sigmoid", lambda o: _wrap_uncovered(o, "sigmoid")),
        (T, "tanh", lambda o: _wrap_uncovered(o, "tanh")),
    ]
    for name in _UNCOVERED_F:
        table.append((F, name, _uncovered_factory(name)))
    return table


_PATCH_LOCK = threading.Lock()
_PATCH_USERS = 0
_SAVED: list[tuple[Any, str, bool, Any]] = []


def _install_patches() -> None:
    global _PATCH_USERS
    with _PATCH_LOCK:
        if _PATCH_USERS == 0:
            try:
                for owner, name, wrap in _patch_table():
                    own = name in vars(owner)
                    original = getattr(owner, name)
                    _SAVED.append((owner, name, own, original))
                    setattr(owner, name, wrap(original))
            except BaseException:
                _restore_patches()
                raise
        _PATCH_USERS += 1


def _restore_patches() -> None:
    for owner, name, own, original in reversed(_SAVED):
        if own:
            setattr(owner, name, original)
        else:
            with contextlib.suppress(AttributeError):
                delattr(owner, name)
    _SAVED.clear()


def _uninstall_patches() -> None:
    global _PATCH_USERS
    with _PATCH_LOCK:
        _PATCH_USERS -= 1
        if _PATCH_USERS == 0:
            _restore_patches()


def patches_installed() -> bool:
    """True while some :func:`relu_rule` block is active (tests: False afterwards)."""
    return bool(_SAVED)


@contextlib.contextmanager
def relu_rule(
    model: ModelHandle | nn.Module, rule: str, *, strict: bool = True
) -> Iterator[RuleState]:
    """Forward passes inside the block record rectifiers whose backward follows ``rule``.

    Parameters
    ----------
    model : ModelHandle or nn.Module
        The network (used to name a module in error messages).
    rule : str
        ``"gradient"`` (plain), ``"deconvnet"`` or ``"guided"``. It can be changed through the
        yielded :class:`RuleState` between two backward passes of one forward pass.
    strict : bool
        With ``"deconvnet"`` / ``"guided"``, an activation the rule cannot cover (SiLU, GELU,
        ELU, LeakyReLU, PReLU, Hardswish, sigmoid, tanh, hardtanh not starting at 0...) raises
        :class:`UnsupportedActivationError` naming the module. ``False`` lets plain gradients
        through them instead.

    Covered: ``nn.ReLU`` / ``nn.ReLU6`` / ``nn.Threshold`` modules (also ``inplace=True``;
    ``Threshold(t, v)`` is a rectifier whose forward mask is ``x > t``), and ``F.relu``,
    ``F.relu6``, ``F.hardtanh(x, 0, m)``, ``torch.relu``, ``x.relu()``, ``x.clamp(min=0)``
    (and their in-place forms) called inside ``forward``. Max pooling and convolutions need no
    rule: their ordinary backward is max-unpooling through the forward switches and the
    transposed filters. The rule acts only in the thread that entered the block; the wrapped
    functions are restored when the last block exits, also after errors. Not seen: a rectifier
    function bound under another name before the block (``from torch.nn.functional import relu``
    at import time) or one written as ``torch.maximum(x, zeros)``: those keep plain gradients.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(inplace=True))
    >>> x = torch.randn(1, 1, 4, 4, requires_grad=True)
    >>> with relu_rule(net, "deconvnet"):
    ...     g, = torch.autograd.grad(net(x).sum(), x)
    >>> g.shape
    torch.Size([1, 1, 4, 4])
    """
    net = model.net if isinstance(model, ModelHandle) else model
    state = RuleState(net, rule, strict)
    stack = getattr(_TLS, "stack", None)
    if stack is None:
        stack = _TLS.stack = []
    _install_patches()
    stack.append(state)
    try:
        yield state
    finally:
        stack.remove(state)
        _uninstall_patches()


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
    rules = contextlib.nullcontext() if plain else relu_rule(handle, rule, strict=strict)
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
    g, _, _ = _backward(handle, images, target, "gradient")
    assert g is not None
    return g


def deconvnet(handle: ModelHandle, images: torch.Tensor, target: Any) -> torch.Tensor:
    """DeconvNet projection of the target back to the input (Zeiler & Fergus 2014).

    Rectifiers pass ``relu`` of the signal coming from above, max-pooling unpools through the
    forward switches, convolutions apply transposed filters. Same arguments and output as
    :func:`saliency`; raises :class:`UnsupportedActivationError` for models with activations
    other than ReLU/ReLU6.

    Examples
    --------
    >>> deconvnet(handle, x, objectives.channel("_blocks.4", 7))        # doctest: +SKIP
    """
    g, _, _ = _backward(handle, images, target, "deconvnet")
    assert g is not None
    return g


def guided_backprop(handle: ModelHandle, images: torch.Tensor, target: Any) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): DeconvNet's rule masked by the
    forward sign of each rectifier. Same arguments and output as :func:`saliency`.

    Examples
    --------
    >>> guided_backprop(handle, x, 281)                                # doctest: +SKIP
    """
    g, _, _ = _backward(handle, images, target, "guided")
    assert g is not None
    return g


def default_cam_layer(handle: ModelHandle) -> str:
    """The last layer with a spatial output larger than 1x1 (conv, activation, pool or block):
    Grad-CAM's usual choice, the last convolutional feature maps."""
    layers = [li for li in handle.conv_layers() if (li.height or 1) * (li.width or 1) > 1]
    if not layers:
        raise ValueError(f"model {handle.name!r} has no layer with a spatial output for Grad-CAM")
    return max(layers, key=lambda li: li.order).name


def _check_cam_layer(handle: ModelHandle, layer: str | None, obj: Objective) -> str:
    name = layer or default_cam_layer(handle)
    info = handle.layer(name)
    if not info.spatial or (info.height or 1) * (info.width or 1) == 1:
        spatial = [
            li.name for li in handle.conv_layers() if (li.height or 1) * (li.width or 1) > 1
        ][-5:]
        raise ValueError(
            f"Grad-CAM needs a layer with a spatial output larger than 1x1; {name!r} has none. "
            f"Try one of: "
            f"{', '.join(spatial)}"
        )
    for hidden in obj.hidden_layers:
        if handle.layer(hidden).order < info.order:
            raise ValueError(
                f"Grad-CAM layer {name!r} runs after the target's layer {hidden!r}: the target "
                "does not depend on it. Choose a layer at or before the target's."
            )
    return name


def _cam(act: torch.Tensor, grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


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
    x = _as_input(handle, images)
    name = _check_cam_layer(handle, layer, as_target(handle, target, x.shape[0]))
    _, act, ga = _backward(handle, x, target, "gradient", cam_layer=name)
    assert act is not None and ga is not None
    return _cam(act, ga, (x.shape[-2], x.shape[-1]))


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
    x = _as_input(handle, images)
    name = _check_cam_layer(handle, layer, as_target(handle, target, x.shape[0]))
    gx, act, ga = _backward(handle, x, target, "guided", cam_layer=name, guided_input=True)
    assert gx is not None and act is not None and ga is not None
    return gx * _cam(act, ga, (x.shape[-2], x.shape[-1]))


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
