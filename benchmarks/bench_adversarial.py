"""Adversarial attacks: time per PGD step against the floor, side by side.

The floor of one PGD step is one bare forward pass of the network on a model-input batch plus
the backward pass of the cross-entropy to the input only (parameters frozen). Ours adds the
normalization, the per-image objective, the zero-gradient check, the signed (or normalized) update
and the exact projection. Measurements are interleaved step by step (floor, ours, floor, ours...) so
that load from other processes hits both alike; the table prints the median times, the median of
the paired ratios (the figure; target <= 1.05) and the ratio of the fastest steps (least disturbed
by other processes).

    python benchmarks/bench_adversarial.py                      # CPU, the default model
    python benchmarks/bench_adversarial.py --device cuda --batches 1,32 --sizes 224

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from timing import timeit

from cnnvis_widgets import load_model
from cnnvis_widgets.core import adversarial as A


def floor_step(handle, x_pixels: torch.Tensor, labels: torch.Tensor):
    """One bare forward + backward of the cross-entropy to the input (parameters frozen)."""
    x0 = handle.normalize(x_pixels).detach()

    def run() -> None:
        x = x0.clone().requires_grad_(True)
        out = handle.net(x)
        loss = F.cross_entropy(out, labels, reduction="sum")
        torch.autograd.grad(loss, x)

    return run


def ours_step(handle, x_pixels: torch.Tensor, norm: str, targeted: bool):
    eps = 4 / 255 if norm == "linf" else 1.0
    gen = A.pgd_steps(
        handle, x_pixels, eps, steps=100_000, norm=norm, target=281 if targeted else None, seed=0
    )
    return lambda: next(gen)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="224,128")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--pairs", type=int, default=20, help="timed (floor, ours) step pairs")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    h = load_model("efficientnet_lite0", device=args.device)
    dev = h.device
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    from cnnvis_widgets.data import sample_images

    photos = list(sample_images().values())
    rows = []
    with h.frozen():  # the floor, like ours, computes no weight gradients
        for size in [int(s) for s in args.sizes.split(",")]:
            for batch in [int(b) for b in args.batches.split(",")]:
                x = torch.cat([h.to_pixels(photos[i % len(photos)], size) for i in range(batch)])
                with torch.no_grad():
                    labels = h.net(h.normalize(x)).argmax(1)
                for label, norm, targeted in [
                    ("PGD L-inf, untargeted", "linf", False),
                    ("PGD L2, untargeted", "l2", False),
                    ("PGD L-inf, targeted", "linf", True),
                ]:
                    floor = floor_step(h, x, labels)
                    ours = ours_step(h, x, norm, targeted)
                    for fn in (floor, ours):
                        timeit(fn, dev, 2)  # warm-up
                    tf, to = [], []
                    for _ in range(args.pairs):
                        tf.append(timeit(floor, dev, 1))
                        to.append(timeit(ours, dev, 1))
                    paired = statistics.median(o / f for o, f in zip(to, tf))
                    fastest = min(to) / min(tf)
                    f, o = statistics.median(tf), statistics.median(to)
                    rows.append((size, batch, label, o, f, paired, fastest))
    print()
    print(
        f"{'size':>4} {'batch':>5}  {'configuration':24s} {'ours ms':>9} {'floor ms':>9} "
        f"{'ours/floor':>10} {'fastest':>8}"
    )
    for size, batch, label, o, f, paired, fastest in rows:
        print(
            f"{size:>4} {batch:>5}  {label:24s} {o * 1e3:9.2f} {f * 1e3:9.2f} {paired:10.3f} "
            f"{fastest:8.3f}"
        )
    print("\nfloor: bare forward + backward of the cross-entropy to the input (parameters frozen)")
    print("ours/floor: median of the paired step ratios; fastest: fastest ours / fastest floor")


if __name__ == "__main__":
    main()
