"""Network Dissection: throughput against bare forward passes, memory as the probe set grows, and
the time of a full dissection of the default model.

Prints one table. Figures:

* **stage images/s / forward images/s**, per stage (thresholds, IoU tallies), on the *same*
  pre-drawn probe batches (drawing excluded), measured interleaved (forward, stage, forward...)
  so that load from other processes hits both alike. The forward pass is the floor: a pass that
  stops after the deepest dissected layer (what dissection runs). Target >= 0.8. A dissection
  makes two passes, so the whole run is compared with two forward passes.
* **probe drawing**: images/s of the generated probe set (with masks), and the end-to-end ratio
  with drawing included.
* **peak memory as the probe set grows 4x**: each size runs in a fresh process that samples its
  resident memory every 5 ms during the dissection; peak minus the level before it. Target: flat.
* **full dissection of the default model**: every block of EfficientNet-Lite0, 224 px, on CPU.

    python benchmarks/bench_dissection.py                   # CPU, 1 thread, the default model
    python benchmarks/bench_dissection.py --device cuda --images 512 --full-images 2048

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
from timing import sync

from cnnvis_widgets import load_model
from cnnvis_widgets.core.dissection import Dissector
from cnnvis_widgets.core.hooks import capture, forward_to
from cnnvis_widgets.data.concepts import probe_set


class CachedProbe:
    """The probe protocol over batches drawn once (so timings exclude drawing)."""

    def __init__(self, probe, batch_size: int, device) -> None:
        self.probe = probe
        self.labels, self.categories = probe.labels, probe.categories
        self.size, self.mask_size = probe.size, probe.mask_size
        self.batches = {}
        for lo in range(0, len(probe), batch_size):
            b = probe.batch(range(lo, min(len(probe), lo + batch_size)), device=device)
            self.batches[(lo, lo + len(b))] = b

    def __len__(self) -> int:
        return len(self.probe)

    def batch(self, indices, *, masks=True, device=None):
        idx = list(indices)
        return self.batches[(idx[0], idx[-1] + 1)]

    def describe(self):
        return self.probe.describe()


def forward_time(handle, layers, cached: CachedProbe, stop_early: bool = True) -> float:
    """Seconds for one bare forward pass over every cached batch."""
    sync(handle.device)
    t = time.perf_counter()
    with torch.inference_mode():
        for b in cached.batches.values():
            x = handle.normalize(b.images)
            if stop_early:
                with capture(handle, layers, stop_early=True) as acts:
                    forward_to(handle, x, acts, needs_logits=False)
            else:
                handle.net(x)
    sync(handle.device)
    return time.perf_counter() - t


def stage_times(handle, layers, probe, batch_size: int) -> dict[str, float]:
    """Seconds spent in each stage of one dissection (per-step wall time, grouped by stage)."""
    d = Dissector(handle, layers, probe, batch_size=batch_size, distributed=False)
    out: dict[str, float] = {}
    sync(handle.device)
    t = time.perf_counter()
    for step in d.steps():
        sync(handle.device)
        now = time.perf_counter()
        stage = step.metrics["stage"]
        out[stage] = out.get(stage, 0.0) + now - t
        t = now
    return out


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_child(args) -> None:
    """Run one dissection, print the peak resident memory above the level before it (KiB)."""
    torch.set_num_threads(1)
    h = load_model(device=args.device)
    layers = args.layers.split(",")
    probe = probe_set(args.memory, size=args.memory_size, seed=0)
    # warm up allocator and code paths on a tiny probe first
    Dissector(h, layers, probe_set(args.batch, size=args.memory_size), batch_size=args.batch).run()
    base = rss_kib()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib())
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    Dissector(h, layers, probe, batch_size=args.batch).run()
    elapsed = time.perf_counter() - t
    done.set()
    th.join()
    gpu = torch.cuda.max_memory_allocated() // 1024 if h.device.type == "cuda" else 0
    print(json.dumps({"base": base, "peak": peak[0], "seconds": elapsed, "gpu_peak": gpu}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", default="_blocks.2,_blocks.6,_blocks.10")
    ap.add_argument("--images", type=int, default=96, help="probe images for the throughput")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-sizes", default="64,256", help="probe sizes (x4) for memory")
    ap.add_argument("--memory-size", type=int, default=112, help="image size of the memory runs")
    ap.add_argument("--full-images", type=int, default=128, help="0 skips the full dissection")
    ap.add_argument("--memory", type=int, default=0, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.memory:
        memory_child(args)
        return
    if args.device == "cpu":
        torch.set_num_threads(1)
    h = load_model(device=args.device)
    layers = args.layers.split(",")
    dev = h.device
    print(
        f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"layers {layers}, {args.images} images of {args.size} px, batch {args.batch}"
    )
    probe = probe_set(args.images, size=args.size, seed=0)
    t = time.perf_counter()
    cached = CachedProbe(probe, args.batch, dev)
    draw = time.perf_counter() - t
    n = len(probe)

    forward_time(h, layers, cached)  # warm-up
    stage_times(h, layers, cached, args.batch)
    fw, full, q, iou, e2e = [], [], [], [], []
    for _ in range(args.rounds):
        fw.append(forward_time(h, layers, cached))
        st = stage_times(h, layers, cached, args.batch)
        q.append(st["quantile"])
        iou.append(st["iou"])
        fw.append(forward_time(h, layers, cached))
        full.append(forward_time(h, layers, cached, stop_early=False))
    for _ in range(max(1, args.rounds // 2)):
        st = stage_times(h, layers, probe, args.batch)  # drawing included
        e2e.append(st["quantile"] + st["iou"])
    f, fu = statistics.median(fw), statistics.median(full)
    tq, ti, te = statistics.median(q), statistics.median(iou), statistics.median(e2e)

    rows = [
        ("bare forward to the deepest layer", n / f, n / f, 1.0),
        ("bare forward, whole network", n / fu, n / f, f / fu),
        ("stage 1: thresholds (streaming quantile)", n / tq, n / f, f / tq),
        ("stage 2: IoU tallies", n / ti, n / f, f / ti),
        ("both stages vs two forward passes", n / (tq + ti), n / (2 * f), 2 * f / (tq + ti)),
        ("probe drawing (images + masks)", n / draw, n / f, f / draw),
        ("both stages, drawing included, vs 2 fw", n / te, n / (2 * f), 2 * f / te),
    ]
    print()
    print(f"{'figure':46s} {'ours img/s':>11} {'floor img/s':>12} {'ratio':>7}")
    for label, ours, floor, ratio in rows:
        print(f"{label:46s} {ours:11.1f} {floor:12.1f} {ratio:7.3f}")

    sizes = [int(s) for s in args.memory_sizes.split(",")]
    print(f"\npeak memory of a dissection (fresh process each, {args.memory_size} px images):")
    mem = {}
    for m in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--memory",
            str(m),
            "--memory-size",
            str(args.memory_size),
            "--device",
            args.device,
            "--layers",
            args.layers,
            "--batch",
            str(args.batch),
        ]
        env = dict(os.environ, CNNVIS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        mem[m] = res
        extra = (res["peak"] - res["base"]) / 1024
        gpu = f", GPU peak {res['gpu_peak'] / 1024:.0f} MiB" if res["gpu_peak"] else ""
        print(
            f"  {m:6d} images: +{extra:7.1f} MiB above {res['base'] / 1024:.0f} MiB "
            f"({res['seconds']:.1f} s){gpu}"
        )
    if len(sizes) >= 2:
        a, b = mem[sizes[0]], mem[sizes[-1]]
        ra = max(1.0, (a["peak"] - a["base"]) / 1024)
        rb = max(1.0, (b["peak"] - b["base"]) / 1024)
        print(
            f"  ratio of peak memory, {sizes[-1]} vs {sizes[0]} images "
            f"({sizes[-1] / sizes[0]:.0f}x): {rb / ra:.2f} (flat = 1.0)"
        )

    if args.full_images:
        blocks = [
            li.name for li in h.conv_layers() if li.kind == "block" and li.name.count(".") == 1
        ]
        full_probe = probe_set(args.full_images, size=224, seed=0)
        t = time.perf_counter()
        d = Dissector(h, blocks, full_probe, batch_size=args.batch)
        result = d.run()
        elapsed = time.perf_counter() - t
        good = sum(s["interpretable"] for s in result.summary())
        units = sum(s["units"] for s in result.summary())
        print(
            f"\nfull dissection of {h.name}: {len(blocks)} blocks, {units} units, "
            f"{args.full_images} images of 224 px on {dev}: {elapsed:.1f} s "
            f"({args.full_images / elapsed:.2f} images/s, {1000 * elapsed / args.full_images:.0f} "
            f"s per 1000 images); {good} interpretable units"
        )


if __name__ == "__main__":
    main()
