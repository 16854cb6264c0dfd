"""models/ owns the model facts: one home for the layer pickers, the logits of a tuple-returning
model, the tensor-photo check; the old names still work and are the same objects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.models import first_output, layers, pixel_tensor
from tests.conftest import make_tiny


class _TupleNet(nn.Module):
    """A classifier that returns ``(logits, auxiliary)`` like Inception."""

    def __init__(self) -> None:
        super().__init__()
        self.body = make_tiny()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(x)
        return out, out * 0 - 1


def test_logits_of_a_tuple_returning_model_are_its_first_output() -> None:
    torch.manual_seed(0)
    h = load_model(_TupleNet(), device="cpu", input_size=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = h.net.body(x)
        got = h.logits(x)
    assert torch.equal(got, want)
    assert first_output([want, 1]) is want and first_output(want) is want


def test_old_picker_names_are_the_models_ones() -> None:
    from cnnvis_widgets.core import atlas, attribution
    from cnnvis_widgets.core import layers as core_layers
    from cnnvis_widgets.widgets import dissection, inversion

    assert core_layers.default_layer is layers.default_layer
    assert core_layers.default_deconv_layer is layers.default_deconv_layer
    assert attribution.default_cam_layer is layers.default_cam_layer
    assert atlas.default_atlas_layers is layers.atlas_layers
    assert dissection.default_layers is layers.dissection_layers
    assert inversion.default_layers is layers.inversion_layers


def test_pickers_on_a_small_network(tiny_handle) -> None:
    names = {li.name for li in tiny_handle.conv_layers()}
    for pick in (layers.default_layer, layers.default_deconv_layer, layers.default_cam_layer):
        assert pick(tiny_handle) in names
    for many in (layers.inversion_layers, layers.dissection_layers, layers.atlas_layers):
        got = many(tiny_handle)
        assert got and set(got) <= names and len(set(got)) == len(got)
    assert layers.default_inversion_layer(tiny_handle) in layers.inversion_layers(tiny_handle, 7)


def test_pixel_tensor_is_the_widgets_check() -> None:
    from cnnvis_widgets.widgets import _photos

    assert _photos.pixel_tensor is pixel_tensor
    assert pixel_tensor(torch.rand(3, 4, 4), 3).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="NaN"):
        pixel_tensor(torch.full((3, 4, 4), float("nan")), 3)


def test_core_imaging_is_the_imaging_module() -> None:
    import cnnvis_widgets.core.imaging as old
    import cnnvis_widgets.imaging as new

    assert old is new


def test_pickers_choose_the_same_layers_as_before() -> None:
    """The pickers share one kind-and-depth rule (:func:`layers._first_kind`); these are the
    layers they chose when each held its own copy of it."""
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip
    h = load_model(seq, device="cpu", input_size=32)
    picks = [f(h) for f in (layers.default_layer, layers.default_deconv_layer,
                            layers.default_cam_layer, layers.default_inversion_layer)]  # fmt: skip
    assert picks == ["3", "1", "3", "2"]
    assert layers.dissection_layers(h) == layers.atlas_layers(h) == ["1", "3"]
    assert [li.name for li in layers.spatial_layers(h)] == ["0", "1", "2", "3"]
    eff = load_model("efficientnet_lite0", device="cpu")
    assert layers.default_layer(eff) == "_blocks.8"
    assert layers.default_deconv_layer(eff) == "_blocks.4"
    assert layers.dissection_layers(eff) == ["_blocks.1", "_blocks.6", "_blocks.10", "_blocks.15"]
    flat = nn.Sequential(nn.Conv2d(3, 2, 4), nn.Flatten(), nn.Linear(2, 2))  # 1x1 maps only
    with pytest.raises(ValueError, match="no layer with a spatial output.*for Grad-CAM"):
        layers.default_cam_layer(load_model(flat, device="cpu", input_size=4))


def test_every_logits_reader_takes_the_first_output_of_a_tuple() -> None:
    """Predictions, attribution and class contributions read the logits of a tuple-returning
    model through ``handle.logits`` (each had its own copy of that rule)."""
    from cnnvis_widgets.core import attribution, contributions, predictions

    torch.manual_seed(0)
    wrapped = _TupleNet()
    plain = load_model(wrapped.body, device="cpu", input_size=32)
    tup = load_model(wrapped, device="cpu", input_size=32)
    px = torch.rand(1, 3, 32, 32)
    x = plain.normalize(px)
    assert predictions.top_predictions(tup, x) == predictions.top_predictions(plain, x)
    assert torch.equal(attribution.saliency(tup, x, 2), attribution.saliency(plain, x, 2))
    got = contributions.class_contributions(tup, "body.relu2", 1, px)
    want = contributions.class_contributions(plain, "relu2", 1, px)
    assert torch.allclose(got, want)
