"""The AM widget past Lucid: the maco preset, the importance (alpha) overlay toggle, and feature
accentuation of a photo (packaged, uploaded or given), side by side with plain AM from it."""

from __future__ import annotations

import io
import threading

import pytest
import traitlets
from PIL import Image

from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.widgets.activation_max import ActivationMaximization


def _png(color=(200, 40, 40), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _labels(w) -> list:
    return [p.get("label") for p in w.panels if p["kind"] == "image"]


@pytest.fixture
def widget(tiny_handle):
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=6, size=32)
    yield w
    w.close()


def test_maco_preset_and_the_alpha_overlay_toggle(widget) -> None:
    assert ["maco", "maco"] in widget.controls[
        [c["trait"] for c in widget.controls].index("preset")
    ]["options"]
    widget.preset = "maco"
    assert widget.size == am.PRESETS["maco"].size and widget.steps == 512
    widget.size, widget.steps = 32, 6
    assert widget.sample == "noise" and not widget.has_photo  # plain AM by default
    assert "Importance (alpha) map" not in _labels(widget)
    widget.show_alpha = True  # the toggle: the overlay panel appears...
    alpha = {"kind": "image", "trait": "alpha_image", "label": "Importance (alpha) map"}
    assert alpha in widget.panels and widget.alpha_image == b""  # ... empty before a run
    widget.run()
    assert widget.wait(timeout=120) and widget.error == ""
    shown = Image.open(io.BytesIO(widget.alpha_image))
    assert shown.size == (32, 32)
    assert widget.alpha_image != widget.image  # faded where the gradients were small
    widget.show_alpha = False  # no restart: a display toggle
    assert alpha not in widget.panels and not widget.running


def test_start_from_a_photo_accentuates_beside_plain_am(widget) -> None:
    widget.sample = "cat"
    assert widget.has_photo and Image.open(io.BytesIO(widget.original)).size == (32, 32)
    assert _labels(widget)[:2] == ["Photo", "Accentuated | plain AM, both from the photo"]
    widget.run()
    assert widget.wait(timeout=120) and widget.error == ""
    # one batch, accentuated and plain side by side (two 32 px images, make_grid's 2 px pads)
    assert Image.open(io.BytesIO(widget.image)).size == (2 * 32 + 3 * 2, 32 + 2 * 2)
    rec = widget._last_record
    assert rec["photo"] == "cat" and rec["accent_layer"] and len(rec["activation"]) == 2
    assert "accentuating photo 'cat'" in widget.status
    widget.sample = "noise"
    assert not widget.has_photo and widget.original == b"" and "Photo" not in _labels(widget)


def test_accentuation_weight_is_live_and_the_layer_is_checked(widget) -> None:
    with pytest.raises(traitlets.TraitError, match="nearest"):
        widget.accent_layer = "conv9"
    widget.accent_layer = "conv1"
    widget.sample = "coffee"
    widget.steps = 100_000
    widget.run()
    while widget._live is None and not widget.error:
        threading.Event().wait(0.01)
    widget.accentuation = 7.5
    seen = widget._live.accentuation
    while widget._alpha_so_far is None and not widget.error:  # a step made: a map to show
        threading.Event().wait(0.01)
    widget.stop()
    assert widget.wait(timeout=60)
    assert seen == 7.5 and widget._last_record["accent_layer"] == "conv1"
    # stopped: the alpha map of the steps made so far, for the pair shown side by side
    assert Image.open(io.BytesIO(widget.alpha_image)).size == (2 * 32 + 3 * 2, 32 + 2 * 2)


def test_an_uploaded_or_given_photo_is_a_start(tiny_handle) -> None:
    w = ActivationMaximization(tiny_handle, image=_png(), layer="conv2", steps=3, size=32)
    try:
        assert w.sample == "custom" and w.has_photo
        with w.hold_trait_notifications():
            w.upload_name = "red.png"
            w.upload = _png((10, 200, 10))
        assert w.sample == "upload" and w.error == ""
        assert ["your image: red.png", "upload"] in w.sample_options
        assert w.target()[0, 1].mean() > 0.7  # the green upload is what the run starts from
    finally:
        w.close()
    with pytest.raises(KeyError, match="unknown sample photo"):
        ActivationMaximization(tiny_handle, image="no-such-photo")
