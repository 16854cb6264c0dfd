"""Network inversion: time per step against the floor; UpconvNet decoder throughput and memory.

Prints two tables.

1. Regularized inversion (Mahendran & Vedaldi preset): for each layer and size, the median time of
   one step of ours, of the floor (forward up to the layer + backward to the input only, same
   input), of a full-network forward+backward, and the ratios (target: ours/floor <= 1.10).
   Measurements are interleaved (floor, ours, full, floor, ours...) so that load from other
   processes hits all alike.
2. UpconvNet decoder: training throughput (images/s, features computed on the fly), decode time
   per image (batched and single), the feature-extraction share, and the memory peak (CUDA: the
   allocator's peak; CPU: the process's resident-set growth).

    python benchmarks/bench_inversion.py                      # CPU, the default model
    python benchmarks/bench_inversion.py --device cuda --sizes 224 --batch 32

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from timing import floor_step, sync, timeit

from cnnvis_widgets import load_model
from cnnvis_widgets.core import inversion as inv
from cnnvis_widgets.core import upconv
from cnnvis_widgets.data import sample_image


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def inversion_table(h, args) -> None:
    rows = []
    image = sample_image("cat")
    configs = [
        ("mahendran", {}),
        ("no priors, no jitter", dict(alpha_weight=0.0, tv_weight=0.0, jitter=0)),
    ]
    for size in [int(s) for s in args.sizes.split(",")]:
        for layer in args.layers.split(","):
            floor = floor_step(h, layer, 1, size, frozen=False)
            full = floor_step(h, None, 1, size, frozen=False)
            gens = []
            for _, over in configs:
                settings = inv.InversionSettings(steps=100_000).update(**over)
                gens.append(inv.invert_steps(h, image, layer, size=size, settings=settings))
            fns = [lambda g=g: next(g) for g in gens]
            tf, tfull = [], []
            to: list[list[float]] = [[] for _ in fns]
            # the floor computes no weight gradients either: parameters frozen for all
            with h.frozen():
                for fn in (floor, full, *fns):
                    timeit(fn, h.device, 3)  # warm-up
                for _ in range(args.rounds):
                    tf.append(timeit(floor, h.device, args.n))
                    for k, fn in enumerate(fns):
                        to[k].append(timeit(fn, h.device, args.n))
                    tfull.append(timeit(full, h.device, args.n))
            for g in gens:
                g.close()
            f, fu = statistics.median(tf), statistics.median(tfull)
            for (label, _), times in zip(configs, to):
                rows.append((size, layer, label, statistics.median(times), f, fu))
    print()
    print("regularized inversion, one image (first three quarters: jitter on)")
    print(
        f"{'size':>4}  {'layer':11s} {'configuration':21s} {'ours ms':>8} {'floor ms':>9} "
        f"{'full ms':>8} {'ours/floor':>10} {'ours/full':>9}"
    )
    for size, layer, label, o, f, fu in rows:
        print(
            f"{size:>4}  {layer:11s} {label:21s} {o * 1e3:8.2f} {f * 1e3:9.2f} {fu * 1e3:8.2f} "
            f"{o / f:10.3f} {o / fu:9.3f}"
        )
    # the strip: several layers as one batch against one run per layer, interleaved
    size = int(args.sizes.split(",")[0])
    layers = args.layers.split(",")
    with h.frozen():
        batched = inv.invert_layers_steps(
            h, image, layers, size=size, settings=inv.InversionSettings(steps=100_000)
        )
        separate = [
            inv.invert_steps(h, image, n, size=size, settings=inv.InversionSettings(steps=100_000))
            for n in layers
        ]
        one = lambda: next(batched)  # noqa: E731
        each = lambda: [next(g) for g in separate]  # noqa: E731
        timeit(one, h.device, 2), timeit(each, h.device, 2)
        tb, ts = [], []
        for _ in range(args.rounds):
            tb.append(timeit(one, h.device, args.n))
            ts.append(timeit(each, h.device, args.n))
        batched.close()
        for g in separate:
            g.close()
    b, sep = statistics.median(tb), statistics.median(ts)
    print(
        f"\nstrip of {len(layers)} layers at {size} px: one batch {b * 1e3:.1f} ms/step, "
        f"one run per layer {sep * 1e3:.1f} ms/step, ratio {b / sep:.3f}"
    )


def decoder_table(h, args) -> None:
    layer = args.decoder_layer
    size = args.decoder_size
    dev = h.device
    dec = upconv.UpconvDecoder.for_layer(h, layer, size=size).to(dev)
    n_params = sum(p.numel() for p in dec.parameters())
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_mb()
    gen = upconv.train_decoder_steps(
        h,
        layer,
        None,
        steps=100_000,
        batch_size=args.batch,
        size=size,
        save=False,
        resume=False,
        sample_every=100_000,
    )
    for _ in range(3):
        next(gen)  # warm-up
    sync(dev)
    t = time.perf_counter()
    for _ in range(args.train_steps):
        next(gen)
    sync(dev)
    train_s = (time.perf_counter() - t) / args.train_steps
    gen.close()
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _rss_mb() - rss0
    # the floor of one training step: the frozen network's features alone
    x = torch.rand(args.batch, h.in_channels, size, size, device=dev)
    feats = lambda: inv.layer_features(h, x, layer)  # noqa: E731
    feat_s = statistics.median(timeit(feats, dev, 3) for _ in range(3))
    phi = feats()[layer]
    dec.eval()
    dec_b = statistics.median(timeit(lambda: dec.decode(phi), dev, 5) for _ in range(3))
    dec_1 = statistics.median(timeit(lambda: dec.decode(phi[:1]), dev, 5) for _ in range(3))
    print()
    print(
        f"UpconvNet decoder for {layer} ({h.layer(layer).channels} ch), {size} px, "
        f"{n_params / 1e6:.2f} M parameters, batch {args.batch}, device {dev}"
    )
    print(f"{'figure':40s} {'value':>12}")
    print(f"{'training throughput (images/s)':40s} {args.batch / train_s:12.1f}")
    print(f"{'training step (ms)':40s} {train_s * 1e3:12.1f}")
    print(f"{'  of which features, no grad (ms)':40s} {feat_s * 1e3:12.1f}")
    print(f"{'decode, per image in a batch (ms)':40s} {dec_b / args.batch * 1e3:12.2f}")
    print(f"{'decode, one image (ms)':40s} {dec_1 * 1e3:12.2f}")
    label = "memory peak, CUDA allocator (MiB)" if dev.type == "cuda" else "RSS growth (MiB)"
    print(f"{label:40s} {peak:12.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--layers", default="_blocks.1,_blocks.3,_blocks.8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=8, help="steps per timed block")
    ap.add_argument("--decoder-layer", default="_blocks.3")
    ap.add_argument("--decoder-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=10)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    h = load_model("efficientnet_lite0", device=args.device)
    print(f"device {h.device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    inversion_table(h, args)
    decoder_table(h, args)


if __name__ == "__main__":
    main()
