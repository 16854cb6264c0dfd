"""What the Adversarial widget shows and lets a person set: its traits, each declared once.

:class:`AdversarialTraits` holds the read-only facts the controls offer (photos, classes,
layers), the settings in the order of their controls (each a :func:`~._base.setting`: trait,
range, help, control and whether it restarts the run) and the results the panels show. The
widget (:class:`cnnvis_widgets.widgets.adversarial.Adversarial`) adds the behaviour.
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

import traitlets as t

from ..core.adversarial import ATTRIBUTION_METHODS
from ..core.adversarial.settings import LINF_MAX, METHODS
from ._base import BoundedFloat, BoundedInt, setting, upload_trait

__all__ = ["AdversarialTraits", "MAPS"]

MAPS = (  # the four attribution maps: trait and panel label
    ("attribution_clean_original", "Map: clean image, original class"),
    ("attribution_clean_new", "Map: clean image, new class"),
    ("attribution_adversarial_original", "Map: adversarial image, original class"),
    ("attribution_adversarial_new", "Map: adversarial image, new class"),
)
_PGD = {"trait": "method", "in": ["pgd-linf", "pgd-l2"]}  # controls of the PGD methods only
_T = TypeVar("_T", bound=t.TraitType)


def _shown(trait: _T, help: str) -> _T:
    """A result or read-only fact sent to the front end."""
    trait.help = trait.metadata["help"] = help
    return trait.tag(sync=True)


def _picture(what: str) -> t.Bytes:
    return _shown(t.Bytes(b""), f"PNG: {what} (read-only).")


# every setting of the widget restarts the run: declared once per group
_restarts = partial(setting, restart=True)
_image, _attack, _inside = (
    partial(_restarts, group=g) for g in ("Image", "Attack", "Inside the network")
)


class AdversarialTraits(t.HasTraits):
    """The traits of the Adversarial widget: read-only facts, settings, results."""

    model_name = _shown(t.Unicode(""), "Name of the model (read-only).")
    sample_options = _shown(t.List(), "[label, value] of every photo offered (read-only).")
    upload_name = _shown(t.Unicode(""), "File name of the uploaded image (JS sets).")
    epsilon_max = _shown(t.Float(LINF_MAX), "Largest epsilon of the slider (read-only).")
    class_options = _shown(t.List(), "[label, index] of 'untargeted' and every class (read-only).")
    layer_options = _shown(t.List(), "[label, name] of every conv-like layer (read-only).")
    cam_layer_options = _shown(t.List(), "[label, name] of Grad-CAM layers (read-only).")

    # the settings, in the order of their controls; every one restarts the run. Those of the
    # attack (Image, Attack, size and step_size) recompute it; those "Inside the network" only
    # the analyses (the attack is reused).
    sample = _image(
        t.Unicode("cat", help="The photo attacked: a packaged photo's name, 'upload' or 'custom'."),
        "select", "Image", options_trait="sample_options",
    )  # fmt: skip
    upload = setting(  # the upload switches `sample` to it (no restart of its own)
        upload_trait("Bytes of an image file chosen in the browser (JS sets)."),
        "upload", "Your image", "Image", record=False,
        accept="image/*", name_trait="upload_name", help="stays on this machine",
    )  # fmt: skip
    method = _attack(
        t.Enum(list(METHODS), "pgd-linf", help="fgsm: one signed step of size epsilon; pgd-linf "
               "/ pgd-l2: projected gradient ascent in the L-infinity / L2 ball."),
        "toggle", "Method",
        options=[["FGSM", "fgsm"], ["PGD L-inf", "pgd-linf"], ["PGD L2", "pgd-l2"]],
    )  # fmt: skip
    epsilon = _attack(  # label, step, format and help follow the norm: see _control_spec
        t.Float(4 / 255, help="Size of the perturbation in pixel units (L-infinity: 4/255 = "
                "four grey levels; L2: norm of the whole perturbation)."),
        "slider", "Epsilon", min=0.0, max_trait="epsilon_max",
    )  # fmt: skip
    steps = _attack(BoundedInt(10, 1, 10_000, help="PGD steps (FGSM makes one)."),
                    "slider", "Steps", log=True, step=1, visible_when=_PGD)  # fmt: skip
    target = _attack(
        t.Int(-1, help="Class to reach (targeted attack); -1: untargeted."),
        "search", "Target class", options_trait="class_options",
        help="type to filter; 'untargeted' moves away from the clean class",
    )  # fmt: skip
    random_start = _attack(t.Bool(True, help="Start PGD at a random point of the epsilon-ball."),
                           "checkbox", "Random start", visible_when=_PGD)  # fmt: skip
    seed = _attack(
        BoundedInt(0, 0, 2**31 - 1, help="Seed of the random start: the same seed repeats it."),
        "int", "Seed",
    )  # fmt: skip
    attribution = _inside(
        t.Enum(list(ATTRIBUTION_METHODS), "grad_cam",
               help="Attribution method of the maps: saliency, guided_backprop or grad_cam."),
        "toggle", "Attribution", collapsed=True,
        options=[["saliency", "saliency"], ["guided BP", "guided_backprop"],
                 ["Grad-CAM", "grad_cam"]],
    )  # fmt: skip
    cam_layer = _inside(
        t.Unicode("", help="Grad-CAM layer (empty: the last spatial block)."),
        "select", "CAM layer", options_trait="cam_layer_options",
        visible_when={"trait": "attribution", "in": ["grad_cam"]},
    )  # fmt: skip
    layer = _inside(t.Unicode("", help="Layer whose most changed units are listed."),
                    "select", "Units of layer", options_trait="layer_options")  # fmt: skip
    n_units = _inside(BoundedInt(6, 1, 32, help="Number of most changed units shown."),
                      "slider", "Units shown", step=1)  # fmt: skip
    show_units = _inside(
        t.Bool(True, help="Synthesize what the most changed units look for (act. maximization)."),
        "checkbox", "Unit images", help="activation maximization of the units in the table",
    )  # fmt: skip
    # without a control (the API and record() only), in this order
    step_size, size, am_steps, am_size = map(
        _restarts,
        (
            BoundedFloat(0.0, 0.0, 100.0, help="Size of one PGD step; 0 means 2.5 * epsilon / "
                         "steps."),
            BoundedInt(224, 16, 1024, help="Side of the image the network sees, in pixels."),
            BoundedInt(48, 1, 4096, help="Activation-maximization steps per unit image."),
            BoundedInt(64, 16, 512, help="Side of the unit images in pixels."),
        ),
    )  # fmt: skip
    # results (read-only)
    original = _picture("the clean image")
    perturbation = _picture("the amplified perturbation")
    adversarial = _picture("the adversarial image")
    predictions = _shown(t.List(), "[label, p_clean, p_adversarial]: the union of both top-5.")
    attribution_clean_original = _picture("map of the clean image for the original class")
    attribution_clean_new = _picture("map of the clean image for the new class")
    attribution_adversarial_original = _picture("map of the adversarial image, original class")
    attribution_adversarial_new = _picture("map of the adversarial image for the new class")
    unit_rows = _shown(t.List(t.Dict()), "The most changed units of the layer (read-only).")
    units_image = _picture("what each of those units looks for, in table order, 3 per row")
    selected_unit = _shown(t.Int(-1), "Unit highlighted in the table (click a row or a picture).")
    details = _shown(t.Unicode(""), "Text summary of the last attack (read-only).")
    clean_label = _shown(t.Unicode(""), "Top-1 of the clean image (read-only).")
    adversarial_label = _shown(t.Unicode(""), "Top-1 of the adversarial image (read-only).")
