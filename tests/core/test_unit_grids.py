"""The top-9 pictures of a unit: cells, alignment at the border, grids, text, records."""

from __future__ import annotations

import torch

from cnnvis_widgets.core import unit_grids as G
from cnnvis_widgets.core.topk import Entry


def entry(rank: int, box=(0, 0, 8, 8)) -> Entry:
    return Entry(rank, 1.0 / (rank + 1), rank, f"img{rank}.jpg", 1, 2, box)


def test_cells_place_pictures_row_by_row_inside_a_frame() -> None:
    inner = G.CELL - 2 * G.GAP
    grid = G.cells([torch.zeros(3, inner, inner), torch.ones(3, inner, inner)], fill=0.5)
    assert grid.shape == (3, 3 * G.CELL, 3 * G.CELL)
    assert float(grid[:, G.GAP : G.GAP + inner, G.GAP : G.GAP + inner].max()) == 0.0
    x = G.CELL + G.GAP
    assert float(grid[:, G.GAP : G.GAP + inner, x : x + inner].min()) == 1.0
    assert float(grid[0, 0, 0]) == 0.5 and float(grid[0, -1, -1]) == 0.5  # frame, empty cell


def test_a_border_patch_sits_against_the_side_it_came_from() -> None:
    size = (64, 64)
    assert G.align((0, 0, 20, 20), size) == "bottom-right"
    assert G.align((44, 44, 64, 64), size) == "top-left"
    assert G.align((10, 44, 30, 64), size) == "-left"  # letterbox reads the words it holds
    assert G.align((10, 10, 30, 30), size) == "center"


def test_patch_and_projection_grids() -> None:
    entries = [entry(0, (0, 0, 4, 8)), entry(1, (2, 2, 10, 10))]
    images = torch.rand(2, 3, 16, 16)
    patches = [img[:, e.box[0] : e.box[2], e.box[1] : e.box[3]] for e, img in zip(entries, images)]
    grid = G.patch_grid(entries, patches, (16, 16))
    assert grid.shape == (3, 3 * G.CELL, 3 * G.CELL)
    zero = G.projection_grid(entries, torch.zeros(2, 3, 16, 16), (16, 16))
    inner = slice(G.GAP, G.CELL - G.GAP)
    # a zero projection is mid grey wherever the patch is (letterbox fills the rest)
    assert torch.allclose(zero[:, inner, inner].median(), torch.tensor(0.5), atol=1e-3)
    assert not torch.equal(grid, zero)


def test_text_records_and_detail_picture() -> None:
    entries = [entry(0, (0, 1, 5, 7))]
    rec = G.entry_records(entries)
    assert rec == [
        {
            "rank": 0,
            "image": "img0.jpg",
            "index": 0,
            "value": 1.0,
            "y": 1,
            "x": 2,
            "box": [0, 1, 5, 7],
        }
    ]
    photo = torch.full((3, 8, 8), 0.5)
    proj = torch.zeros(1, 3, 8, 8)
    proj[..., 3, 3] = 1.0
    pic = G.detail_picture(photo, proj, (0, 0, 6, 6), 0.8)
    assert pic.shape == (3, 8, 8) and not torch.equal(pic, photo)
    assert torch.equal(pic[:, 7, 7], photo[:, 7, 7])  # outside the box and the map


def test_side_by_side_keeps_both_pictures_and_a_white_gap() -> None:
    left, right = torch.zeros(3, 5, 4), torch.full((3, 5, 2), 0.5)
    out = G.side_by_side(left, right, gap=3)
    assert out.shape == (3, 5, 9)
    assert torch.equal(out[:, :, :4], left) and torch.equal(out[:, :, 7:], right)
    assert bool((out[:, :, 4:7] == 1.0).all())
