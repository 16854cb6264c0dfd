"""Timing helpers shared by the benchmarks (``from timing import ...``: a benchmark runs as a
script, so this folder is on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from cnnvis_widgets.core.hooks import capture, forward_to


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(
    fn: Callable[[], object],
    device: torch.device,
    n: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Mean seconds of one call of ``fn`` over ``n`` calls, synchronized before and after."""
    sync(device)
    t = clock()
    for _ in range(n):
        fn()
    sync(device)
    return (clock() - t) / n


def floor_step(handle, layer: str | None, batch: int, size: int, *, frozen: bool):
    """One bare forward (to ``layer``, or the whole network) + backward to the input.

    ``frozen``: inside ``handle.frozen()`` (gradients to the input only, no weight gradients).
    """
    x0 = torch.rand(batch, handle.in_channels, size, size, device=handle.device)

    def forward_backward() -> None:
        x = x0.clone().requires_grad_(True)
        if layer is None:
            out = handle.net(x)
        else:
            with capture(handle, [layer], stop_early=True) as acts:
                forward_to(handle, x, acts, needs_logits=False)
            out = acts[layer]
        out.float().mean().backward()

    def run() -> None:
        if frozen:
            with handle.frozen():
                forward_backward()
        else:
            forward_backward()

    return run
