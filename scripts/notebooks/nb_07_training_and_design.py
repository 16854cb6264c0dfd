"""Write ``notebooks/07_training_and_design.ipynb`` (run after editing; commit the .ipynb).

The notebook: the survey's applications on a network the class trains itself (``zf_mnist``):
watch it learn (the Training widget, a timeline fed from your own loop), label randomization,
what each unit is worth (ablation, the pruning exercise), first-layer filters and dead units,
invariance (Zeiler & Fergus Fig. 5); exercises, what to look for. ``CNNVIS_NOTEBOOK_STEPS``
shortens the loops (the test suite sets it to 32).

    python scripts/notebooks/nb_07_training_and_design.py
"""

from __future__ import annotations

from nbgen import write_notebook

NAME = "07_training_and_design.ipynb"

INTRO = """# Training and design: watch a network learn, see what each unit is worth

**Idea.** The survey's last part is about what visualization is *for*. Zeiler & Fergus (2014)
looked at AlexNet's first-layer filters and at its features across training epochs, saw dead and
aliased filters, and changed the architecture (smaller first-layer filters, a smaller stride).
Dissection was run across training iterations; units were judged by what removing them does
(Morcos et al. 2018, *On the importance of single directions for generalization*). And a
visualization can be tested: a map that stays the same when the network was trained on random
labels does not explain what it learned (Adebayo et al. 2018).

This notebook does all of it on a network small enough to train in seconds on a laptop:
`zf_mnist`, a ZF-style CNN (conv-ReLU-max-pool twice, then linear) on 5,000 real MNIST digits
shipped with the package. Nothing is downloaded."""

SETUP = """import os
import torch
import cnnvis_widgets as cw
from cnnvis_widgets.core import filters, importance, invariance
from cnnvis_widgets.core import training as TR
from cnnvis_widgets.core.timeline import Timeline, first_layer_filters
from cnnvis_widgets.core.imaging import make_grid, to_pil

# Shorter loops when CNNVIS_NOTEBOOK_STEPS is set (the test suite sets 32).
STEPS = int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "256"))
FAST = STEPS < 100
torch.manual_seed(0)
handle = cw.load_model("zf_mnist", device="cpu")  # trained on first use (seconds), then cached
data = TR.digits_data()  # 4,000 training and 1,000 test digits, the split zf_mnist trained on
test = (data.x_test, data.y_test)
handle"""

TRAIN_MD = """## Watch it learn: the Training widget

**Run** trains a copy of `zf_mnist` from its random initialisation: the loss and accuracy chart
grows live, **Stop** keeps what was learned and **Run** continues exactly where it stopped. After
each epoch a snapshot is kept; the checkpoint slider scrubs through them and shows that
checkpoint's first-layer filters, the activation-maximization images of the chosen units and
their top-9 patches (Zeiler & Fergus 2014, Fig. 4). **Compare with random labels** trains the
same network on permuted labels and shows both networks' saliency maps side by side."""

TRAIN = """w = cw.Training(epochs=2 if FAST else 4)
w"""

LOOP_MD = """## Your own training loop feeds a timeline

Any loop can keep snapshots: call `timeline.snapshot(model, step, loss=...)` inside it (the
weights are copied to the CPU; the model is only read). Here a plain PyTorch loop on a few hundred
digits; the first-layer filters of the first and the last snapshot show what training did to them
(pass `timeline=tl` to `cw.Training` to scrub through them in the widget)."""

LOOP = """net = cw.load_model("zf_mnist", weights=None).model  # the random twin
small = TR.digits_data(train_per_class=30 if FAST else 100)
opt = torch.optim.Adam(net.parameters(), lr=2e-3)
x_in = (small.x - 0.1307) / 0.3081
tl = Timeline()
tl.snapshot(net, 0, loss=float("nan"))
n_steps = 40 if FAST else 200
for step in range(1, n_steps + 1):
    idx = torch.randint(0, len(x_in), (50,))
    loss = torch.nn.functional.cross_entropy(net(x_in[idx]), small.y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % (n_steps // 8) == 0:
        tl.snapshot(net, step, loss=loss.item())
print(len(tl), "snapshots; last loss", round(tl[-1].metrics["loss"], 3))
first, last = (first_layer_filters(tl.module_at(i, net)) for i in (0, -1))
big = lambda f: f.repeat_interleave(6, 2).repeat_interleave(6, 3).expand(-1, 3, -1, -1)
to_pil(make_grid(torch.cat([big(first), big(last)]), ncol=16))"""

RANDOM_MD = """## Label randomization (Adebayo et al. 2018)

The same network trained on *permuted* labels can only memorize: its training accuracy climbs,
its test accuracy stays at chance (10%). An explanation method that gives the same maps for it as
for the real network explains the image, not the network."""

RANDOM = """few = TR.digits_data(train_per_class=20 if FAST else 50)
twin = cw.load_model("zf_mnist", weights=None)
memorized = TR.train(twin, few, epochs=8 if FAST else 30, lr=3e-3, lr_decay=1.0,
                     permute_labels=True)
last = memorized.history[-1]
print(f"random labels: train accuracy {last['train_accuracy']:.2f}, "
      f"test accuracy {last['test_accuracy']:.2f} (chance 0.10)")
cmp = TR.compare_randomized(handle, TR.handle_of(handle, memorized.model), data.x_test[:6])
print("Spearman rank correlation of the saliency maps, per digit:",
      [round(c, 2) for c in cmp.correlations])"""

