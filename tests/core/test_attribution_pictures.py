"""Pictures of attribution maps: signed maps grey at zero, heat maps, the strip, the composite."""

from __future__ import annotations

import torch

from cnnvis_widgets.core import attribution_pictures as AP
from cnnvis_widgets.core import imaging as I


def test_signed_methods_are_grey_at_zero_and_grey_models_become_rgb() -> None:
    zero = torch.zeros(3, 8, 8)
    zero[:, 0, 0] = 1.0  # something to scale by
    pic = AP.map_picture("guided_backprop", zero)
    assert torch.allclose(pic[:, 4, 4], torch.full((3,), 0.5), atol=1e-3)
    x = torch.rand(1, 8, 8)
    heat = AP.map_picture("saliency", x)
    assert heat.shape == (3, 8, 8) and torch.equal(heat, I.heatmap(x))
    assert AP.map_picture("deconvnet", torch.randn(1, 8, 8)).shape == (3, 8, 8)  # a grey model


def test_strip_has_a_labelled_cell_per_map() -> None:
    strip = AP.label_strip([torch.zeros(3, 8, 8)] * 3, ["a", "b", "c"], size=20)
    assert strip.shape == (3, 16 + 20, 3 * (20 + 4))
    assert float(strip[:, 16:, 20:24].min()) == 1.0  # white gap between cells


def test_pictures_of_one_map() -> None:
    pixels, attr = torch.rand(3, 8, 8), torch.rand(1, 8, 8)
    pics = AP.attribution_pictures(pixels, attr, "grad_cam", 0.0, [("saliency", "S", attr)] * 2)
    assert torch.equal(pics["map"], AP.map_picture("grad_cam", attr))
    assert torch.allclose(pics["overlay"], pixels, atol=1e-6)  # opacity 0: the photo
    assert pics["strip"].shape[2] == 2 * (128 + 4)
    c = pics["composite"]
    assert c.shape == (1, 3, 8, 8 + 6 + 8 + 6 + 8)
    assert torch.equal(c[0, :, :, :8], pixels) and torch.equal(c[0, :, :, 14:22], pics["map"])
    alone = AP.attribution_pictures(pixels, attr, "grad_cam", 0.5)
    assert alone["strip"].shape[2] == 128 + 4
