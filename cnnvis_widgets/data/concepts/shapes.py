"""The shapes of the generated probe set: signed distances in pixels (negative inside)."""

from __future__ import annotations

import math

import torch

from .textures import _tri

__all__ = ["SHAPES"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")


def _sd_circle(a, b, r):
    return torch.sqrt(a * a + b * b) - r


def _sd_square(a, b, r):
    return torch.maximum(a.abs(), b.abs()) - 0.82 * r


def _sd_triangle(a, b, r):
    # equilateral triangle with circumradius r, one vertex up (-b)
    k = 0.5 * r
    d1 = b - k
    d2 = -0.866 * a - 0.5 * b - k
    d3 = 0.866 * a - 0.5 * b - k
    return torch.maximum(torch.maximum(d1, d2), d3)


def _sd_star(a, b, r):
    rho = torch.sqrt(a * a + b * b)
    theta = torch.atan2(b, a)
    edge = r * (0.5 + 0.5 * _tri(5 * theta / (2 * math.pi) + 0.25).abs() ** 1.5)
    return (rho - edge) * 0.8


def _sd_cross(a, b, r):
    arm = 0.3 * r
    h = torch.maximum(a.abs() - r, b.abs() - arm)
    w = torch.maximum(a.abs() - arm, b.abs() - r)
    return torch.minimum(h, w)


def _sd_ring(a, b, r):
    return (torch.sqrt(a * a + b * b) - 0.72 * r).abs() - 0.28 * r


_SHAPE_FNS = {
    "circle": _sd_circle,
    "square": _sd_square,
    "triangle": _sd_triangle,
    "star": _sd_star,
    "cross": _sd_cross,
    "ring": _sd_ring,
}
