"""Checkable attribution (issue 15): occlusion, integrated gradients and deletion curves against
the floor, side by side with Captum.

For each method: the time per image divided by (the number of forward, or forward+backward,
passes it needs x one bare pass at the batch size it uses), the "floor ratio" (1.0: no overhead
beyond the passes themselves; target <= 1.1; integrated gradients need two forward passes more,
at a batch of two, for their completeness check); every time is the best of ``--repeats``
and the ratio the median of the repeats' ratios, each against bare passes measured right before
it; and Captum's ``Occlusion`` / ``IntegratedGradients``
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


def paired(method, floor_fn, reps: int, device: torch.device) -> tuple[float, float, object]:
    """The best time of ``method()`` and the median of ``time / floor_fn()`` with the floor
    measured right before each timing (load on a shared machine drifts), and the output."""
    best, ratios, out = float("inf"), [], None
    for _ in range(reps):
        f = floor_fn()
        t, out = timed(method, device)
        best = min(best, t)
        ratios.append(t / f)
    return best, sorted(ratios)[len(ratios) // 2], out


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
    ap.add_argument("--methods", default="occlusion,ig,deletion", help="rows to measure")
    args = ap.parse_args()
    h = load_model("efficientnet_lite0", device=args.device)
    x = h.preprocess(sample_image("cat")).to(h.device)
    bs = args.batch
    fwd, fwd_bwd = bare(h, x, bs, False), bare(h, x, bs, True)
    reps = max(1, args.repeats)
    todo = set(args.methods.split(","))

    def floor_now(backward: bool, passes: int, extra_forwards: int = 0) -> float:
        """Seconds of ``passes`` bare passes at the batch used (+ forwards at a batch of two)."""
        t = passes * bare(h, x, bs, backward, repeats=1)
        return t + (extra_forwards * bare(h, x, 2, False, repeats=1) if extra_forwards else 0.0)

    try:
        from captum.attr import IntegratedGradients, Occlusion
    except ImportError:
        Occlusion = IntegratedGradients = None  # noqa: N806
    rows = []

    n_occ = (len(OC.positions(224, args.patch, args.stride)) ** 2 + 1) if "occlusion" in todo else 0
    if n_occ:
        t, ratio, occ = paired(
            lambda: OC.occlusion(h, x, 281, patch=args.patch, stride=args.stride, batch_size=bs),
            lambda: floor_now(False, n_occ), reps, h.device,
        )  # fmt: skip
        passes = occ.passes  # type: ignore[attr-defined]
        row = ["occlusion", f"{passes}", f"{t:.2f}", f"{ratio:.2f}", "-", "-"]
    if n_occ and Occlusion is not None and (224 - args.patch) % args.stride == 0:
        tc, theirs = timed(
            lambda: Occlusion(h.net).attribute(
                x, sliding_window_shapes=(3, args.patch, args.patch),
                strides=(3, args.stride, args.stride), baselines=0.0, target=281,
                perturbations_per_eval=bs,
            ),
            h.device, reps,
        )  # fmt: skip
        row[4:] = [f"{tc / t:.2f}", f"{cos(occ.score[0, 0], theirs[0, 0]):.4f}"]  # type: ignore[attr-defined,index]
    if n_occ:
        rows.append(row)

    passes = args.ig_steps
    if "ig" in todo:
        # the path's forward+backward passes and the completeness check's two forward passes
        t, ratio, ig = paired(
            lambda: IG.integrated_gradients(h, x, 281, steps=passes, batch_size=bs),
            lambda: floor_now(True, passes, 2), reps, h.device,
        )  # fmt: skip
        row = ["integrated gradients", f"{passes} + 2", f"{t:.2f}", f"{ratio:.2f}", "-", "-"]
    if "ig" in todo and IntegratedGradients is not None:
        black = IG.baseline(h, x, "black")
        tc, theirs = timed(
            lambda: IntegratedGradients(h.net).attribute(
                x, baselines=black, target=281, n_steps=args.ig_steps, method="riemann_middle",
                internal_batch_size=bs,
            ),
            h.device, reps,
        )  # fmt: skip
        row[4:] = [f"{tc / t:.2f}", f"{cos(ig.attributions, theirs):.4f}"]  # type: ignore[attr-defined]
    if "ig" in todo:
        rows.append(row)

    if "deletion" in todo:
        m = saliency(h, x, 281)
        n = args.deletion_steps
        t, ratio, _ = paired(
            lambda: FA.faithfulness(h, x, 281, {"saliency": m}, steps=n, kinds=("deletion",),
                                    baselines=(), batch_size=bs),
            lambda: floor_now(False, n + 1), reps, h.device,
        )  # fmt: skip
        rows.append(["deletion curve", f"{n + 1}", f"{t:.2f}", f"{ratio:.2f}", "-", "-"])

    print(f"EfficientNet-Lite0, 224 px, {h.device}, batch {bs}; bare pass per image: "
          f"forward {fwd * 1e3:.1f} ms, forward+backward {fwd_bwd * 1e3:.1f} ms")  # fmt: skip
    head = ["method", "passes", "seconds", "floor ratio", "Captum / ours", "cosine"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
