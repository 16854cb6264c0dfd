"""Activation maximization: time per optimization step against the floor, side by side.

Prints one table: for each configuration, the median time of one step of ours, of the floor
(forward up to the deepest layer the objective needs + backward to the input only, on the same
input the network sees), of a full-network forward+backward, and the ratios. Measurements are
interleaved (floor, ours, full, ours...) and each ratio is the median of the ratios of blocks
measured next to each other, so that load from other processes hits both alike.

Every configuration runs at each *nominal* size (the side of the optimized image, ``--sizes``)
and both fed sizes: ``fed=model`` (the default: the network sees the model's input size, 224 px
for Lite0) and ``fed=param`` (the network sees the image's own size plus the transforms'
padding). The Lucent peer (torch-lucent, if importable; never a dependency) runs the same unit
per nominal size at the same fed size as ours: its ``render_vis`` upsamples images under 224 px
to 224, and ``fixed_image_size`` sets the fed size otherwise.

    python benchmarks/bench_activation_max.py                # CPU, the default model
    python benchmarks/bench_activation_max.py --device cuda --batch 64 --sizes 224
    python benchmarks/bench_activation_max.py --device cuda --batch 64 --sizes 224 --read-every 1
    python benchmarks/bench_activation_max.py --device cuda --batch 64 --sizes 224 --compile default

The table also gives throughputs (images per second: batch / step time) and ``thr ours/floor``,
the batched AM step's throughput over the bare batched forward+backward's (issue 18's target:
at least 0.9). ``--read-every 1`` reads the loss back at every step (the loop before the lazy
losses: one host-device sync per step), ``--compile MODE`` runs the loss through
``torch.compile`` (``CNNVIS_COMPILE``), to compare with the defaults in another run.

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import timing
import torch
from timing import floor_step

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core import objectives as O


def ours_steps(handle, objective, batch: int, size: int, settings: am.AMSettings):
    gen = am.maximize_steps(
        handle, objective, preset="lucid", size=size, batch=batch, settings=settings
    )
    return lambda: next(gen)


# CPU: the process's CPU time (one torch thread), which the load of other processes on a shared
# machine barely changes; CUDA: wall time around synchronizations
_CLOCK = {"fn": time.perf_counter}


def timeit(fn, device, n: int) -> float:
    return timing.timeit(fn, device, n, clock=_CLOCK["fn"])


def widget_step_time(handle, layer, unit, size, steps: int) -> float:
    """Per-step time of the widget's run with a fake view acknowledging every frame."""
    from cnnvis_widgets.widgets.activation_max import ActivationMaximization

    w = ActivationMaximization(handle, layer=layer, unit=unit, size=size, steps=steps)
    frames = []

    def send(content, buffers=None):
        frames.append(content["seq"])
        w._on_front_msg(w, {"type": "ack", "seq": content["seq"]}, [])

    w.send = send
    t0 = _CLOCK["fn"]()
    w._on_front_msg(w, {"type": "ready"}, [])  # starts the run, as a browser view does
    w.wait()
    elapsed = _CLOCK["fn"]() - t0
    w.close()
    return elapsed / steps, len(frames)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layer", default="_blocks.8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=10, help="steps per timed block")
    ap.add_argument(
        "--clock",
        choices=["auto", "cpu", "wall"],
        default="auto",
        help="auto: process CPU time on the CPU (robust to other load), wall time on CUDA",
    )
    ap.add_argument("--read-every", type=int, default=None, help="CNNVIS_READ_EVERY for the run")
    ap.add_argument("--compile", default=None, help="CNNVIS_COMPILE for the run (a mode or 1)")
    args = ap.parse_args()
    if args.read_every is not None:
        os.environ["CNNVIS_READ_EVERY"] = str(args.read_every)
    if args.compile is not None:
        os.environ["CNNVIS_COMPILE"] = args.compile
    if args.device == "cpu":
        torch.set_num_threads(1)
    use_cpu_clock = args.clock == "cpu" or (args.clock == "auto" and args.device == "cpu")
    _CLOCK["fn"] = time.process_time if use_cpu_clock else time.perf_counter
    h = load_model("efficientnet_lite0", device=args.device)
    dev = h.device
    print(
        f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {args.batch}, layer {args.layer}, clock {_CLOCK['fn'].__name__}, "
        f"read every {os.environ.get('CNNVIS_READ_EVERY', 'default')}, "
        f"compile {os.environ.get('CNNVIS_COMPILE', 'off')}"
    )
    rows = []
    model_side = int(h.input_size[0])
    for size in [int(s) for s in args.sizes.split(",")]:
        units = list(range(args.batch))
        for fed_size in ("model", "param"):
            for label, obj, layer, transforms in [
                (
                    f"{args.layer} channel, no transforms",
                    O.channel(args.layer, units),
                    args.layer,
                    False,
                ),
                (
                    f"{args.layer} channel, lucid transforms",
                    O.channel(args.layer, units),
                    args.layer,
                    True,
                ),
                ("class logit, no transforms", O.class_logit([281] * args.batch), None, False),
            ]:
                s = am.AMSettings(steps=100_000, lr=0.05, fed_size=fed_size)
                if not transforms:
                    s.update(pad=0, jitter=0, scale=0.0, rotate=0.0, jitter2=0)
                # what the network sees (on average, for the transformed param size)
                fed = model_side if fed_size == "model" else size + (12 if transforms else 0)
                floor = floor_step(h, layer, args.batch, fed, frozen=True)
                full = floor_step(h, None, args.batch, fed, frozen=True)
                ours = ours_steps(h, obj, args.batch, size, s)
                for fn in (floor, full, ours):
                    timeit(fn, dev, 3)  # warm-up
                tf, tfull, to, r_of, r_ou = [], [], [], [], []
                for _ in range(args.rounds):
                    # floor, ours, full, ours: each ratio pairs blocks measured next to each other
                    tf.append(timeit(floor, dev, args.n))
                    o1 = timeit(ours, dev, args.n)
                    tfull.append(timeit(full, dev, args.n))
                    o2 = timeit(ours, dev, args.n)
                    to += [o1, o2]
                    r_of.append(o1 / tf[-1])
                    r_ou.append(o2 / tfull[-1])
                f, fu, o = statistics.median(tf), statistics.median(tfull), statistics.median(to)
                rows.append(
                    (size, fed, label, o, f, fu, statistics.median(r_of), statistics.median(r_ou))
                )
    print()
    print(
        f"{'nominal':>7} {'fed':>4}  {'configuration':40s} {'ours ms':>8} {'floor ms':>9} "
        f"{'full ms':>8} {'ours/floor':>10} {'ours/full':>9} {'ours img/s':>10} "
        f"{'floor img/s':>11} {'thr ours/floor':>14}"
    )
    for size, fed, label, o, f, fu, of, ou in rows:
        print(
            f"{size:>7} {fed:>4}  {label:40s} {o * 1e3:8.2f} {f * 1e3:9.2f} {fu * 1e3:8.2f} "
            f"{of:10.3f} {ou:9.3f} {args.batch / o:10.1f} {args.batch / f:11.1f} "
            f"{1.0 / of:14.3f}"
        )
    if args.batch == 1:
        print("\nwith the widget streaming frames (fake view acknowledging each frame):")
        for size in [int(s) for s in args.sizes.split(",")]:
            steps = 60
            per, nframes = widget_step_time(h, args.layer, 0, size, steps)
            core = statistics.median(
                timeit(
                    ours_steps(h, O.channel(args.layer, 0), 1, size, am.AMSettings(steps=100_000)),
                    dev,
                    args.n,
                )
                for _ in range(3)
            )
            print(
                f"{size:>4}  widget {per * 1e3:.2f} ms/step ({nframes} frames), core "
                f"{core * 1e3:.2f} ms/step, widget/core {per / core:.3f}"
            )
    lucent_rows(h, args, [r for r in rows if "lucid transforms" in r[2]])


