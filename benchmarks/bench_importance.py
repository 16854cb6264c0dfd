"""Ablation of every unit of a layer (issue 16): the shared forward against its floors.

For each (model, layer): the time of ``importance.ablate(handle, layer, "all", N images)``,
divided by

* **naive**: the same numbers with a plain forward of the whole network per removal
  (``share=False``: what ablation costs without sharing the forward below the layer);
* **above**: ``units x`` the time of the layers above the ablated one on the N images (a full
  forward minus a forward stopped at the layer): the floor of any method that re-runs only what a
  removal changes.

CPU time of the calling thread (load from other processes disturbs it far less than the wall
clock); on CUDA, wall clock. Never asserts: speed lives here, not in tests.

    python benchmarks/bench_importance.py                 # zf_mnist, 500 digits
    python benchmarks/bench_importance.py --lite0         # and EfficientNet-Lite0, 16 photos
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import sync

from cnnvis_widgets import load_model
from cnnvis_widgets.core import importance as imp
from cnnvis_widgets.core.blocks.hooks import capture, forward_to
from cnnvis_widgets.data import datasets


def clock(device: torch.device):
    return time.perf_counter if device.type == "cuda" else time.thread_time


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        c = clock(device)
        t = c()
        fn()
        sync(device)
        best = min(best, c() - t)
    return best


def passes(handle, layer: str, pixels: torch.Tensor, batch: int, device) -> tuple[float, float]:
    """Seconds of a full forward and of a forward stopped at ``layer``, over all ``pixels``."""

    def full():
        with torch.no_grad():
            for i in range(0, len(pixels), batch):
                handle.net(handle.normalize(pixels[i : i + batch]))

    def below():
        with torch.no_grad(), capture(handle, [layer], stop_early=True) as acts:
            for i in range(0, len(pixels), batch):
                forward_to(
                    handle, handle.normalize(pixels[i : i + batch]), acts, needs_logits=False
                )

    return timed(full, device, 3), timed(below, device, 3)


def bench(handle, layer: str, pixels: torch.Tensor, labels, batch: int, device) -> dict:
    units = handle.layer(layer).channels
    data = (pixels, labels)
    t_full, t_below = passes(handle, layer, pixels, batch, device)
    t_above = max(t_full - t_below, 1e-9)
    t_shared = timed(lambda: imp.ablate(handle, layer, "all", data, batch=batch), device)
    t_naive = timed(
        lambda: imp.ablate(handle, layer, "all", data, batch=batch, share=False), device
    )
    return {
        "model": handle.name,
        "layer": layer,
        "units": units,
        "N": len(pixels),
        "shared_s": t_shared,
        "naive_s": t_naive,
        "vs_naive": t_shared / t_naive,
        "vs_above": t_shared / (units * t_above),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=500, help="digits")
    ap.add_argument("--lite0", action="store_true", help="also EfficientNet-Lite0 (slow on CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    from cnnvis_widgets.data.digits import load_digits, train_test_split

    _, test = train_test_split(load_digits())
    x, y = test.tensors()
    x, y = x[: args.n].to(device), y[: args.n]
    h = load_model("zf_mnist", device=device)
    rows = [bench(h, layer, x, y, 100, device) for layer in ("features.relu1", "features.relu2")]
    if args.lite0:
        lite = load_model("efficientnet_lite0", device=device)
        ds = datasets.augmented_samples(n=16, size=224, seed=0)
        px = torch.cat([lite.to_pixels(img) for _, img in ds]).to(device)
        rows.append(bench(lite, "_blocks.14", px, None, 16, device))
    cols = ["model", "layer", "units", "N", "shared_s", "naive_s", "vs_naive", "vs_above"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(
            " | ".join(
                f"{r[c]:>14.3f}" if isinstance(r[c], float) else f"{r[c]!s:>14}" for c in cols
            )
        )
    print("vs_naive: shared / plain forward per removal; vs_above: shared / (units x layers above)")


if __name__ == "__main__":
    main()
