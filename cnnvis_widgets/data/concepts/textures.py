"""The textures of the generated probe set: pattern fields in pattern units (one period = 1),
1 where the second colour is drawn, 0 elsewhere, anti-aliased."""

from __future__ import annotations

import math

import torch

__all__ = ["TEXTURES"]

TEXTURES: tuple[str, ...] = (
    "striped",
    "dotted",
    "chequered",
    "zigzagged",
    "grid",
    "wavy",
    "blotchy",
    "brick",
    "crosshatched",
    "honeycombed",
    "spiralled",
)


def _band(d: torch.Tensor, half_width: float, aa: torch.Tensor) -> torch.Tensor:
    """1 where ``d < half_width``, 0 beyond, with a linear ramp ``aa`` wide (anti-aliasing)."""
    return ((half_width - d) / aa + 0.5).clamp(0.0, 1.0)


def _dist_int(t: torch.Tensor) -> torch.Tensor:
    """Distance to the nearest integer."""
    return (t - torch.round(t)).abs()


def _tri(t: torch.Tensor) -> torch.Tensor:
    """Triangle wave in [-1, 1] with period 1."""
    return 4.0 * _dist_int(t + 0.25) - 1.0


# ------------------------------------------------------------------------------------------
# texture fields: p in [0, 1], 1 where the second colour is drawn. Pattern units: one period = 1.


def _tex_striped(u, v, aa, ctx):
    return _band((u - torch.floor(u) - 0.5).abs(), 0.25, aa)


def _tex_wavy(u, v, aa, ctx):
    w = u + 0.35 * torch.sin(2 * math.pi * v / 2.2)
    return _band((w - torch.floor(w) - 0.5).abs(), 0.25, aa * 1.15)


def _tex_zigzagged(u, v, aa, ctx):
    w = u + 0.45 * _tri(v / 1.6)
    return _band((w - torch.floor(w) - 0.5).abs(), 0.25, aa * 1.3)


def _tex_chequered(u, v, aa, ctx):
    su = _band((u - torch.floor(u) - 0.5).abs(), 0.25, aa)
    sv = _band((v - torch.floor(v) - 0.5).abs(), 0.25, aa)
    return su + sv - 2 * su * sv


def _tex_grid(u, v, aa, ctx):
    return torch.maximum(_band(_dist_int(u), 0.09, aa), _band(_dist_int(v), 0.09, aa))


def _tex_crosshatched(u, v, aa, ctx):
    # two families of thin lines crossing at 60 degrees, twice as dense as the period
    a = 2.0 * u
    b = 2.0 * (0.5 * u + 0.866 * v)
    return torch.maximum(_band(_dist_int(a), 0.1, 2 * aa), _band(_dist_int(b), 0.1, 2 * aa))


def _tex_dotted(u, v, aa, ctx):
    row = torch.round(v)
    du = _dist_int(u + 0.5 * torch.remainder(row, 2.0))
    dv = v - row
    return _band(torch.sqrt(du * du + dv * dv), 0.24, aa)


def _tex_brick(u, v, aa, ctx):
    row = torch.floor(2.0 * v)
    horizontal = _dist_int(2.0 * v) / 2.0
    vertical = _dist_int(u + 0.5 * torch.remainder(row, 2.0))
    return torch.maximum(_band(horizontal, 0.035, aa), _band(vertical, 0.035, aa))


def _tex_honeycombed(u, v, aa, ctx):
    # distance to the edge of hexagonal cells of width 1 (two interleaved rectangular lattices)
    sy = math.sqrt(3.0)
    ca_u = (torch.floor(u) + 0.5) * 1.0
    ca_v = (torch.floor(v / sy) + 0.5) * sy
    cb_u = torch.floor(u - 0.5) + 1.0
    cb_v = (torch.floor(v / sy - 0.5) + 1.0) * sy
    au, av = u - ca_u, v - ca_v
    bu, bv = u - cb_u, v - cb_v
    use_a = (au * au + av * av) < (bu * bu + bv * bv)
    hu = torch.where(use_a, au, bu).abs()
    hv = torch.where(use_a, av, bv).abs()
    # hexagon "radius" (pointy side along v): max(|u|, |u| / 2 + |v| * sqrt(3) / 2)
    r = torch.maximum(hu, 0.5 * hu + 0.866 * hv)
    return _band(0.5 - r, 0.05, aa)


def _tex_blotchy(u, v, aa, ctx):
    # isotropic: drawn on the pixel grid (see ProbeSet._draw), not in the rotated frame
    raise NotImplementedError


def _tex_spiralled(u, v, aa, ctx):
    r = torch.sqrt(u * u + v * v)
    theta = torch.atan2(v, u) / (2 * math.pi)
    w = r + theta
    return _band((w - torch.floor(w) - 0.5).abs(), 0.25, aa)


_TEXTURE_FNS = {
    "striped": _tex_striped,
    "dotted": _tex_dotted,
    "chequered": _tex_chequered,
    "zigzagged": _tex_zigzagged,
    "grid": _tex_grid,
    "wavy": _tex_wavy,
    "blotchy": _tex_blotchy,
    "brick": _tex_brick,
    "crosshatched": _tex_crosshatched,
    "honeycombed": _tex_honeycombed,
    "spiralled": _tex_spiralled,
}
