"""Counter-based random numbers for the generated probe set: the same on every device and in every
batch (a hashed lattice, smooth value noise, a fixed film-grain tile)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

_M1, _M2, _M3 = 0x27D4EB2F, 0x165667B1, 0x3C6EF35F
_M4, _M5 = 0x2C1B3C6D, 0x297A2D39
_MASK32 = 0xFFFFFFFF


def _hash(ix: torch.Tensor, iy: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) float32 from integer coordinates and a seed (all int64, broadcast)."""
    h = (ix & 0xFFFFFFF) * _M1 + (iy & 0xFFFFFFF) * _M2 + (seed & 0x7FFFFFFF) * _M3
    h = h & _MASK32
    h = h ^ (h >> 15)
    h = (h * _M4) & _MASK32
    h = h ^ (h >> 12)
    h = (h * _M5) & _MASK32
    h = h ^ (h >> 15)
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


def _smooth(t: torch.Tensor) -> torch.Tensor:
    return t * t * (3.0 - 2.0 * t)


def _lattice_noise(
    seed: torch.Tensor, spacing: torch.Tensor, offset: torch.Tensor, size: int
) -> torch.Tensor:
    """Smooth value noise in [0, 1], ``(n, size, size)``: random values on a square lattice of
    ``spacing`` pixels (per row of ``seed``), smoothstep-interpolated. Hashes are taken on the
    lattice only, so this costs a few operations per pixel.

    ``seed`` (n,) int64, ``spacing`` (n,) float pixels, ``offset`` (n, 2) float pixels.
    """
    dev = seed.device
    n = seed.shape[0]
    grid_n = int(math.ceil(size / float(spacing.min())) + 3)
    lat = torch.arange(grid_n, device=dev, dtype=torch.int64)
    grid = _hash(lat.view(1, -1, 1), lat.view(1, 1, -1), seed.view(-1, 1, 1))  # (n, G, G) [y, x]
    coords = torch.arange(size, device=dev, dtype=torch.float32) + 0.5

    def axis(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = coords.view(1, -1) / spacing.view(-1, 1) + torch.remainder(offset[:, k], 1.0).view(
            -1, 1
        )
        i = torch.floor(pos)
        return i.to(torch.int64).clamp(0, grid_n - 2), _smooth(pos - i)

    iy, fy = axis(1)
    ix, fx = axis(0)
    rows0 = grid.gather(1, iy.unsqueeze(2).expand(n, size, grid_n))
    rows1 = grid.gather(1, (iy + 1).unsqueeze(2).expand(n, size, grid_n))
    rows = rows0 + (rows1 - rows0) * fy.unsqueeze(2)  # (n, size, G)
    c0 = rows.gather(2, ix.unsqueeze(1).expand(n, size, size))
    c1 = rows.gather(2, (ix + 1).unsqueeze(1).expand(n, size, size))
    return c0 + (c1 - c0) * fx.unsqueeze(1)


def _smooth_noise(seed: torch.Tensor, grids: Sequence[int], size: int) -> torch.Tensor:
    """Smooth noise in about [0, 1], ``(n * len(grids), size, size)``: for each seed (n,) and
    each grid side ``g``, a ``(g + 1) x (g + 1)`` lattice of hashed values upsampled bicubically
    (a feature size of ``size / g`` pixels)."""
    out = []
    for k, g in enumerate(grids):
        lat = torch.arange(g + 1, device=seed.device, dtype=torch.int64)
        grid = _hash(lat.view(1, -1, 1), lat.view(1, 1, -1), seed.view(-1, 1, 1) * 7 + k)
        up = F.interpolate(grid.unsqueeze(1), size=(size, size), mode="bicubic", align_corners=True)
        out.append(up[:, 0])
    if len(out) == 1:
        return out[0]
    return torch.stack(out, dim=1).view(-1, size, size)


_GRAIN: dict[str, torch.Tensor] = {}
_GRAIN_TILE = 257  # prime side: shifted copies of the tile do not line up between images


def _grain_tile(dev: torch.device) -> torch.Tensor:
    """A fixed ``(3, T, T)`` tile of unit Gaussian noise (drawn once on the CPU, then cached)."""
    key = str(dev)
    if key not in _GRAIN:
        gen = torch.Generator().manual_seed(20170721)
        tile = torch.randn(3, _GRAIN_TILE, _GRAIN_TILE, generator=gen)
        _GRAIN[key] = tile.to(dev)
    return _GRAIN[key]
