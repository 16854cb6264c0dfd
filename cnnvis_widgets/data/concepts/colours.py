"""The colours of the generated probe set: the 11 Broden colour terms as boxes in HSV space, and
:func:`label_colors` to draw label maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .protocol import Concept

__all__ = ["COLORS", "label_colors"]

#: colour term -> (hue range in degrees, saturation range, value range, relative frequency)
COLORS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], float]] = {
    "black": ((0, 360), (0.0, 0.35), (0.03, 0.16), 0.09),
    "blue": ((200, 232), (0.45, 0.9), (0.45, 0.92), 0.12),
    "brown": ((16, 34), (0.45, 0.8), (0.26, 0.5), 0.13),
    "green": ((78, 150), (0.4, 0.85), (0.32, 0.8), 0.14),
    "grey": ((0, 360), (0.0, 0.08), (0.36, 0.68), 0.13),
    "orange": ((22, 36), (0.75, 1.0), (0.85, 1.0), 0.06),
    "pink": ((320, 352), (0.22, 0.5), (0.86, 1.0), 0.05),
    "purple": ((262, 292), (0.4, 0.8), (0.35, 0.72), 0.05),
    "red": ((-6, 6), (0.8, 1.0), (0.6, 0.95), 0.07),
    "white": ((0, 360), (0.0, 0.06), (0.88, 1.0), 0.09),
    "yellow": ((47, 60), (0.6, 1.0), (0.82, 1.0), 0.07),
}


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorized HSV (h in degrees) -> RGB in [0, 1]; returns ``(..., 3)``."""
    h = np.mod(h, 360.0) / 60.0
    c = v * s
    x = c * (1 - np.abs(np.mod(h, 2.0) - 1))
    m = v - c
    zeros = np.zeros_like(h)
    sector = np.floor(h).astype(int) % 6
    r = np.choose(sector, [c, x, zeros, zeros, x, c])
    g = np.choose(sector, [x, c, c, x, zeros, zeros])
    b = np.choose(sector, [zeros, zeros, x, c, c, x])
    return np.stack([r + m, g + m, b + m], axis=-1)


def label_colors(maps: torch.Tensor, labels: Sequence[Concept]) -> torch.Tensor:
    """Label maps ``(B, M, M)`` -> pixel-space ``(B, 3, M, M)``: colour terms in their own colour,
    other labels in distinct hues, no label black."""
    palette = torch.zeros(len(labels), 3)
    rng = np.random.default_rng(7)
    for c in labels[1:]:
        if c.category == "color" and c.name in COLORS:
            h, sat, val, _ = COLORS[c.name]
            rgb = _hsv_to_rgb(
                np.array([(h[0] + h[1]) / 2]), np.array([sum(sat) / 2]), np.array([sum(val) / 2])
            )[0]
        else:
            rgb = _hsv_to_rgb(rng.uniform(0, 360, 1), np.array([0.7]), np.array([0.95]))[0]
        palette[c.index] = torch.as_tensor(rgb, dtype=torch.float32)
    out = palette[maps.cpu().clamp(0, len(labels) - 1)]
    return out.permute(0, 3, 1, 2).contiguous()
