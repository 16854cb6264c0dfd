"""core.invariance: the transformations, the distances, and Zeiler & Fergus's Fig. 5 finding."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import invariance as inv
from cnnvis_widgets.core.blocks.hooks import active_hook_count
from cnnvis_widgets.data import sample_images
from tests.conftest import make_tiny


def test_the_transformations_move_the_pixels_as_named():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 4] = 1.0
    down = inv.transform_batch(x, "translate", [0.25], fill=torch.zeros(1))
    assert down[0, 0, 4, 4] == pytest.approx(1.0)  # 0.25 of 8 pixels = 2 pixels down
    same = inv.transform_batch(x, "scale", [1.0])
    torch.testing.assert_close(same, x)
    turned = inv.transform_batch(x, "rotate", [0.0, 90.0, 180.0], fill=torch.zeros(1))
    torch.testing.assert_close(turned[0], x[0])
    torch.testing.assert_close(turned[2], x[0].flip(-1).flip(-2))
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(inv.transform_batch(flat, "rotate", [33.0]), flat)  # border fill
    with pytest.raises(ValueError, match="one of"):
        inv.transform_batch(x, "shear", [1.0])
    with pytest.raises(ValueError, match="> 0"):
        inv.transform_batch(x, "scale", [0.0])


def test_distances_are_zero_at_the_identity_and_the_model_is_untouched():
    net = make_tiny()
    net.train()
    h = load_model(net, device="cpu", input_size=32)
    image = torch.rand(1, 3, 32, 32)
    res = inv.invariance(h, image, ["relu1", "relu2"], steps=3, ranges={"translate": (-0.2, 0.2)})
    for kind, curve in res.curves.items():
        mid = 0 if kind == "scale" else 1  # the identity: scale 1 first, no shift, 0 degrees
        assert curve.values[mid] == pytest.approx(1.0 if kind == "scale" else 0.0)
        assert curve.distances["relu1"][mid] == pytest.approx(0.0, abs=1e-5)
        assert curve.probability[mid] == pytest.approx(res.probability, abs=1e-5)
        assert curve.images.shape == (3, 3, 32, 32)
        assert max(curve.distances["relu1"]) > 0
    assert res.normalized == "feature length"
    chart = res.curves["rotate"].series()
    assert [s["name"] for s in chart["series"]] == ["relu1", "relu2", "p(class)"]
    assert chart["series"][-1]["dashed"] is True
    assert net.training and active_hook_count(h) == 0
    with pytest.raises(ValueError, match="steps"):
        inv.invariance(h, image, ["relu1"], steps=1)
    with pytest.raises(ValueError, match="within"):
        inv.invariance(h, image, ["relu1"], steps=2, ranges={"rotate": (0, 720)})
    with pytest.raises(ValueError, match="differs"):
        inv.invariance(h, image, ["relu1"], steps=2, reference=image)


def test_lower_layers_change_more_than_the_top(lite0):
    """Zeiler & Fergus (2014), Fig. 5: a transformation changes the first layer a lot and the
    top feature layer little (distances relative to how far apart different photos are)."""
    layers = ["_act0", "_blocks.5", "_avg_pooling"]
    res = inv.invariance(lite0, sample_images()["cat"], layers, steps=3, reference="photos")
    assert res.normalized == "9 other images"
    for kind, curve in res.curves.items():
        low, top = curve.mean_distance("_act0"), curve.mean_distance("_avg_pooling")
        assert low > 1.2 * top, (kind, low, top)
    assert inv.default_layers(lite0)[0] == "_act0"
    assert "_avg_pooling" in inv.default_layers(lite0)
