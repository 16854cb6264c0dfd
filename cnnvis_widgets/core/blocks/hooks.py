"""Forward hooks that capture layer outputs: always removed, thread-aware, in-place safe."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ...models.convert import first_output
from ...models.handle import ModelHandle

__all__ = ["capture", "forward_to", "StopForward", "active_hook_count"]


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once the deepest needed layer has run."""


def active_hook_count(model: nn.Module | ModelHandle) -> int:
    """Number of forward/backward hooks currently registered on ``model`` (tests: must be 0).

    A :class:`ModelHandle` counts the hooks of its twin :attr:`ModelHandle.net` (where the
    library registers them) and of the user's module."""
    if isinstance(model, ModelHandle):
        return active_hook_count(model.model) + active_hook_count(model.net)
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n


@contextlib.contextmanager
def capture(
    handle: ModelHandle, layers: Iterable[str], *, stop_early: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the outputs of ``layers`` during forward passes inside the ``with`` block.

    The hooks act only for forward passes run by the thread that entered the block, so two
    threads sharing one model do not see each other's tensors. With ``stop_early`` the forward
    pass ends (``StopForward``) right after the last of ``layers`` in execution order has run;
    use :func:`forward_to` to run such a pass. Captured outputs are kept out of reach of later
    in-place operations (the network continues on a copy). Hooks are removed on exit, also
    after errors.

    Examples
    --------
    >>> with capture(handle, ["_blocks.3"]) as acts:      # doctest: +SKIP
    ...     handle.net(x)
    ...     acts["_blocks.3"].shape
    """
    names = list(dict.fromkeys(layers))
    infos = [handle.layer(n) for n in names]
    last = max(infos, key=lambda li: li.order).name if infos else None
    owner = threading.get_ident()
    acts: dict[str, torch.Tensor] = {}
    hooks = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: object, output: torch.Tensor):
            if threading.get_ident() != owner:
                return None
            acts[name] = output
            if stop_early and name == last:
                raise StopForward(name)
            # the rest of the network runs on a copy, so an in-place op after this layer
            # cannot corrupt the captured tensor (nor its autograd history)
            return output.clone()

        return hook

    # one check of the handle's twin for the whole block: the hooks and the forward passes of
    # forward_to use the same modules
    with handle.pinned():
        try:
            for name in names:
                hooks.append(handle.module(name).register_forward_hook(make_hook(name)))
            yield acts
        finally:
            for h in hooks:
                h.remove()


def forward_to(handle: ModelHandle, x: torch.Tensor, acts: dict, *, needs_logits: bool):
    """Run the model on ``x`` inside a :func:`capture` block; returns the logits or None.

    When the logits are not needed and the block was entered with ``stop_early``, the pass ends
    at the deepest captured layer (no wasted tail).
    """
    try:
        out = handle.net(x)
    except StopForward:
        if needs_logits:
            raise RuntimeError("forward stopped early although the logits are needed") from None
        return None
    return first_output(out)
