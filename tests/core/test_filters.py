"""core.filters: first-layer filters normalized per filter (1 and 3 channels), dead units."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import filters
from cnnvis_widgets.core.blocks.hooks import active_hook_count
from tests.conftest import make_tiny


def test_rgb_filters_are_normalized_each_on_its_own():
    net = make_tiny()
    with torch.no_grad():
        net.conv1.weight[0] = torch.arange(27.0).view(3, 3, 3) * 10  # a large filter
        net.conv1.weight[1] = 0.25  # a constant filter
    h = load_model(net, device="cpu", input_size=32)
    assert filters.first_conv(h) == "conv1"
    f = filters.first_layer_filters(h)
    assert f.shape == (8, 3, 3, 3)
    torch.testing.assert_close(f[0], torch.arange(27.0).view(3, 3, 3) / 26)
    assert torch.all(f[1] == 0.5)
    for k in range(2, 8):  # every other filter spans the full range
        assert float(f[k].min()) == 0.0 and float(f[k].max()) == pytest.approx(1.0)
    sym = filters.first_layer_filters(h, symmetric=True)
    assert float(sym[0].flatten()[0]) == 0.5  # zero weight is grey
    grid = filters.filter_grid(h, scale=4, ncol=4)
    assert grid.shape[0] == 3 and grid.shape[2] > 4 * 12


def test_grey_filters_of_a_one_channel_network():
    h = load_model(make_tiny(in_channels=1), device="cpu", input_size=32, mean=(0.5,), std=(0.5,))
    f = filters.first_layer_filters(h)
    assert f.shape == (8, 1, 3, 3)
    grid = filters.filter_grid(h, scale=2)
    assert grid.shape[0] == 3 and torch.equal(grid[0], grid[1])


def test_a_layer_that_is_not_a_conv_is_refused():
    h = load_model(make_tiny(), device="cpu", input_size=32)
    with pytest.raises(ValueError, match="not a Conv2d"):
        filters.first_layer_filters(h, "fc")
    with pytest.raises(ValueError, match="no Conv2d"):
        filters.first_conv(
            load_model(
                nn.Sequential(nn.Flatten(), nn.Linear(12, 2)),
                device="cpu",
                input_size=2,
                mean=(0.5,) * 3,
                std=(0.5,) * 3,
            )
        )


def test_units_that_never_fire_are_flagged_dead():
    net = make_tiny()
    with torch.no_grad():
        net.conv1.bias[[2, 5]] = -1e3  # relu1 units 2 and 5 never above zero
        net.conv1.bias[0] = 1e3  # unit 0 always on
    h = load_model(net, device="cpu", input_size=32)
    pixels = torch.rand(10, 3, 32, 32)
    live = filters.dead_units(h, pixels, batch=4)
    assert set(live) == {"relu1", "relu2"}
    assert live["relu1"].dead == [2, 5]
    assert live["relu1"].dead_fraction == pytest.approx(2 / 8)
    assert float(live["relu1"].active[0]) == 1.0 and float(live["relu1"].active[2]) == 0.0
    assert live["relu1"].count == 10 and live["relu1"].to_dict()["dead"] == [2, 5]
    assert active_hook_count(h) == 0
