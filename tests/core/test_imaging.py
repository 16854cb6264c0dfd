"""Pictures (core/imaging.py): encode/decode round trips, grids, heat maps, letterbox, boxes."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from cnnvis_widgets.core.imaging import (
    COLORMAPS,
    draw_box,
    encode,
    heatmap,
    letterbox,
    make_grid,
    pil_to_tensor,
    to_uint8,
)


def levels(c: int, h: int = 6, w: int = 5, seed: int = 0) -> torch.Tensor:
    """Pixels on the 8-bit levels, so that a lossless round trip is exact."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w), generator=g).float() / 255


@pytest.mark.parametrize("channels, mode", [(3, "RGB"), (1, "L")])
def test_png_round_trip_is_exact(channels, mode) -> None:
    px = levels(channels)
    data = encode(px, "png")
    img = Image.open(io.BytesIO(data))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and img.mode == mode and img.size == (5, 6)
    assert torch.equal(pil_to_tensor(img)[0], px)


def test_jpeg_is_close_and_bad_formats_or_batches_are_refused() -> None:
    px = torch.full((3, 16, 16), 0.5)
    data = encode(px, "jpeg", quality=95)
    assert data[:2] == b"\xff\xd8"
    assert (pil_to_tensor(Image.open(io.BytesIO(data)))[0] - px).abs().max() < 0.02
    with pytest.raises(ValueError, match="unknown image format 'gif'"):
        encode(px, "gif")
    with pytest.raises(ValueError, match="batch of 2"):
        to_uint8(torch.zeros(2, 3, 4, 4))


def test_non_finite_and_out_of_range_pixels_are_clamped() -> None:
    px = torch.tensor([[[float("nan"), float("inf"), -3.0, 2.0]]])
    assert to_uint8(px)[0, :, 0].tolist() == [0, 255, 0, 255]


def test_grid_places_each_image_in_its_cell() -> None:
    batch = torch.stack([torch.full((1, 4, 3), (i + 1) / 10) for i in range(5)])
    grid = make_grid(batch, ncol=3, pad=2, fill=1.0)
    assert grid.shape == (1, 2 * (4 + 2) + 2, 3 * (3 + 2) + 2)
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = 2 + r * 6, 2 + c * 5
        assert torch.allclose(grid[:, y : y + 4, x : x + 3], batch[i])
    assert (grid[:, 8:12, 12:15] == 1.0).all()  # the sixth cell is empty
    assert make_grid(torch.zeros(4, 3, 2, 2), pad=0).shape == (3, 4, 4)  # 2 x 2 by default


def test_heat_maps_put_the_strongest_colour_where_the_attribution_is() -> None:
    attr = torch.zeros(1, 3, 8, 8)
    attr[0, 1, 2, 5] = -4.0  # strong by magnitude (unsigned maps take |attr|)
    heat = heatmap(attr)
    assert heat.shape == (1, 3, 8, 8) and 0 <= heat.min() and heat.max() <= 1
    assert torch.allclose(heat[0, :, 2, 5], torch.tensor(COLORMAPS["inferno"][-1]), atol=1e-3)
    assert torch.allclose(heat[0, :, 0, 0], torch.tensor(COLORMAPS["inferno"][0]), atol=1e-3)
    signed = heatmap(attr, signed=True)  # coolwarm: zero is white, negative is blue
    assert torch.allclose(signed[0, :, 0, 0], torch.ones(3), atol=1e-3)
    assert signed[0, 2, 2, 5] > signed[0, 0, 2, 5]


@pytest.mark.parametrize(
    "align, rows, cols", [("center", slice(5, 15), slice(0, 20)), ("bottom", slice(10, 20), None)]
)
def test_letterbox_keeps_the_aspect_ratio_and_aligns(align, rows, cols) -> None:
    wide = torch.ones(3, 10, 20)
    out = letterbox(wide, 20, fill=0.25, align=align)
    assert out.shape == (3, 20, 20)
    inside = torch.zeros(20, 20, dtype=torch.bool)
    inside[rows, cols if cols is not None else slice(None)] = True
    assert (out[:, inside] == 1.0).all() and (out[:, ~inside] == 0.25).all()


def test_letterbox_bottom_right_puts_a_tall_patch_at_the_right() -> None:
    out = letterbox(torch.ones(1, 8, 4), 8, fill=0.0, align="bottom-right")
    assert (out[0, :, 4:] == 1).all() and (out[0, :, :4] == 0).all()


def test_draw_box_draws_an_outline_on_a_copy() -> None:
    px = torch.zeros(3, 10, 10)
    out = draw_box(px, (2, 3, 7, 9), color=(1.0, 0.0, 0.0), width=1)
    assert px.abs().sum() == 0  # the input is untouched
    red = out[0] == 1.0
    assert red[2, 3:9].all() and red[6, 3:9].all() and red[2:7, 3].all() and red[2:7, 8].all()
    assert not red[3:6, 4:8].any() and red.sum() == 2 * 6 + 2 * 3
    clipped = draw_box(px, (-5, -5, 4, 4), width=1)  # clipped to the picture
    assert clipped[1, 0, :4].all() and clipped[1, 3, :4].all()
