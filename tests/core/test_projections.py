"""DeconvNet's shared pipeline for one unit (core.projections): crops, projections, the note."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import projections as P
from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core.imaging import signed_to_pixels


def _pixels(n: int = 12, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return list(torch.rand(n, 3, size, size, generator=g))


def test_crop_patches_cut_exactly_the_box() -> None:
    img = torch.arange(2 * 3 * 8 * 8.0).view(2, 3, 8, 8)
    entries = [
        T.Entry(0, 1.0, 0, "a", 0, 0, (1, 2, 4, 7)),
        T.Entry(1, 0.5, 1, "b", 0, 0, (0, 0, 8, 8)),
    ]
    crops = P.crop_patches(img, entries)
    assert torch.equal(crops[0], img[0, :, 1:4, 2:7]) and crops[0].shape == (3, 3, 5)
    assert torch.equal(crops[1], img[1])
    with pytest.raises(ValueError, match="one per entry"):
        P.crop_patches(img[:1], entries)


def test_projection_is_the_deconvnet_of_each_entrys_position_and_stays_in_its_field(
    tiny_handle,
) -> None:
    h = tiny_handle
    top = T.top_k_patches(h, "conv2", _pixels(), k=4, units=[3])
    entries = top.entries(3)
    imgs = top.images_for(3)
    proj = P.project_unit(h, "conv2", 3, imgs, entries, "deconvnet")
    # the same as DeconvNet of the unit at each image's own maximum, image by image
    for b, e in enumerate(entries):
        one = A.deconvnet(h, h.normalize(imgs[b : b + 1]), A.unit_at("conv2", 3, e.y, e.x))
        torch.testing.assert_close(proj[b : b + 1], one.cpu())
        # a unit at (y, x) sees only its receptive field: nothing outside the box, something in
        t0, l0, b0, r0 = e.box
        outside = proj[b].abs().clone()
        outside[:, t0:b0, l0:r0] = 0
        assert outside.max() == 0
        assert proj[b, :, t0:b0, l0:r0].abs().max() > 0
    guided = P.project_unit(h, "conv2", 3, imgs, entries, "guided_backprop")
    assert not torch.allclose(guided, proj)  # the other rule really runs


def test_unit_projections_match_the_patches_and_the_shown_projections(tiny_handle) -> None:
    h = tiny_handle
    data = _pixels()
    top = T.top_k_patches(h, "conv2", data, k=5, units=[1, 2])
    up = P.unit_projections(h, top, 2, method="deconvnet")
    assert up.layer == "conv2" and up.unit == 2 and up.note == ""
    assert [e.image for e in up.entries] == [e.image for e in top.entries(2)]
    for mine, theirs in zip(up.patches, top.patches(2), strict=True):
        assert torch.equal(mine, theirs)
    assert up.projections is not None and up.shown is not None
    torch.testing.assert_close(up.shown, signed_to_pixels(up.projections))
    assert [p.shape for p in up.projection_patches] == [p.shape for p in up.patches]
    only = P.unit_projections(h, top, 2, project=False)
    assert only.projections is None and only.projection_patches == [] and len(only.patches) == 5


def test_bad_method_fails_before_any_work(tiny_handle) -> None:
    top = T.top_k_patches(tiny_handle, "conv2", _pixels(4), k=2, units=[0])
    with pytest.raises(ValueError, match="deconvnet, guided_backprop"):
        P.unit_projections(tiny_handle, top, 0, method="guided")
    with pytest.raises(IndexError, match="not part of this top-k pass"):
        P.unit_projections(tiny_handle, top, 5)


class SiluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_unsupported_activation_keeps_the_patches_and_says_why() -> None:
    h = load_model(SiluNet(), device="cpu", input_size=16)
    top = T.top_k_patches(h, "features.1", _pixels(4, 16), k=2, units=[0])
    up = P.unit_projections(h, top, 0)
    assert len(up.patches) == 2 and up.projections is None and up.projection_patches == []
    assert "SiLU" in up.note or "silu" in up.note.lower()


def test_add_projections_fills_in_what_project_false_left_out(tiny_handle) -> None:
    h = tiny_handle
    top = T.top_k_patches(h, "conv2", _pixels(), k=4, units=[3])
    bare = P.unit_projections(h, top, 3, method="guided_backprop", project=False)
    assert bare.projections is None and bare.projection_patches == []
    assert P.add_projections(h, bare) is bare
    full = P.unit_projections(h, top, 3, method="guided_backprop")
    assert torch.equal(bare.projections, full.projections)
    assert all(torch.equal(a, b) for a, b in zip(bare.projection_patches, full.projection_patches))


def test_max_pooling_is_what_gives_deconvnet_its_switches(tiny_handle) -> None:
    assert P.has_max_pooling(tiny_handle)  # the tiny model pools
    flat = load_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), device="cpu", input_size=16)
    assert not P.has_max_pooling(flat) and "switches" in P.NO_POOL_NOTE
