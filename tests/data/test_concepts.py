"""The generated concept probe set: determinism, label layout, masks that match the pixels."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from cnnvis_widgets.data.concepts import (
    COLORS,
    SHAPES,
    TEXTURES,
    ProbeSet,
    label_colors,
    probe_set,
)


@pytest.fixture(scope="module")
def probe() -> ProbeSet:
    return probe_set(24, size=64, seed=3)


@pytest.fixture(scope="module")
def batch(probe):
    return probe.batch(range(len(probe)))


def test_labels_and_categories_are_laid_out_like_broden(probe) -> None:
    names = [c.name for c in probe.labels]
    assert names[0] == "-" and probe.categories == ["color", "texture", "shape"]
    assert [c.name for c in probe.labels if c.category == "color"] == list(COLORS)
    assert len(COLORS) == 11
    for tex in TEXTURES:
        scaled = [c for c in probe.labels if c.parent == tex]
        assert [c.name for c in scaled] == [f"{tex}@{s}px" for s in (6, 12, 24)]
        assert all(c.category == "texture" and c.root == tex for c in scaled)
        merged = probe.concept(tex)
        assert merged.category == "texture" and merged.parent is None
    assert [c.name for c in probe.labels if c.category == "shape"] == list(SHAPES)
    assert all(c.index == i for i, c in enumerate(probe.labels))
    with pytest.raises(KeyError, match="nearest: striped"):
        probe.concept("stripped")


def test_images_and_masks_have_the_documented_shapes(probe, batch) -> None:
    assert batch.images.shape == (24, 3, 64, 64) and batch.images.dtype == torch.float32
    assert float(batch.images.min()) >= 0.0 and float(batch.images.max()) <= 1.0
    assert batch.masks is not None and batch.masks.shape == (24, 4, 16, 16)
    assert probe.mask_size == 16 and probe_set(2).mask_size == 56
    assert batch.present.all() and batch.scalars is None
    assert batch.indices.tolist() == list(range(24))
    # every label of a layer belongs to that layer's category (0 = nothing)
    cat_of = np.array(
        [probe.categories.index(c.category) if c.category else -1 for c in probe.labels]
    )
    for k, cat in enumerate(batch.mask_categories):
        labs = batch.masks[:, k].unique().numpy()
        labs = labs[labs > 0]
        assert (cat_of[labs] == cat).all(), (k, labs)
    # colour annotates every pixel; several concepts per image make IoU meaningful
    assert (batch.masks[:, 0] > 0).all()
    per_image = [len(set(batch.masks[i].unique().tolist()) - {0}) for i in range(24)]
    assert min(per_image) >= 3, per_image


def test_the_same_image_whatever_the_batch_and_seeded(probe) -> None:
    whole = probe.batch(range(12))
    parts = probe.batch([7, 2, 11])
    assert torch.equal(parts.images[0], whole.images[7])
    assert torch.equal(parts.images[2], whole.images[11])
    assert torch.equal(parts.masks[1], whole.masks[2])
    again = probe_set(24, size=64, seed=3).batch([5])
    assert torch.equal(again.images[0], whole.images[5])
    other = probe_set(24, size=64, seed=4).batch([5])
    assert not torch.equal(other.images[0], whole.images[5])
    chunks = list(probe.batches(batch_size=10, start=2, stop=23))
    assert [len(b) for b in chunks] == [10, 10, 1]
    assert torch.equal(chunks[1].images[3], probe.batch([15]).images[0])


def test_texture_masks_merge_scales_into_the_parent(probe, batch) -> None:
    scaled, merged = batch.masks[:, 1], batch.masks[:, 2]
    assert torch.equal(scaled > 0, merged > 0)
    assert (scaled > 0).any()
    for lab in scaled.unique().tolist():
        if lab == 0:
            continue
        parent = probe.concept(probe.labels[lab].parent)
        assert (merged[scaled == lab] == parent.index).all()
    # the texture regions are textured: much more local contrast than plain regions
    img = batch.images.mean(1, keepdim=True)
    local = (img - torch.nn.functional.avg_pool2d(img, 5, 1, 2)).abs()
    cell = torch.nn.functional.avg_pool2d(local, 4)[:, 0]  # per mask cell
    inner = (merged > 0) & (batch.masks[:, 3] == 0)
    plain = (merged == 0) & (batch.masks[:, 3] == 0)
    assert float(cell[inner].mean()) > 2.0 * float(cell[plain].mean())


def test_colour_masks_match_the_drawn_colours(probe) -> None:
    """Cells labelled with a colour term have that colour (inside its HSV box, with margins
    for shading, grain and blur). Only cells in plain (untextured) regions are checked, where
    a cell holds one colour."""
    big = probe_set(48, size=64, seed=11).batch(range(48))
    cells = torch.nn.functional.avg_pool2d(big.images, 4)  # (B, 3, 16, 16) mean colour per cell
    plain = (big.masks[:, 1] == 0) & (big.masks[:, 3] == 0)
    # interior cells only (no region border next to them)
    col = big.masks[:, 0]
    same = col.clone().bool()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        same &= torch.roll(col, (dy, dx), (1, 2)) == col
    checked = 0
    for c in probe.labels:
        if c.category != "color":
            continue
        sel = plain & same & (col == c.index)
        if int(sel.sum()) < 5:
            continue
        rgb = cells.permute(0, 2, 3, 1)[sel].numpy()
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
        hue, sat, val, _ = COLORS[c.name]
        v_med = float(np.median(hsv[:, 2]))
        assert val[0] - 0.15 <= v_med <= val[1] + 0.1, (c.name, v_med)
        s_med = float(np.median(hsv[:, 1]))
        assert sat[0] - 0.2 <= s_med <= sat[1] + 0.15, (c.name, s_med)
        if sat[0] >= 0.3:  # chromatic terms: the hue is in the box
            h_med = float(np.median(((hsv[:, 0] * 360 + 180 - hue[0]) % 360) - 180 + hue[0]))
            assert hue[0] - 12 <= h_med <= hue[1] + 12, (c.name, h_med)
        checked += 1
    assert checked >= 8


def test_shape_masks_are_compact_blobs(batch) -> None:
    shapes = batch.masks[:, 3]
    has = (shapes > 0).flatten(1).any(1)
    assert 0.5 < float(has.float().mean()) < 1.0  # most images have a shape, some none
    area = (shapes > 0).flatten(1).float().mean(1)[has]
    assert float(area.min()) > 0.01 and float(area.max()) < 0.6


def test_lazy_long_probe_sets_and_bad_arguments() -> None:
    huge = probe_set(10**6, size=32)  # holds no images
    assert len(huge) == 10**6
    late = huge.batch([999_999], masks=False)
    assert late.masks is None and late.images.shape == (1, 3, 32, 32)
    with pytest.raises(IndexError, match="valid 0..999999"):
        huge.batch([10**6])
    with pytest.raises(ValueError, match="n_images"):
        probe_set(0)
    with pytest.raises(ValueError, match="scales"):
        probe_set(4, scales=(1,))
    assert probe_set(4, size=64, scales=(4, 8)).concept("grid@8px").parent == "grid"


def test_preview_and_label_colours(probe, batch) -> None:
    pic = probe.preview(range(3), layer=0)
    assert pic.shape[0] == 3 and pic.shape[1] > 2 * 64 and pic.shape[2] > 3 * 64
    shown = label_colors(batch.masks[:2, 0], probe.labels)
    assert shown.shape == (2, 3, 16, 16)
    red = probe.concept("red").index
    swatch = label_colors(torch.full((1, 1, 1), red), probe.labels)[0, :, 0, 0]
    assert swatch[0] > 0.5 and swatch[1] < 0.2 and swatch[2] < 0.2
    assert torch.equal(
        label_colors(torch.zeros(1, 2, 2, dtype=torch.long), probe.labels), torch.zeros(1, 3, 2, 2)
    )
