"""The sections of ``cnnvis report``: every method run on one model, from the core API.

Each section is ``fn(ctx, report)``; a method whose module is missing raises ImportError and the
report says so instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .core.imaging import make_grid
from .models import ModelHandle

__all__ = ["Context", "SECTIONS"]


@dataclass
class Context:
    """What every section gets: the model, the step budget and a progress-bar factory."""

    handle: ModelHandle
    steps: int = 128
    progress: Callable[..., Any] = lambda items, total, label: items
    quick: bool = False

    @property
    def size(self) -> int:
        return 64 if self.quick else 128

    def middle_layer(self) -> str:
        from .widgets.activation_max import default_layer

        return default_layer(self.handle)

    def early_layer(self) -> str:
        layers = self.handle.conv_layers()
        return layers[max(0, len(layers) // 6)].name


def model_section(ctx: Context, report: Any) -> None:
    h = ctx.handle
    n_params = sum(p.numel() for p in h.model.parameters())
    report.add_text(
        f"Model {h.name} ({h.weights}), {n_params / 1e6:.2f} M parameters, input "
        f"{h.in_channels}x{h.input_size[0]}x{h.input_size[1]}, device {h.device}."
    )
    rows = [
        {
            "layer": li.name,
            "kind": li.kind,
            "channels": li.channels,
            "size": f"{li.height}x{li.width}",
        }
        for li in h.conv_layers()
        if li.kind in ("block", "conv") and li.name.count(".") <= 1
    ]
    report.add_table(rows, ["layer", "kind", "channels", "size"], "Conv-like layers")


def activation_max_section(ctx: Context, report: Any) -> None:
    from .core import activation_max as am
    from .core import objectives as O

    layer = ctx.middle_layer()
    n = min(8, ctx.handle.layer(layer).channels)
    steps = list(
        ctx.progress(
            am.maximize_steps(
                ctx.handle,
                O.channel(layer, list(range(n))),
                batch=n,
                steps=ctx.steps,
                size=ctx.size,
            ),
            ctx.steps,
            "activation maximization",
        )
    )
    report.add_text(
        "Activation maximization (Olah et al. 2017 recipe: FFT parameterization, decorrelated "
        f"colour, transformation robustness): the images that most excite units 0-{n - 1} of "
        f"{layer}, optimized together as one batch of {n} for {len(steps)} steps."
    )
    report.add_image(
        make_grid(steps[-1].image.clamp(0, 1).cpu(), ncol=n), f"{layer}, units 0-{n - 1}"
    )
    if ctx.handle.class_names:
        idx = 281 if ctx.handle.num_outputs > 281 else 0
        r = am.maximize(ctx.handle, O.class_logit(idx), steps=ctx.steps, size=ctx.size + 32)
        report.add_image(r.image, f"Class model of '{ctx.handle.class_name(idx)}' (logit {idx})")


def _photo(ctx: Context) -> tuple[str, torch.Tensor]:
    from .data import sample_image

    return "cat", ctx.handle.preprocess(sample_image("cat"))


SECTIONS: list[tuple[str, Callable[[Context, Any], None]]] = [
    ("The model", model_section),
    ("Activation maximization", activation_max_section),
]