WORTH_MD = """## What each unit is worth: ablation

`importance.ablate(handle, layer, units, dataset)` removes units (sets them to zero, or with
`how="mean"` to their mean over the dataset) and measures the change in accuracy and in every
class's probability. Many removals share one forward pass up to the layer: the batch is
expanded into one copy per removal there, so the layers below run once per image. Ranked, each
unit with the classes whose probability it lowers most:"""

WORTH = """worth = importance.ablate(handle, "features.relu2", "all", test)
print(f"intact accuracy {worth.baseline_accuracy:.3f} on {worth.count} test digits "
      f"({worth.path} forward)")
for w_ in worth.worth()[:6]:
    hurts = ", ".join(f"{c} {d:+.3f}" for c, d in w_.hurts)
    print(f"unit {w_.units[0]:2d}: accuracy drop {w_.accuracy_drop:+.3f}; hurts most: {hurts}")
print("least important:", [w_.units[0] for w_ in worth.worth()[-4:]])"""

PRUNE_MD = """## The pruning exercise

Remove the *k* least important filters together, and compare with *k* random ones and the *k*
most important. (The ranking comes from the same test digits here; rank on training digits to do
it properly, `ranking=...`.)"""

PRUNE = """prune = importance.pruning_exercise(handle, "features.relu2", test, ks=(2, 4, 8, 16),
                                    ranking=[w_.units[0] for w_ in worth.worth()])
for k, lo, rnd, hi in zip(prune.ks, prune.least, prune.random_mean, prune.most):
    print(f"k={k:2d}: least important {lo:.3f}   random {rnd:.3f}   most important {hi:.3f}")"""

FILTERS_MD = """## First-layer filters and dead units

The first convolution's kernels, each normalized on its own (black its minimum, white its
maximum): the strokes and blobs the network looks for. A *dead* unit never rises above zero on
any digit: it passes no signal and receives no gradient. The same functions work on any model
(`filters.filter_grid(cw.load_model("efficientnet_lite0"))` shows Lite0's colour filters)."""

FILTERS = """live = filters.dead_units(handle, test)
for name, lv in live.items():
    print(f"{name}: {len(lv.dead)} dead of {lv.peak.numel()}; mean share active "
          f"{float(lv.active.mean()):.2f}")
to_pil(filters.filter_grid(handle, scale=8))"""

INVARIANCE_MD = """## Invariance (Zeiler & Fergus 2014, Fig. 5)

A digit is shifted (up to 3 pixels), scaled and rotated; for each layer, the distance of its
features from the unmoved digit's, relative to how far apart *different* digits are at that layer
(1: as far as another digit), and the probability of its class (dashed). `fc` is the output layer
(the logits). The widget draws one chart per
transformation and the transformed digits beneath; `cw.Invariance()` with no model does the same
for EfficientNet-Lite0 and a packaged photo."""

INVARIANCE = """digit, others = data.x_test[100:101], data.x_test[1:41]
LAYERS = ["features.relu1", "features.pool1", "features.relu2", "features.pool2", "fc"]
RANGES = {"translate": (-0.1, 0.1), "scale": (1.0, 1.4), "rotate": (-40.0, 40.0)}
inv = invariance.invariance(handle, digit, LAYERS, ranges=RANGES, steps=5 if FAST else 9,
                            reference=others)
for kind, curve in inv.curves.items():
    print(kind, {layer: round(curve.mean_distance(layer), 2) for layer in inv.layers})
iw = cw.Invariance(handle, digit, reference=others, layers=LAYERS, steps=5 if FAST else 9,
                   shift=0.1, zoom=1.4, angle=40)
iw"""

EXERCISES = """## Exercises

1. Train with the Training widget for one epoch, then for four. Scrub the checkpoints: which
   first-layer filters settle first? Are there filters that never change (dead from the start)?
2. Rank the units of `features.relu1` and of `features.relu2`. Is importance spread evenly, or do a
   few units carry most of the accuracy? Compare `how="zero"` with `how="mean"`: which units
   change rank, and why does mean ablation cost less?
3. Do the pruning exercise properly: rank on training digits (`TR.digits_data().x[:500]` with
   its labels), evaluate on the test digits. How many filters of `features.relu2` can go before
   the accuracy drops by one point? Is that number different for random filters?
4. In the invariance charts, which layer changes most under a shift of two pixels? Max-pooling
   is said to give translation invariance: where along the depth do you see it? Which digits
   keep their class under a 180 degree rotation, and why?
5. Train on random labels for many more epochs (`epochs=60`). When does the training accuracy
   reach 100%? Are the memorizing network's first-layer filters as clean as the real one's?"""

LOOK_FOR = """## What to look for

* Across training, the first-layer filters go from noise to strokes within the first epoch;
  later epochs refine them. The test accuracy passes 95% after one or two epochs.
* The randomized-label network's test accuracy stays near 10%: a saliency map that still looks
  like the digit (high rank correlation) shows the input's edges, not what was learned.
* Removing the most important units together costs much more accuracy than removing as many
  random ones; the least important ones can often go with no loss at all. Single-unit drops are
  small: the network is redundant.
* The output layer (`fc`) moves least; the convolutional layers of this small network change
  about equally (it has no global pooling: a shift of three pixels is a large change for a
  7 x 7 map). On EfficientNet-Lite0 with a photo (`cw.Invariance()`) the first layer moves about
  three times as far as the pooled top one. The class probability survives small shifts and
  scales better than rotations."""


def main() -> None:
    """Write the notebook next to the others."""
    write_notebook(NAME, globals())


if __name__ == "__main__":
    main()
