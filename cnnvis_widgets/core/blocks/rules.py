"""Backward rules at the rectifiers: one switch for saliency, DeconvNet and guided backprop.

Inside a :func:`relu_rule` block, the backward pass through every rectifier follows one rule:

* ``"gradient"``: the plain gradient (Simonyan et al. 2013, *saliency maps*);
* ``"deconvnet"``: the rectifier passes ``relu(incoming gradient)`` whatever its input was
  (Zeiler & Fergus 2014); max-pooling routes the signal through the switches recorded in the
  forward pass (its ordinary backward, i.e. max-unpooling) and convolutions apply their transposed
  filters (their ordinary backward);
* ``"guided"``: guided backpropagation (Springenberg et al. 2015), ``relu(incoming gradient)``
  masked by the forward sign as well.

An internal ``"structural"`` rule (identity backward; max pooling as average pooling) serves the
receptive fields of :mod:`cnnvis_widgets.core.topk`. The methods that use these rules live in
:mod:`cnnvis_widgets.core.attribution`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models.handle import ModelHandle

__all__ = [
    "RULES",
    "RuleState",
    "UnsupportedActivationError",
    "relu_rule",
    "patches_installed",
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
    switches : bool
        Max pooling unpools through the forward switches (True, Zeiler & Fergus) or, under the
        ``"deconvnet"`` / ``"guided"`` rules, spreads the signal over the whole pooling window
        (False: "DeconvNet without switches", the comparison of their section 2.1).
    """

    def __init__(self, model: nn.Module, rule: str, strict: bool, switches: bool = True) -> None:
        self.model = model
        self._rule = ""
        self.rule = rule
        self.strict = strict
        self.rectifiers = 0
        self.switches = bool(switches)

    @property
    def rule(self) -> str:
        return self._rule

    @rule.setter
    def rule(self, value: str) -> None:
        if value not in RULES + _INTERNAL_RULES:
            raise ValueError(f"unknown rule {value!r}: use one of {', '.join(RULES)}")
        self._rule = value


_aten = torch.ops.aten  # the operators themselves: never the wrapped Python functions


def _by_rule(rule: str, grad: torch.Tensor, plain: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The gradient a rectifier passes back under ``rule``, given the incoming ``grad`` and its
    ordinary backward ``plain()``: DeconvNet ``relu(grad)``, structural ``grad`` (every path
    counts), guided ``relu(plain())``, gradient ``plain()``."""
    if rule == "deconvnet":
        return grad.clamp_min(0)
    if rule == "structural":
        return grad
    g = plain()
    return g.clamp_min_(0) if rule == "guided" else g


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
        hi = ctx.hi

        def plain() -> torch.Tensor:  # PyTorch's own backward kernels
            if hi is None:
                return _aten.threshold_backward(grad, out, 0.0)
            return _aten.hardtanh_backward(grad, out, 0.0, hi)

        return _by_rule(ctx.state.rule, grad, plain), None, None, None


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
        g = _by_rule(ctx.state.rule, grad, lambda: grad * mask)
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


class _UnpoolWithoutSwitches(torch.autograd.Function):
    """Max pooling forward; backward places each window's signal on *every* position of the
    window (nearest-neighbour unpooling; summed where windows overlap), not only where the
    maximum was: what DeconvNet does without the switches."""

    @staticmethod
    def forward(ctx, x, orig, kernel_size, stride, padding, ceil_mode):  # type: ignore[override]
        ctx.shape = x.shape
        ctx.pool = (kernel_size, stride, padding, ceil_mode)
        return orig(x, kernel_size, stride, padding, 1, ceil_mode=ceil_mode)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        k, stride, padding, ceil_mode = ctx.pool
        kh, kw = (k, k) if isinstance(k, int) else k
        with torch.enable_grad():
            z = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device, requires_grad=True)
            y = F.avg_pool2d(z, k, stride, padding, ceil_mode=ceil_mode, count_include_pad=True)
            (gx,) = torch.autograd.grad(y, z, grad)
        return gx * (kh * kw), None, None, None, None, None


def _wrap_max_pool(orig: Callable, adaptive: bool = False) -> Callable:
    """Under the internal "structural" rule, max pooling becomes average pooling (every input of
    a window counts); with ``switches=False`` under the DeconvNet / guided rules it unpools
    without the switches (:class:`_UnpoolWithoutSwitches`); otherwise the ordinary max pooling
    (its backward is max-unpooling through the switches)."""

    def max_pool(input, *args, **kwargs):
        state = _active()
        if state is not None and not state.switches and state.rule in ("deconvnet", "guided"):
            if _needs(input):
                return _without_switches(orig, adaptive, input, args, kwargs)
            return orig(input, *args, **kwargs)
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


def _without_switches(orig: Callable, adaptive: bool, input: Any, args: tuple, kwargs: dict):
    if adaptive:
        raise NotImplementedError("DeconvNet without switches through adaptive max pooling")
    names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
    p = dict(zip(names, args))
    p.update(kwargs)
    if p.get("dilation", 1) not in (1, (1, 1), [1, 1]) or p.get("return_indices", False):
        raise NotImplementedError(
            "DeconvNet without switches through dilated max pooling or return_indices=True"
        )
    k = p["kernel_size"]
    return _UnpoolWithoutSwitches.apply(
        input, orig, k, p.get("stride") or k, p.get("padding", 0), bool(p.get("ceil_mode", False))
    )


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
    """(owner, name, wrapper factory) of every function patched: the rectifiers on each of
    ``torch.nn.functional``, ``torch`` and ``torch.Tensor`` that has them, max pooling, and the
    activations no rule covers."""
    T = torch.Tensor
    both, every = (torch, T), (F, torch, T)
    return [
        *[(owner, "relu", _wrap_relu) for owner in every],
        *[(owner, "relu_", lambda o: _wrap_relu(o, True)) for owner in every],
        (F, "relu6", _wrap_relu6),
        *[(owner, "threshold", _wrap_threshold) for owner in (F, torch)],
        *[(owner, "threshold_", lambda o: _wrap_threshold(o, True)) for owner in (F, torch)],
        (F, "hardtanh", _wrap_hardtanh),
        (F, "hardtanh_", lambda o: _wrap_hardtanh(o, True)),
        *[(owner, name, _wrap_clamp) for owner in both for name in ("clamp", "clip")],
        (T, "clamp_", lambda o: _wrap_clamp(o, inplace=True)),
        *[(owner, "clamp_min", lambda o: _wrap_clamp(o, min_only=True)) for owner in both],
        (F, "max_pool2d", _wrap_max_pool),
        (F, "adaptive_max_pool2d", lambda o: _wrap_max_pool(o, adaptive=True)),
        *[
            (owner, name, _uncovered_factory(name))
            for owner in both
            for name in ("sigmoid", "tanh")
        ],
        *[(F, name, _uncovered_factory(name)) for name in _UNCOVERED_F],
    ]


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
    model: ModelHandle | nn.Module, rule: str, *, strict: bool = True, switches: bool = True
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
    switches : bool
        ``False``: under ``"deconvnet"`` / ``"guided"``, max pooling unpools without the forward
        switches (each window's signal goes to all of its positions); the forward pass is
        unchanged. Moot for a model without max pooling.

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
    state = RuleState(net, rule, strict, switches)
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
