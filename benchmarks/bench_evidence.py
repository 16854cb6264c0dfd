"""Checkable attribution (issue 15): occlusion, integrated gradients and deletion curves against
the floor, side by side with Captum.

For each method: the time per image divided by (the number of forward, or forward+backward,
passes it needs x one bare pass at the batch size it uses), the "floor ratio" (1.0: no overhead
beyond the passes themselves; target <= 1.1; integrated gradients need two forward passes more,
at a batch of two, for their completeness check); every time is the best of ``--repeats``
like the bare passes; and Captum's ``Occlusion`` / ``IntegratedGradients``
on the same model, input and settings, with the cosine of the two maps (CPU time of the calling
thread, which load from other processes disturbs far less than the wall clock; on CUDA, wall
clock).

    python benchmarks/bench_evidence.py                  # CPU, EfficientNet-Lite0, 224 px
    python benchmarks/bench_evidence.py --device cuda

Never asserts: speed lives here, not in tests.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from timing import sync

from cnnvis_widgets import load_model
from cnnvis_widgets.core.attribution import faithfulness as FA
from cnnvis_widgets.core.attribution import integrated_gradients as IG
from cnnvis_widgets.core.attribution import occlusion as OC
from cnnvis_widgets.core.attribution import saliency
from cnnvis_widgets.data import sample_image


def clock(device: torch.device):
    return time.perf_counter if device.type == "cuda" else time.thread_time


def timed(fn, device: torch.device, repeats: int = 1) -> tuple[float, object]:
    """The best of ``repeats`` timings of ``fn()`` (as the bare passes), and its last output."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        c = clock(device)
        t = c()
        out = fn()
        sync(device)
        best = min(best, c() - t)
    return best, out


def bare(handle, x: torch.Tensor, batch: int, backward: bool, repeats: int = 3) -> float:
    """Seconds of one bare pass of one image, measured at ``batch`` images per pass."""
    xb = x.expand(batch, *x.shape[1:]).clone()

    def once() -> None:
        if backward:
            xi = xb.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(handle.net(xi)[:, 281].sum(), xi)
        else:
            with torch.no_grad():
                handle.net(xb)

    once()
    best = min(timed(once, handle.device)[0] for _ in range(repeats))
    return best / batch


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().float().cpu(), b.flatten().float().cpu(), dim=0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--ig-steps", type=int, default=32)
    ap.add_argument("--deletion-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    args = ap.parse_args()
    h = load_model("efficientnet_lite0", device=args.device)
    x = h.preprocess(sample_image("cat")).to(h.device)
    bs = args.batch
    fwd, fwd_bwd = bare(h, x, bs, False), bare(h, x, bs, True)
    fwd_two = bare(h, x, 2, False)  # the completeness check: the image and the baseline

    def floor(backward: bool) -> float:
        """The bare pass measured again next to the method (load on a shared machine changes)."""
        return min(fwd_bwd if backward else fwd, bare(h, x, bs, backward))

    reps = max(1, args.repeats)

    try:
        from captum.attr import IntegratedGradients, Occlusion
    except ImportError:
        Occlusion = IntegratedGradients = None  # noqa: N806
    rows = []

    t, occ = timed(
        lambda: OC.occlusion(h, x, 281, patch=args.patch, stride=args.stride, batch_size=bs),
        h.device, reps,
    )  # fmt: skip
    passes = occ.passes  # type: ignore[attr-defined]
    row = ["occlusion", f"{passes}", f"{t:.2f}", f"{t / (passes * floor(False)):.2f}", "-", "-"]
    if Occlusion is not None and (224 - args.patch) % args.stride == 0:
        tc, theirs = timed(
            lambda: Occlusion(h.net).attribute(
                x, sliding_window_shapes=(3, args.patch, args.patch),
                strides=(3, args.stride, args.stride), baselines=0.0, target=281,
                perturbations_per_eval=bs,
            ),
            h.device, reps,
        )  # fmt: skip
        row[4:] = [f"{tc / t:.2f}", f"{cos(occ.score[0, 0], theirs[0, 0]):.4f}"]  # type: ignore[attr-defined,index]
    rows.append(row)

    t, ig = timed(
        lambda: IG.integrated_gradients(h, x, 281, steps=args.ig_steps, batch_size=bs),
        h.device, reps,
    )  # fmt: skip
    passes = args.ig_steps
    # the path's forward+backward passes and the completeness check's two forward passes
    ig_floor = passes * floor(True) + 2 * min(fwd_two, bare(h, x, 2, False))
    row = ["integrated gradients", f"{passes} + 2", f"{t:.2f}", f"{t / ig_floor:.2f}", "-", "-"]
    if IntegratedGradients is not None:
        black = IG.baseline(h, x, "black")
        tc, theirs = timed(
            lambda: IntegratedGradients(h.net).attribute(
                x, baselines=black, target=281, n_steps=args.ig_steps, method="riemann_middle",
                internal_batch_size=bs,
            ),
            h.device, reps,
        )  # fmt: skip
        row[4:] = [f"{tc / t:.2f}", f"{cos(ig.attributions, theirs):.4f}"]  # type: ignore[attr-defined]
    rows.append(row)

    m = saliency(h, x, 281)
    n = args.deletion_steps
    t, _ = timed(
        lambda: FA.faithfulness(h, x, 281, {"saliency": m}, steps=n, kinds=("deletion",),
                                baselines=(), batch_size=bs),
        h.device, reps,
    )  # fmt: skip
    rows.append(
        ["deletion curve", f"{n + 1}", f"{t:.2f}", f"{t / ((n + 1) * floor(False)):.2f}", "-", "-"]
    )

    print(f"EfficientNet-Lite0, 224 px, {h.device}, batch {bs}; bare pass per image: "
          f"forward {fwd * 1e3:.1f} ms, forward+backward {fwd_bwd * 1e3:.1f} ms")  # fmt: skip
    head = ["method", "passes", "seconds", "floor ratio", "Captum / ours", "cosine"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
