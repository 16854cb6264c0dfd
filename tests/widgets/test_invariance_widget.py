"""The Invariance widget without a browser: a run fills one chart and one strip per
transformation; layers are validated; a grey network with a tensor image works; the model is
untouched."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from cnnvis_widgets import load_model
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets.invariance import Invariance
from tests.conftest import make_tiny
from tests.helpers import assert_refused


def test_a_run_fills_a_chart_and_a_strip_per_transformation(tiny_handle):
    w = Invariance(tiny_handle, layers="relu1, relu2", steps=3)
    try:
        assert w.original and w.sample == "cat"
        assert_refused(w, "layers", {"relu1, conv7": "nearest valid names", " , ": "empty"})
        assert_refused(w, "layers", {", ".join(["relu1"] * 9): "at most 8 layers in a chart"})
        w.run()
        w.wait(120)
        assert w.error == ""
        for kind in ("translate", "scale", "rotate"):
            series = getattr(w, f"{kind}_chart")["series"]
            assert [s["name"] for s in series] == ["relu1", "relu2", "p(class)"]
            assert len(series[0]["points"]) == 3
            strip = Image.open(io.BytesIO(getattr(w, f"{kind}_images")))
            assert strip.size[0] > 3 * 32  # three 32-pixel photos side by side
        rec = w.record()["result"]
        assert rec["normalized"] == "9 other images"  # the other packaged photos
        assert set(rec["curves"]) == {"translate", "scale", "rotate"}
        assert w.result is not None and w.result.curves["rotate"].values[0] == -180.0
        assert w.image  # the composite for save() and static exports
        chart_panels = [p for p in w.panels if p["kind"] == "chart"]
        assert [p["trait"] for p in chart_panels] == [
            "translate_chart", "scale_chart", "rotate_chart"
        ]  # fmt: skip
        assert active_hook_count(tiny_handle) == 0
    finally:
        w.close()


def test_a_grey_network_and_a_digit_tensor():
    net = make_tiny(in_channels=1)
    net.train()
    h = load_model(net, device="cpu", input_size=32, mean=(0.5,), std=(0.5,))
    digit = torch.zeros(1, 1, 32, 32)
    digit[0, 0, 8:24, 14:18] = 1.0
    w = Invariance(h, digit, steps=3, shift=0.1, angle=30)
    try:
        assert w.sample == "custom"
        w.run()
        w.wait(120)
        assert w.error == "", w.error
        assert w.result is not None and w.result.normalized == "feature length"
        assert w.result.curves["translate"].values == pytest.approx([-0.1, 0.0, 0.1])
        assert net.training
    finally:
        w.close()