def lucent_rows(h, args, rows) -> None:
    """Lucent's render_vis, the peer, on the same model, unit and nominal size, fed at the same
    size as ours (Lucent upsamples to 224 below 224 px; ``fixed_image_size`` otherwise)."""
    try:
        import kornia

        # torch-lucent 0.1.8 calls kornia's pre-0.6 top-level names; newer kornia keeps them in
        # kornia.geometry.transform (same functions)
        for name in ("get_rotation_matrix2d", "warp_affine"):
            if not hasattr(kornia, name):
                setattr(kornia, name, getattr(kornia.geometry.transform, name))
        from lucent.optvis import param, render
    except Exception as exc:  # noqa: BLE001 - optional peer
        print(f"\n(torch-lucent not importable: {type(exc).__name__}; no peer column)")
        return
    if h.device.type != "cpu" or args.batch != 1:
        return
    print(
        "\nLucent render_vis (peer), same unit, lucid-style param and transforms, same fed size "
        "(Lucent runs the whole network and computes weight gradients too):"
    )
    print(
        f"{'nominal':>7} {'fed':>4}  {'lucent ms':>9} {'ours ms':>8} {'floor ms':>9} "
        f"{'lucent/floor':>12} {'ours/floor':>10} {'lucent/ours':>11}"
    )
    lucent_layer = args.layer.replace(".", "_")
    for size, fed, _, ours, floor, _, of, _ in rows:
        n = args.n * 2

        def go(n=n, size=size, fed=fed):
            render.render_vis(
                h.model,
                f"{lucent_layer}:0",
                param_f=lambda: param.image(size),
                thresholds=(n,),
                show_image=False,
                progress=False,
                fixed_image_size=fed,
            )

        go(3)
        times = []
        clock = _CLOCK["fn"]
        for _ in range(max(1, args.rounds // 2)):
            t = clock()
            go()
            times.append((clock() - t) / n)
        lucent = statistics.median(times)
        print(
            f"{size:>7} {fed:>4}  {lucent * 1e3:9.2f} {ours * 1e3:8.2f} {floor * 1e3:9.2f} "
            f"{lucent / floor:12.3f} {of:10.3f} {lucent / ours:11.3f}"
        )


if __name__ == "__main__":
    main()
