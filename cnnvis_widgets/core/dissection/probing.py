"""Probe images into a model, layer outputs out: the channel conversion of the colour probe
images and the forward hooks that hand each dissected layer's output over as it is computed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ...models.convert import first_output
from ...models.handle import ModelHandle
from ..blocks.hooks import StopForward


@contextlib.contextmanager
def _consume_outputs(handle: ModelHandle, layers: Sequence[str], consume: Any) -> Iterator[None]:
    """Forward hooks that hand each layer's output to ``consume(layer, output)`` as soon as it is
    computed (before any later in-place op can change it) and end the pass after the deepest
    layer. Only forward passes of the calling thread are seen; hooks are removed on exit."""
    owner = threading.get_ident()
    infos = [handle.layer(n) for n in layers]
    last = max(infos, key=lambda li: li.order).name
    hooks = []
    seen: set[str] = set()

    def make_hook(name: str) -> Any:
        def hook(module: torch.nn.Module, inputs: object, output: Any) -> None:
            if threading.get_ident() != owner or name in seen:
                return  # another thread's pass, or a module called twice: first call only
            seen.add(name)
            consume(name, first_output(output))
            if name == last:
                raise StopForward(name)

        return hook

    try:
        for name in dict.fromkeys(layers):
            hooks.append(handle.module(name).register_forward_hook(make_hook(name)))
        yield
    finally:
        for h in hooks:
            h.remove()


#: Weights of R, G, B in the grey image a one-channel model is shown (ITU-R BT.601 luma,
#: as PIL's ``convert("L")``).
LUMA = (0.299, 0.587, 0.114)


def probe_channels(handle: ModelHandle) -> int:
    """The model's input channel count, when the colour probe images can be given to it: 3
    (as drawn) or 1 (their luminance, :data:`LUMA`); ``ValueError`` for any other count."""
    c = int(handle.in_channels)
    if c not in (1, 3):
        raise ValueError(
            f"model {handle.name!r} takes {c} input channels; the probe images are colour "
            "(RGB) pictures, which dissection gives to models with 3 channels as they are and "
            "to models with 1 channel as their luminance. Wrap the model so that it takes "
            "RGB or grey images to dissect it"
        )
    return c


def to_model_channels(handle: ModelHandle, images: torch.Tensor) -> torch.Tensor:
    """Probe images ``(B, 3, S, S)`` (or grey ``(B, 1, S, S)``) as float32 pixels with the
    model's channel count: colour kept for 3-channel models, luminance (:data:`LUMA`) for
    1-channel ones, grey repeated for 3-channel ones."""
    x = images.to(torch.float32)
    c = probe_channels(handle)
    if x.shape[1] == c:
        return x
    if x.shape[1] == 3 and c == 1:
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(dim=1, keepdim=True)
    if x.shape[1] == 1 and c == 3:
        return x.expand(-1, 3, -1, -1)
    raise ValueError(f"the probe images have {x.shape[1]} channels, the model takes {c}")
