"""Write ``notebooks/06_atlas.ipynb`` (run after editing; commit the .ipynb).

The notebook: the idea (layer- and network-level views, the survey's future work), the live
Atlas widget, the same results from code with the core API, exercises, what to look for.
``CNNVIS_NOTEBOOK_STEPS`` shortens the loops (optimization steps; the test suite sets it to 32).

    python scripts/notebooks/nb_06_atlas.py
"""

from __future__ import annotations

from nbgen import write_notebook

NAME = "06_atlas.ipynb"

INTRO = """# A unit atlas: from the whole network down to one unit

**Idea.** Every method of the earlier notebooks explains *one* neuron at a time: the image that
drives it most (activation maximization), the dataset patches that excite it and the pixels
responsible (DeconvNet, Zeiler & Fergus 2014), the concept it detects (Network Dissection, Bau et
al. 2017), what a layer keeps of a photo (inversion, Mahendran & Vedaldi 2015). Qin et al. (2018),
*How convolutional neural network see the world* (arXiv:1804.11191), close their survey with this
limitation: the methods explain single units, and visualizing **layers and whole networks** is the
future work. No method links to the others either.

The atlas puts them together, in the spirit of Olah et al.'s *Building blocks of
interpretability* (Distill 2018) and *Activation atlases* (Carter et al. 2019):

* the **network view** has one row per layer: its shape, its share of *interpretable* units (best
  dissection IoU at least 0.04), the *normalized feature error* of a regularized inversion of a
  reference photo (how much of the photo the layer keeps), and a strip of thumbnails (the
  reconstruction, then the most active feature maps);
* the **layer view** shows the activation-maximization image of *every* unit, optimized in batches
  (one batch through the network per step) and cached on disk, labelled with its dissection
  concept; sort by activation, IoU or label, filter by label;
* the **unit card** puts one unit's evidence side by side: AM image and diversity variants, top-9
  patches and their DeconvNet projections, dissection label and top probe images, and the classes
  whose logits the unit feeds most (gradient x activation, all classes in one forward-mode pass)."""

SETUP = """import os
import torch
import cnnvis_widgets as cw
from cnnvis_widgets.core import atlas
from cnnvis_widgets.core.imaging import make_grid, to_pil

# Fewer optimization steps when CNNVIS_NOTEBOOK_STEPS is set (the test suite does).
STEPS = max(8, min(128, int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "128"))))
handle = cw.load_model("efficientnet_lite0")
LAYERS = ["_blocks.1", "_blocks.4", "_blocks.8", "_blocks.12"]
handle"""

WIDGET_MD = """## The Atlas widget

Click a row of the table (or a strip) to open that layer; the grid fills in the background, batch
by batch (Stop cancels; the finished batches are kept and the next visit resumes). Click a cell to
open the unit card. The **View** toggle brings you back. `atlas.open_unit("am")`,
`open_unit("deconvnet")` and `open_unit("dissection")` return the method's own widget on the same
unit and model: the ActivationMaximization widget shows the atlas's image at once (same preset,
steps, size and seed) instead of optimizing again."""

WIDGET = """w = cw.Atlas(handle, layers=LAYERS, steps=STEPS, size=64, probe_images=32,
             inversion_steps=STEPS, n_images=32)
w"""

CODE_MD = """## The same from code

Each view is a generator in `cnnvis_widgets.core.atlas` (`*_steps`, cancellable with a
`stop_event`) that yields progress and returns its result (`grid = yield from
layer_grid_steps(...)`), with a convenience function that runs it to the end."""

CODE_NET = """summary = atlas.network_summary(
    handle, LAYERS, probe_images=32, inversion_steps=STEPS, inversion_size=96
)
for row in summary.rows():
    print(row)
to_pil(summary.strips())"""

CODE_GRID = """grid = atlas.layer_grid(handle, "_blocks.4", steps=STEPS, size=64, batch=40)
order = grid.activation.argsort(descending=True).tolist()
img, rows, cols = atlas.render_grid(grid, order)
to_pil(img)"""

CODE_CARD = """card = atlas.unit_card(
    handle, "_blocks.4", order[0], steps=STEPS, size=64, n_images=32, dissection=summary.dissection
)
print(card.text())
pics = atlas.card_images(card)
to_pil(make_grid(torch.stack([pics["patches"], pics["projections"]]), ncol=2))"""

EXERCISES = """## Exercises

1. In the network view, where along the depth does the share of interpretable units peak, and
   where does the inversion error start to grow? Do the two curves tell the same story about what
   the layers keep?
2. Sort the grid of `_blocks.8` by IoU. Do the units labelled with the same colour or texture
   concept have similar activation-maximization images? Find a unit whose AM image and top-9
   patches disagree with its dissection label, and explain what each method measures.
3. `atlas.class_contributions(handle, layer, unit, pixels)` uses the gradient (first order). Compare
   it with the exact effect of switching the unit off (zero it with a forward hook and compare
   the logits) for a unit of `_blocks.12`. When does the linear estimate fail?"""

LOOK_FOR = """## What to look for

* Early layers: many colour units (dissection) and an inversion error near zero: the photo is
  still all there. Late layers: more texture and shape concepts, a larger error, and
  reconstructions that keep *what* but not *where*.
* Units with a high IoU usually have AM images that show their concept plainly; units that are not
  interpretable by the probe set can still have crisp AM images: dissection only knows the
  concepts of its probe set.
* The classes a unit feeds are a property of the *rest* of the network: a unit in an early block
  feeds every class a little; a unit of the last blocks feeds a few classes a lot."""


def main() -> None:
    """Write the notebook next to the others."""
    write_notebook(NAME, globals())


if __name__ == "__main__":
    main()
