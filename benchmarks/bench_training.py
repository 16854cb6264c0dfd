"""Training throughput of the small CNN (zf_mnist): ``train_steps`` against a bare PyTorch loop.

Both train the same random initialisation on the same batches (the same epoch order, the same
normalization, Adam, cross-entropy); the bare loop does nothing else (no loss read back, no
accuracy, no Step). Measurements are interleaved in blocks (bare, ours, bare, ours...) and each
ratio is the median of the ratios of blocks measured next to each other, on the process's CPU
time (one torch thread), so that load from other processes hits both alike.

Rows: ``steps`` (blocks of batches inside an epoch) and ``epoch`` (a whole epoch, ours with its
end-of-epoch test evaluation and timeline snapshot, the bare loop without: what a user sees).

    python benchmarks/bench_training.py            # CPU, one thread
    python benchmarks/bench_training.py --device cuda

Never asserts: speed lives here, not in tests. Target: ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import training as TR
from cnnvis_widgets.core.timeline import Timeline
from cnnvis_widgets.models.zf_mnist import epoch_order


def bare_loop(handle, data: TR.TrainData, settings: TR.TrainSettings):
    """A plain PyTorch loop over the same batches; returns ``run(n)`` doing ``n`` batches."""
    net = copy.deepcopy(handle.model).train()
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    dev = handle.device
    x, y = data.x.to(dev), data.y.to(dev)
    n, bs = len(x), settings.batch_size
    state = {"epoch": 1, "b": 0, "order": epoch_order(n, settings.seed, 1)}
    per_epoch = -(-n // bs)

    def run(k: int) -> None:
        for _ in range(k):
            if state["b"] == per_epoch:
                state["epoch"] += 1
                state["b"] = 0
                state["order"] = epoch_order(n, settings.seed, state["epoch"])
            idx = state["order"][state["b"] * bs : (state["b"] + 1) * bs]
            state["b"] += 1
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(net(handle.normalize(x[idx])), y[idx])
            loss.backward()
            opt.step()

    return run, per_epoch


def ours_loop(handle, data: TR.TrainData, settings: TR.TrainSettings, timeline=None):
    gen = TR.train_steps(handle, data, settings, timeline=timeline)

    def run(k: int) -> None:
        for _ in range(k):
            next(gen)

    return run


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def timed(fn, device: torch.device) -> float:
    t = clock(device)
    fn()
    return clock(device) - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=20, help="batches per timed block")
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(args.device)
    handle = load_model("zf_mnist", weights=None, device=dev)
    data = TR.digits_data()
    data = TR.TrainData(data.x.to(dev), data.y.to(dev), data.x_test.to(dev), data.y_test.to(dev))
    s = TR.TrainSettings(epochs=1000, batch_size=args.batch)
    bare, per_epoch = bare_loop(handle, data, s)
    ours = ours_loop(handle, data, s)
    ours_tl = ours_loop(handle, data, s, timeline=Timeline())
    bare(2), ours(2), ours_tl(2)  # warm up (allocator, Adam state)
    rows = []
    for name, k, mine in (
        ("steps", args.block, ours),
        ("epoch", per_epoch, ours_tl),
    ):
        ratios, t_bare, t_ours = [], [], []
        for _ in range(args.rounds):
            a = timed(lambda k=k: bare(k), dev)
            b = timed(lambda k=k, mine=mine: mine(k), dev)
            t_bare.append(a)
            t_ours.append(b)
            ratios.append(b / a)
        rows.append((name, k, statistics.median(t_bare), statistics.median(t_ours), ratios))
    print(f"zf_mnist training, batch {args.batch}, {dev}, {torch.get_num_threads()} thread(s)")
    print(f"{'block':8s}{'batches':>8s}{'bare s':>10s}{'ours s':>10s}{'img/s bare':>12s}"
          f"{'img/s ours':>12s}{'ratio':>8s}")  # fmt: skip
    for name, k, a, b, ratios in rows:
        n_img = k * args.batch
        print(
            f"{name:8s}{k:8d}{a:10.3f}{b:10.3f}{n_img / a:12.0f}{n_img / b:12.0f}"
            f"{statistics.median(ratios):8.3f}"
        )
    print("ratio = ours / bare (median of interleaved blocks); target <= 1.1")


if __name__ == "__main__":
    main()
