"""The eval-mode twin of a user's network: what every run of the library executes.

A run must never change the user's model: not its mode, its BatchNorm statistics, its
``requires_grad`` flags or its hooks, not even for a moment seen from another thread. So no run
executes the user's module itself. It executes a *structural twin*: a tree of shallow copies of
the user's modules (a new instance of each submodule's class sharing its ``__dict__`` entries,
memoized by identity so a module used twice is one twin) in which

* every module has ``training=False`` (BatchNorm uses its running statistics and never updates
  them, Dropout is off);
* every parameter is a *detached alias* of the user's parameter (``nn.Parameter(p.detach(),
  requires_grad=False)``): same storage and same version counter, so an optimizer step, an
  in-place edit or ``load_state_dict`` is seen at once, but autograd never records a path into
  the user's weights, so no backward pass can write their ``.grad`` and the user's
  ``requires_grad`` flags are never read or written (input gradients cost what they cost with a
  frozen model);
* buffers are the user's own tensors, in the twin's own ``_buffers`` dict;
* the dicts of submodules, parameters, buffers and hooks are the twin's own: hooks the library
  registers (captures, rules) are never on the user's modules, and the user's own hooks, copied
  when the twin is built, still fire.

:func:`signature` is a cheap description of the user's tree (submodule identities, parameter
identities and storage, buffer identities, hook keys); the handle rebuilds the twin when it
changed (a submodule replaced, ``model.to()``/``.half()``, a new hook...).

Modules that cannot be shallow-copied (TorchScript modules, or any copy error) are handled by a
fallback: a ``copy.deepcopy`` of the whole network in eval mode, with a warning (memory doubles;
it is copied again whenever a weight changes). A network that cannot be deep-copied either runs
as it is only when it is already in eval mode; otherwise a clear error says what to do.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

__all__ = ["build_twin", "signature", "members", "TwinError"]


class TwinError(RuntimeError):
    """The network can be neither shallow- nor deep-copied and is in train mode."""


def _hook_dict_names(module: nn.Module) -> list[str]:
    return [k for k, v in vars(module).items() if isinstance(v, dict) and "hook" in k]


#: The hook dicts every module has (checked for changes before each run).
_HOOK_NAMES = tuple(_hook_dict_names(nn.Module()))
_HOOK_SET = frozenset(_HOOK_NAMES)


def _has_script(root: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in root.modules())


def _shallow_twin(root: nn.Module) -> nn.Module:
    modules: dict[int, nn.Module] = {}
    tensors: dict[int, nn.Parameter] = {}

    def alias(p: torch.Tensor | None) -> torch.Tensor | None:
        if p is None:
            return None
        a = tensors.get(id(p))
        if a is None:
            a = nn.Parameter(p.detach(), requires_grad=False)
            tensors[id(p)] = a
        return a

    def twin(m: nn.Module) -> nn.Module:
        got = modules.get(id(m))
        if got is not None:
            return got
        # a shallow copy of the module's state (all of it lives in __dict__), made without
        # __reduce__/__getstate__, which some modules refuse (parametrized ones: weight_norm)
        cls = type(m)
        t = cls.__new__(cls)
        if t is m or not hasattr(t, "__dict__"):
            raise TypeError(f"{cls.__name__} cannot be shallow-copied")
        t.__dict__.update(m.__dict__)
        modules[id(m)] = t
        d = t.__dict__
        d["training"] = False
        d["_parameters"] = {k: alias(p) for k, p in m._parameters.items()}
        d["_buffers"] = dict(m._buffers)
        for name in _hook_dict_names(m):
            d[name] = type(vars(m)[name])(vars(m)[name])
        d["_modules"] = {k: (None if c is None else twin(c)) for k, c in m._modules.items()}
        if isinstance(t, nn.RNNBase):  # its flat weight list points at the user's parameters
            t._init_flat_weights()
        return t

    return twin(root)


def _frozen_deepcopy(root: nn.Module) -> nn.Module:
    t = copy.deepcopy(root).eval()
    for p in t.parameters():
        p.detach_()  # a private copy: detaching it changes nothing of the user's
    return t


def build_twin(root: nn.Module, name: str = "model", quiet: bool = False) -> tuple[nn.Module, str]:
    """The module runs execute for ``root`` and how it was made (``"shallow"``, ``"deepcopy"``
    or ``"self"``). See the module docstring; ``quiet`` skips the fallback's warning (given
    once per handle)."""
    reason = "it contains TorchScript modules" if _has_script(root) else ""
    if not reason:
        try:
            return _shallow_twin(root), "shallow"
        except Exception as exc:  # noqa: BLE001 - any failure: the documented fallback
            reason = f"a shallow copy failed ({type(exc).__name__}: {exc})"
    try:
        t = _frozen_deepcopy(root)
        if not quiet:
            warnings.warn(
                f"model {name!r}: {reason}, so runs use a deep copy of it in eval mode (twice "
                "the memory; copied again whenever its weights change). Your model itself is "
                "not changed.",
                RuntimeWarning,
                stacklevel=3,
            )
        return t, "deepcopy"
    except Exception as exc:  # noqa: BLE001
        if not any(m.training for m in root.modules()):
            warnings.warn(
                f"model {name!r}: {reason} and a deep copy failed ({type(exc).__name__}); runs "
                "execute your module itself (it is in eval mode; keep it so while a run goes)",
                RuntimeWarning,
                stacklevel=3,
            )
            return root, "self"
        raise TwinError(
            f"model {name!r} cannot be copied ({reason}; deepcopy: {type(exc).__name__}: {exc}) "
            "and is in train mode: runs must not change its mode, so call model.eval() first"
        ) from exc


def signature(root: nn.Module, kind: str) -> tuple[Any, ...]:
    """What the twin of ``root`` depends on; a different value means: rebuild it.

    ``kind="shallow"`` or ``"deepcopy"``: submodules, parameter objects and their storage,
    buffer objects, the keys of non-empty hook dicts, and every other attribute's object (an
    attribute set on a user's module after the twin was built is seen: ``net.flag = True``).
    ``"self"``: nothing (always up to date). Objects are named by ``id``: the caller keeps them
    alive (:func:`members`) so that an id is never reused while the signature is held.
    """
    if kind == "self":
        return ()
    out: list[Any] = []
    add = out.append
    seen: set[int] = set()
    stack = [root]
    hooks = _HOOK_SET
    while stack:
        m = stack.pop()
        i = id(m)
        add(i)
        if i in seen:
            continue
        seen.add(i)
        for k, v in m.__dict__.items():
            if k == "_parameters":
                for pk, p in v.items():
                    add(pk)
                    if p is not None:
                        add(id(p))
                        add(p.data_ptr())
                        add(p.shape)
            elif k == "_buffers":
                for bk, b in v.items():
                    add(bk)
                    add(id(b))
            elif k == "_modules":
                add(len(v))
                stack.extend(c for c in reversed(v.values()) if c is not None)
            elif k in hooks:
                if v:
                    add(k)
                    add(tuple(v))
            elif k != "training":
                add(k)
                add(id(v))
    return tuple(out)


def members(root: nn.Module) -> list[Any]:
    """Every module, parameter, buffer and attribute value of ``root`` (held with a
    signature)."""
    out: list[Any] = list(root.modules())
    for m in list(out):
        out += list(m.__dict__.values())
        out += list(m._parameters.values()) + list(m._buffers.values())
    return out
