"""Several layers' reconstructions as one batch: rows sorted by depth, dropped once matched.

:class:`LayerGroups` runs a batch whose row ``i`` is matched at ``layers[i]`` with one forward
pass per step, cutting a layer's rows from the batch right after that layer where the network
allows it (checked once on a probe batch), so a strip of layers costs about what separate runs
cost.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from ...models.handle import ModelHandle
from ..blocks.hooks import capture, forward_to

__all__ = ["LayerGroups"]


class LayerGroups:
    """Rows of a batch sorted by layer depth, and the forward pass that drops finished rows.

    Row ``i`` of the (sorted) batch is matched at ``layers[i]``. With ``shrink``, the rows of a
    layer are cut from the batch right after that layer has run, so the deeper part of the
    network only sees the rows that still need it: a strip of layers costs about what separate
    runs cost, in one pass.
    """

    def __init__(self, handle: ModelHandle, layers: list[str]) -> None:
        self.handle = handle
        self.order = sorted(range(len(layers)), key=lambda i: handle.layer(layers[i]).order)
        self.layers = [layers[i] for i in self.order]
        self.groups: list[tuple[str, int, int]] = []  # (layer, start, stop) in sorted rows
        for i, name in enumerate(self.layers):
            if self.groups and self.groups[-1][0] == name:
                self.groups[-1] = (name, self.groups[-1][1], i + 1)
            else:
                self.groups.append((name, i, i + 1))
        self.names = [g[0] for g in self.groups]
        self.shrink = False
        self.identity = self.order == list(range(len(layers)))
        self.inverse = torch.tensor(
            sorted(range(len(layers)), key=lambda i: self.order[i]), device=handle.device
        )
        # handle.normalize as one fused multiply-add, its constants built once (not every step)
        ones = torch.ones(1, handle.in_channels, 1, 1, device=handle.device)
        self._scale = 1.0 / (handle.denormalize(ones) - handle.denormalize(0 * ones))
        self._shift = handle.normalize(0 * ones)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space -> model input, the same map as ``handle.normalize``."""
        return torch.addcmul(self._shift, x, self._scale)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``x`` (sorted rows); returns ``{layer: features of that layer's rows}``."""
        h = self.handle
        owner = threading.get_ident()
        hooks = []
        with capture(h, self.names, stop_early=True) as acts:
            try:
                if self.shrink:
                    for name, start, stop in self.groups[:-1]:

                        def cut(module: Any, inputs: Any, out: torch.Tensor, n=stop - start):
                            if threading.get_ident() != owner:
                                return None
                            return out[n:]

                        hooks.append(h.module(name).register_forward_hook(cut))
                forward_to(h, self.normalize(x), acts, needs_logits=False)
            finally:
                for hook in hooks:
                    hook.remove()
            out = {}
            for name, start, stop in self.groups:
                a = acts[name]
                out[name] = a[: stop - start] if self.shrink else a[start:stop]
            return out

    def try_shrink(self, probe: torch.Tensor) -> None:
        """Turn shrinking on when it gives the same features as the full batch on ``probe``
        (it does not where a skip connection crosses a cut layer: then the batch stays whole)."""
        if len(self.groups) < 2:
            return
        with torch.no_grad():
            full = self.forward(probe)
            self.shrink = True
            try:
                cut = self.forward(probe)
                for name in self.names:
                    a, b = cut[name].float(), full[name].float()
                    if a.shape != b.shape or (a - b).norm() > 1e-3 * b.norm() + 1e-6:
                        self.shrink = False
            except Exception:  # noqa: BLE001 - any failure means: do not shrink
                self.shrink = False
