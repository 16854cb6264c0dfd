"""Atlas: time to fill one layer's AM grid (all units) against bare forward+backward batches.

Prints one table: the median wall time of filling the whole grid of a layer with
``core.atlas.layer_grid`` (cache off: every unit optimized, in batches of ``--batch``), the floor
(the same number of steps run as bare batches: forward up to the layer + backward to the input
only, parameters frozen, at the size the network sees on average with the lucid transforms, with
the same batch sizes), the full-network forward+backward, and the ratios. Runs are interleaved
(floor, ours, floor, ours...) so that load from other processes hits both alike. Target: ours /
floor <= 1.15.

    python benchmarks/bench_atlas.py                                  # CPU, the default model
    python benchmarks/bench_atlas.py --device cuda --layer _blocks.10 --batch 128 --size 128

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from timing import sync

from cnnvis_widgets import load_model
from cnnvis_widgets.core import atlas as A
from cnnvis_widgets.core.hooks import capture, forward_to


def floor_fill(handle, layer: str | None, chunks: list[int], steps: int, seen: int) -> float:
    """Bare forward (to ``layer``, or the whole network) + backward to the input, ``steps`` times
    per chunk of units; returns seconds."""
    xs = [torch.rand(n, handle.in_channels, seen, seen, device=handle.device) for n in chunks]
    sync(handle.device)
    t = time.perf_counter()
    with handle.frozen():
        for x0 in xs:
            for _ in range(steps):
                x = x0.clone().requires_grad_(True)
                if layer is None:
                    out = handle.net(handle.normalize(x))
                else:
                    with capture(handle, [layer], stop_early=True) as acts:
                        forward_to(handle, handle.normalize(x), acts, needs_logits=False)
                    out = acts[layer]
                out.float().mean().backward()
    sync(handle.device)
    return time.perf_counter() - t


def ours_fill(handle, layer: str, steps: int, size: int, batch: int) -> float:
    sync(handle.device)
    t = time.perf_counter()
    A.layer_grid(handle, layer, steps=steps, size=size, batch=batch, use_cache=False)
    sync(handle.device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layer", default="_blocks.4")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("CNNVIS_NUM_THREADS", "1")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("CNNVIS_CACHE_DIR", tempfile.mkdtemp(prefix="cnnvis-bench-"))
    h = load_model("efficientnet_lite0", device=args.device)
    n = h.layer(args.layer).channels
    chunks = [min(args.batch, n - i) for i in range(0, n, args.batch)]
    seen = args.size + 2 * 12 - 8 - 4  # what the network sees on average (lucid transforms)
    ours_fill(h, args.layer, 2, args.size, args.batch)  # warm-up
    floor_fill(h, args.layer, chunks, 2, seen)
    o, f, fu = [], [], []
    for _ in range(args.repeats):
        f.append(floor_fill(h, args.layer, chunks, args.steps, seen))
        o.append(ours_fill(h, args.layer, args.steps, args.size, args.batch))
        fu.append(floor_fill(h, None, chunks, args.steps, seen))
    mo, mf, mfu = statistics.median(o), statistics.median(f), statistics.median(fu)
    print(
        f"\nlayer grid fill: {h.name} {args.layer} ({n} units in batches {chunks}), "
        f"{args.steps} steps per batch, size {args.size} (network sees ~{seen}), "
        f"{args.device}, {args.threads} thread(s), median of {args.repeats}"
    )
    print(
        f"{'figure':28s} {'ours s':>8} {'floor s':>8} {'full s':>8} {'ours/floor':>10} "
        f"{'ours/full':>9} {'target':>7}"
    )
    print(
        f"{'fill one layer (all units)':28s} {mo:8.2f} {mf:8.2f} {mfu:8.2f} {mo / mf:10.3f} "
        f"{mo / mfu:9.3f} {'<=1.15':>7}"
    )


if __name__ == "__main__":
    main()
