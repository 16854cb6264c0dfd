"""Class contributions: how much one unit feeds every logit (gradient x activation).

An attribution method read the other way round: not "which pixels explain this class" but "which
classes does this unit feed". All classes come from one forward-mode (JVP) pass; see
:func:`class_contributions`.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD

from ...models.handle import ModelHandle

__all__ = ["class_contributions"]


_JVP_LOCK = threading.Lock()
_JVP_READY = False


def _load_jvp_decompositions() -> None:
    """Import torch's forward-AD decompositions once, without its ``FutureWarning``.

    torch's first ``fwAD.make_dual`` imports ``torch._decomp.decompositions_for_jvp``, which calls
    the deprecated ``torch.jit.script`` and warns "`torch.jit.script` is deprecated" (a red cell
    output in a notebook). Only that warning, only for that import, is silenced here.
    """
    global _JVP_READY
    with _JVP_LOCK:
        if _JVP_READY:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
            )
            try:
                from torch._decomp import decompositions_for_jvp  # noqa: F401
            except ImportError:  # a torch without it: make_dual does not load it either
                pass
        _JVP_READY = True


def class_contributions(
    handle: ModelHandle, layer: str, unit: int, pixels: torch.Tensor
) -> torch.Tensor:
    """How much ``unit`` of ``layer`` feeds every logit, averaged over ``pixels``, ``(classes,)``.

    Gradient-based (first-order Taylor, "gradient x activation"): for each class ``c`` the sum
    over positions of ``a_u(y, x) * d logit_c / d a_u(y, x)``, i.e. the change of the logit
    predicted by the gradient when the unit is switched off. All classes come from **one**
    forward-mode pass (the activation map of the unit is the tangent), not one backward pass
    per class. When the layer reaches the logits through global average pooling and one linear
    layer this equals ``w[c, u] * mean(a_u)`` exactly (the weight-based reading). Models with an
    operation that forward-mode AD does not support fall back to the exact ablation difference
    ``logit(x) - logit(x with the unit zeroed)`` (two forward passes).
    """
    handle.check_unit(layer, int(unit))
    x = handle.normalize(pixels.to(handle.device, torch.float32))
    module = handle.module(layer)
    u = int(unit)

    def run(mode: str) -> torch.Tensor:
        def hook(mod: torch.nn.Module, inputs: Any, out: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros_like(out)
            mask[:, u] = 1.0
            if mode == "jvp":
                return fwAD.make_dual(out.detach(), out.detach() * mask)
            if mode == "ablate":
                return out * (1 - mask)
            return out

        h = module.register_forward_hook(hook)
        try:
            if mode == "jvp":
                _load_jvp_decompositions()
                with fwAD.dual_level():
                    logits = handle.logits(x)
                    tangent = fwAD.unpack_dual(logits).tangent
                    if tangent is None:
                        return torch.zeros(logits.shape[-1], device=logits.device)
                    return tangent.detach().float().mean(0)
            return handle.logits(x).detach().float()
        finally:
            h.remove()

    with torch.no_grad():
        try:
            return run("jvp").cpu()
        except (RuntimeError, NotImplementedError):
            full, ablated = run("plain"), run("ablate")
            return (full - ablated).mean(0).cpu()
