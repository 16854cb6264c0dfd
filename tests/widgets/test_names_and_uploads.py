"""One spelling per method in the widgets (options, traits, records) and a 0-byte upload that
says so in the widget's error line (issue 12)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.widgets import deconvnet as D
from cnnvis_widgets.widgets.adversarial import Adversarial
from cnnvis_widgets.widgets.attribution import Attribution
from cnnvis_widgets.widgets.deconvnet import DeconvNet
from cnnvis_widgets.widgets.inversion import Inversion

CANONICAL = {"saliency", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam"}
OLD = {"guided", "gradcam", "guided_gradcam", "guided-backprop", "grad-cam", "Grad-CAM"}


def _keys(obj) -> set[str]:
    """Every string of a JSON-able structure."""
    out: set[str] = set()
    if isinstance(obj, str):
        out.add(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out |= _keys(k) | _keys(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out |= _keys(v)
    return out


SLOW_METHODS = ("occlusion", "integrated_gradients")  # offered too, computed only when chosen


def _method_control(widget) -> dict:
    return next(c for c in widget.controls if c.get("trait") == "method")


def test_attribution_widget_options_traits_and_records_use_the_canonical_names(tiny_handle):
    w = Attribution(tiny_handle, image="cat")
    try:
        assert w.method == "guided_backprop"
        values = {v for _, v in _method_control(w)["options"]}
        assert values == CANONICAL | set(SLOW_METHODS) and CANONICAL == set(A.METHODS)
        shown = next(c for c in w.controls if c.get("trait") == "cam_layer")["visible_when"]
        assert set(shown["in"]) == {"grad_cam", "guided_grad_cam", "occlusion"}  # Fig. 7 too
        w.method = "grad_cam"
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        rec = w.record()
        assert rec["settings"]["method"] == "grad_cam"
        strings = _keys(json.loads(json.dumps(rec, default=str)))
        assert not strings & OLD, strings & OLD
        with pytest.warns(DeprecationWarning, match="now spelled 'grad_cam'"):
            w.method = "gradcam"
        assert w.method == "grad_cam"
    finally:
        w.close()


def test_deconvnet_widget_uses_guided_backprop_and_accepts_the_old_name(tiny_handle):
    D._MEMO.clear()
    w = DeconvNet(tiny_handle, layer="conv2", unit=3, n_images=12)
    try:
        assert {v for _, v in _method_control(w)["options"]} == {"deconvnet", "guided_backprop"}
        with pytest.warns(DeprecationWarning, match="now spelled 'guided_backprop'"):
            w.method = "guided"
        assert w.method == "guided_backprop"
    finally:
        w.close()
        D._MEMO.clear()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _attribution(h):
    return Attribution(h, image="cat")


def _inversion(h):
    return Inversion(h, layer="conv2", steps=4, size=32)


def _adversarial(h):
    return Adversarial(
        h, image="cat", size=32, steps=2, am_steps=2, am_size=32, n_units=2, layer="conv2"
    )


@pytest.mark.parametrize("make", [_attribution, _inversion, _adversarial])
def test_an_empty_upload_is_an_error_not_ignored(tiny_handle, make) -> None:
    # before: a file of 0 bytes changed nothing and said nothing
    w = make(tiny_handle)
    try:
        # the browser sends the name and the (empty) bytes in one message
        with w.hold_trait_notifications():
            w.upload_name = "empty.png"
            w.upload = b""
        assert "'empty.png' is empty (0 bytes)" in w.error
        # a real file afterwards clears the error; an empty one after it keeps that photo
        with w.hold_trait_notifications():
            w.upload_name = "grey.png"
            w.upload = _png()
        assert w.error == ""
        with w.hold_trait_notifications():
            w.upload_name = "nothing.png"
            w.upload = b""
        assert "'nothing.png' is empty (0 bytes)" in w.error
        assert "grey.png" in json.dumps(
            w.image_options if hasattr(w, "image_options") else w.sample_options
        )
    finally:
        w.close()


def test_a_0_255_image_tensor_is_refused_not_clamped_to_white(tiny_handle) -> None:
    # before: the Inversion and Adversarial widgets clamped it to a white picture
    import torch

    from cnnvis_widgets.widgets._photos import pixel_tensor

    photo = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"0-255 values: pass image tensor / 255"):
        pixel_tensor(photo * 255, 3)
    with pytest.raises(ValueError, match=r"0-255 values"):
        Inversion(tiny_handle, layer="conv2", steps=4, size=32, image=photo * 255)
    assert torch.equal(pixel_tensor(photo, 3)[0], photo)
