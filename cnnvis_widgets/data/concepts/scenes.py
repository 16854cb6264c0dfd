"""The generated probe set: :class:`ProbeSet` draws scenes of colours, textures and shapes with
their masks from a seed (see :mod:`cnnvis_widgets.data.concepts`), :func:`probe_set` makes one."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ... import limits
from .colours import COLORS, _hsv_to_rgb, label_colors
from .noise import _GRAIN_TILE, _grain_tile, _lattice_noise, _smooth_noise
from .protocol import Concept, ProbeBase, ProbeBatch
from .shapes import _SHAPE_FNS, SHAPES
from .textures import _TEXTURE_FNS, TEXTURES

__all__ = ["ProbeSet", "probe_set", "PROBE_VERSION", "CATEGORIES", "MASK_LAYERS"]

#: version of the drawing code; part of :meth:`ProbeSet.describe` (and so of cache keys)
PROBE_VERSION = 1


CATEGORIES: tuple[str, ...] = ("color", "texture", "shape")
#: the four mask layers of a generated batch and the category each belongs to
MASK_LAYERS: tuple[tuple[str, str], ...] = (
    ("color", "color"),
    ("texture", "texture"),
    ("texture (merged scales)", "texture"),
    ("shape", "shape"),
)

_REGIONS = 4  # region slots per image (2-4 used)
_SHAPE_SLOTS = 2  # shape slots per image (0-2 used)
_ELEMENTS = _REGIONS + _SHAPE_SLOTS
_CHUNK = 16  # images drawn together (bounds memory for big batches)


class ProbeSet(ProbeBase):
    """A generated concept probe set: ``n_images`` scenes drawn on demand from ``seed``.

    Holds no pictures: :meth:`batch` draws the asked images (with their masks) every time, so a
    probe set of any length costs no memory. Build one with :func:`probe_set`.

    Attributes
    ----------
    labels : list of Concept
        ``labels[i]`` is label number ``i``; ``labels[0]`` is ``"-"`` (no label).
    categories : list of str
        ``["color", "texture", "shape"]``.
    size, mask_size : int
        Side of the images and of the masks in pixels.
    scales : tuple of int
        Texture periods in pixels.
    """

    def __init__(
        self,
        n_images: int,
        size: int = 224,
        seed: int = 0,
        *,
        mask_size: int | None = None,
        scales: Sequence[int] = (6, 12, 24),
        device: str | torch.device | None = None,
    ) -> None:
        self.n_images = limits.check_int(
            n_images, "n_images", minimum=1, limit="MAX_DATASET_IMAGES"
        )
        self.size = limits.check_side(size)
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        self.seed = limits.as_int(seed, "seed")
        self.mask_size = (
            limits.as_int(mask_size, "mask_size") if mask_size else max(4, self.size // 4)
        )
        if not 1 <= self.mask_size <= self.size:
            raise ValueError(f"mask_size must be between 1 and size ({self.size})")
        self.scales = tuple(limits.as_int(s, "scale") for s in scales)
        if not self.scales or min(self.scales) < 2:
            raise ValueError(f"scales must be texture periods of at least 2 px, got {scales}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.categories = list(CATEGORIES)
        labels = [Concept(0, "-", "")]
        for name in COLORS:
            labels.append(Concept(len(labels), name, "color"))
        self._tex_label = np.zeros((len(TEXTURES), len(self.scales)), dtype=np.int64)
        for t, name in enumerate(TEXTURES):
            for s, scale in enumerate(self.scales):
                self._tex_label[t, s] = len(labels)
                labels.append(Concept(len(labels), f"{name}@{scale}px", "texture", name))
        self._merged_label = np.zeros(len(TEXTURES), dtype=np.int64)
        for t, name in enumerate(TEXTURES):
            self._merged_label[t] = len(labels)
            labels.append(Concept(len(labels), name, "texture"))
        self._shape_label = np.zeros(len(SHAPES), dtype=np.int64)
        for k, name in enumerate(SHAPES):
            self._shape_label[k] = len(labels)
            labels.append(Concept(len(labels), name, "shape"))
        self.labels = labels
        self._color_weights = np.array([c[3] for c in COLORS.values()])
        self._color_weights = self._color_weights / self._color_weights.sum()
        self._color_boxes = np.array(
            [[*c[0], *c[1], *c[2]] for c in COLORS.values()], dtype=np.float64
        )
        self.mask_categories = [self.categories.index(cat) for _, cat in MASK_LAYERS]

    # ----------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        return self.n_images

    def __repr__(self) -> str:
        return (
            f"ProbeSet(n_images={self.n_images}, size={self.size}, seed={self.seed}, "
            f"mask_size={self.mask_size}, scales={self.scales}, labels={len(self.labels) - 1})"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able description (for records and cache keys)."""
        return {
            "kind": "generated",
            "version": PROBE_VERSION,
            "n_images": self.n_images,
            "size": self.size,
            "seed": self.seed,
            "mask_size": self.mask_size,
            "scales": list(self.scales),
        }

    def concept(self, name: str) -> Concept:
        """The label called ``name`` (``KeyError`` listing close names)."""
        for c in self.labels:
            if c.name == name:
                return c
        import difflib

        near = difflib.get_close_matches(name, [c.name for c in self.labels], n=5, cutoff=0.3)
        raise KeyError(f"unknown concept {name!r}; nearest: {', '.join(near) or '(none)'}")

    def _batch(self, idx: list[int], masks: bool, device: str | torch.device | None) -> ProbeBatch:
        """Draw the images ``idx`` and, optionally, their masks."""
        dev = torch.device(device) if device is not None else self.device
        images, maps = [], []
        for lo in range(0, len(idx), _CHUNK):
            im, mk = self._draw(idx[lo : lo + _CHUNK], dev, masks)
            images.append(im)
            maps.append(mk)
        n = len(idx)
        empty = torch.zeros(0, 3, self.size, self.size, device=dev)
        return ProbeBatch(
            indices=torch.tensor(idx, dtype=torch.int64, device=dev),
            images=torch.cat(images) if images else empty,
            masks=(torch.cat(maps) if maps else None) if masks else None,
            mask_categories=list(self.mask_categories),
            scalars=None,
            present=torch.ones(n, len(self.categories), dtype=torch.bool, device=dev),
        )

    # ----------------------------------------------------------------------------- drawing
    def _params(self, index: int) -> dict[str, np.ndarray]:
        """The few random numbers of image ``index`` (numpy, seeded by ``(seed, index)``)."""
        rng = np.random.default_rng([self.seed & 0x7FFFFFFF, int(index), 0xC0C0])
        s = float(self.size)
        ncol = len(COLORS)
        n_regions = int(rng.choice([2, 3, 4], p=[0.3, 0.4, 0.3]))
        n_shapes = int(rng.choice([0, 1, 2], p=[0.25, 0.45, 0.3]))
        c1 = rng.choice(ncol, size=_ELEMENTS, p=self._color_weights)
        c2 = rng.choice(ncol, size=_ELEMENTS, p=self._color_weights)
        same = c2 == c1
        c2[same] = (c1[same] + 1 + rng.integers(0, ncol - 1, size=int(same.sum()))) % ncol
        rgb = []
        for cols in (c1, c2):
            box = self._color_boxes[cols]
            h = box[:, 0] + rng.random(_ELEMENTS) * (box[:, 1] - box[:, 0])
            sat = box[:, 2] + rng.random(_ELEMENTS) * (box[:, 3] - box[:, 2])
            val = box[:, 4] + rng.random(_ELEMENTS) * (box[:, 5] - box[:, 4])
            rgb.append(_hsv_to_rgb(h, sat, val))
        textured = rng.random(_ELEMENTS) < np.array([0.7] * _REGIONS + [0.35] * _SHAPE_SLOTS)
        tex = np.where(textured, rng.integers(0, len(TEXTURES), size=_ELEMENTS), -1)
        scale = rng.integers(0, len(self.scales), size=_ELEMENTS)
        period = np.array(self.scales, dtype=np.float64)[scale] * rng.uniform(0.9, 1.1, _ELEMENTS)
        seeds = np.full(_REGIONS, -1e9)
        pts = rng.uniform(0, s, size=(_REGIONS, 2))
        active_region = np.arange(_REGIONS) < n_regions
        shape_kind = rng.integers(0, len(SHAPES), size=_SHAPE_SLOTS)
        shape_active = np.arange(_SHAPE_SLOTS) < n_shapes
        return {
            "c1": c1,
            "c2": c2,
            "rgb1": rgb[0],
            "rgb2": rgb[1],
            "tex": tex,
            "scale": scale,
            "period": period,
            "angle": rng.uniform(0, math.pi, _ELEMENTS),
            "origin": rng.uniform(0, s, size=(_ELEMENTS, 2)),
            "surface": np.where(tex < 0, rng.uniform(0.1, 0.25, _ELEMENTS), 0.06),
            "pts": np.where(active_region[:, None], pts, seeds[:, None]),
            "warp": np.array([rng.uniform(0.05, 0.12) * s]),
            "shape_kind": shape_kind,
            "shape_active": shape_active,
            "shape_center": rng.uniform(0.2 * s, 0.8 * s, size=(_SHAPE_SLOTS, 2)),
            "shape_radius": rng.uniform(0.12 * s, 0.26 * s, size=_SHAPE_SLOTS),
            "shape_rot": rng.uniform(0, 2 * math.pi, _SHAPE_SLOTS),
            "light": np.array([rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.22)]),
            "grain": np.array([rng.uniform(0.008, 0.025)]),
            "grain_shift": rng.integers(0, _GRAIN_TILE, size=2),
            "seed": rng.integers(1, 2**31 - 1, size=1),
        }

    def _draw(
        self, indices: list[int], dev: torch.device, want_masks: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, s, e = len(indices), self.size, _ELEMENTS
        ps = [self._params(i) for i in indices]

        def stack(key: str, dtype=torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.stack([p[key] for p in ps]), dtype=dtype, device=dev)

        f32, i64 = torch.float32, torch.int64
        coords = torch.arange(s, device=dev, dtype=f32) + 0.5
        yy, xx = coords.view(1, s, 1), coords.view(1, 1, s)
        img_seed = stack("seed", i64).view(b, 1, 1)

        # -- background regions: Voronoi cells of 2-4 points with warped, irregular borders
        pts = stack("pts")  # (b, R, 2) x, y
        warp = stack("warp").view(b, 1, 1, 1)
        slot = torch.arange(_REGIONS, device=dev, dtype=i64).view(1, _REGIONS)
        wn = _smooth_noise((img_seed.view(b, 1) * 5 + slot).view(-1), (4,), s).view(
            b, _REGIONS, s, s
        )
        region = torch.zeros(b, s, s, device=dev, dtype=i64)
        best = None
        for k in range(_REGIONS):
            dx = xx - pts[:, k, 0].view(b, 1, 1)
            dy = yy - pts[:, k, 1].view(b, 1, 1)
            d = torch.sqrt(dx * dx + dy * dy) + warp.view(b, 1, 1) * 2.0 * (wn[:, k] - 0.5)
            if best is None:
                best = d
            else:
                closer = d < best
                region = torch.where(closer, k, region)
                best = torch.where(closer, d, best)

        # -- per-element pattern fields p (1 = second colour), only for textured elements
        tex = stack("tex", i64)  # (b, e)
        period = stack("period")
        angle = stack("angle")
        origin = stack("origin")
        pattern = torch.zeros(b, e, s, s, device=dev, dtype=f32)
        for t, name in enumerate(TEXTURES):
            sel = (tex == t).nonzero()
            if sel.numel() == 0:
                continue
            bi, ei = sel[:, 0], sel[:, 1]
            n = bi.shape[0]
            if name == "blotchy":  # isotropic: value noise on the pixel grid, two octaves
                seeds = img_seed[bi].view(n) * 7 + ei + 101
                per_n = period[bi, ei]
                n1 = _lattice_noise(seeds, per_n, origin[bi, ei], s)
                n2 = _lattice_noise(seeds + 1, per_n / 2, origin[bi, ei] * 0.37, s)
                pattern[bi, ei] = ((0.7 * n1 + 0.3 * n2 - 0.5) / 0.05 + 0.5).clamp(0.0, 1.0)
                continue
            per = period[bi, ei].view(n, 1, 1)
            cos, sin = (
                torch.cos(angle[bi, ei]).view(n, 1, 1),
                torch.sin(angle[bi, ei]).view(n, 1, 1),
            )
            ox, oy = origin[bi, ei, 0].view(n, 1, 1), origin[bi, ei, 1].view(n, 1, 1)
            x0, y0 = xx - ox, yy - oy
            u = (x0 * cos + y0 * sin) / per
            v = (-x0 * sin + y0 * cos) / per
            pattern[bi, ei] = _TEXTURE_FNS[name](u, v, 1.0 / per, {}).to(f32)

        # -- shapes: anti-aliased coverage alpha from signed distances
        kind = stack("shape_kind", i64)
        active = stack("shape_active", torch.bool)
        center = stack("shape_center")
        radius = stack("shape_radius")
        rot = stack("shape_rot")
        alpha = torch.zeros(b, _SHAPE_SLOTS, s, s, device=dev, dtype=f32)
        for k, name in enumerate(SHAPES):
            sel = ((kind == k) & active).nonzero()
            if sel.numel() == 0:
                continue
            bi, ji = sel[:, 0], sel[:, 1]
            n = bi.shape[0]
            cos, sin = torch.cos(rot[bi, ji]).view(n, 1, 1), torch.sin(rot[bi, ji]).view(n, 1, 1)
            x0 = xx - center[bi, ji, 0].view(n, 1, 1)
            y0 = yy - center[bi, ji, 1].view(n, 1, 1)
            a = x0 * cos + y0 * sin
            c = -x0 * sin + y0 * cos
            sd = _SHAPE_FNS[name](a, c, radius[bi, ji].view(n, 1, 1))
            alpha[bi, ji] = (0.5 - sd).clamp(0.0, 1.0)

        # -- colours: element colour = mix of its two colours by its pattern, surface shading
        rgb1 = stack("rgb1")  # (b, e, 3)
        rgb2 = stack("rgb2")
        surface = stack("surface")  # (b, e)
        grids = (max(2, round(s / 5)), max(2, round(s / 19)), max(1, round(s / 61)))
        noise = _smooth_noise(img_seed.view(-1) * 3 + 1, grids, s).view(b, 3, s, s)
        weights = torch.tensor([0.25, 0.35, 0.4], device=dev).view(1, 3, 1, 1)
        shade = ((noise * weights).sum(1, keepdim=True) - 0.5) * 2.0  # (b, 1, s, s), ~1/f
        offsets = (torch.arange(b, device=dev) * e).view(b, 1, 1)

        def per_pixel(table: torch.Tensor, els: torch.Tensor) -> torch.Tensor:
            """``table`` (b, e, c) at the element indices ``els`` (b, s, s) -> (b, c, s, s)."""
            flat = table.reshape(b * e, -1)[(els + offsets).view(-1)]
            return flat.view(b, s, s, -1).permute(0, 3, 1, 2)

        # background: each pixel takes the element of its region
        p = pattern.gather(1, region.unsqueeze(1))
        a, c = per_pixel(rgb1, region), per_pixel(rgb2, region)
        lum = 1.0 + per_pixel(surface.unsqueeze(2), region) * shade
        out = (a + (c - a) * p) * lum
        top = region.clone()
        for j in range(_SHAPE_SLOTS):  # shapes on top, with anti-aliased edges
            el = _REGIONS + j
            p = pattern[:, el : el + 1]
            a, c = rgb1[:, el].view(b, 3, 1, 1), rgb2[:, el].view(b, 3, 1, 1)
            colour = (a + (c - a) * p) * (1.0 + surface[:, el].view(b, 1, 1, 1) * shade)
            al = alpha[:, j : j + 1]
            out = out + (colour - out) * al
            top = torch.where(alpha[:, j] > 0.5, el, top)

        # -- lighting gradient, grain, slight optical blur
        light = stack("light")  # (b, 2): direction, strength
        gx = torch.cos(light[:, 0]).view(b, 1, 1) * (xx / s - 0.5)
        gy = torch.sin(light[:, 0]).view(b, 1, 1) * (yy / s - 0.5)
        out = out * (1.0 + light[:, 1].view(b, 1, 1) * 2.0 * (gx + gy)).unsqueeze(1)
        tile = _grain_tile(dev)
        shift = stack("grain_shift", i64)  # (b, 2)
        ar = torch.arange(s, device=dev, dtype=i64)
        gy_i = torch.remainder(ar.view(1, s) + shift[:, 1:2], _GRAIN_TILE)  # (b, s)
        gx_i = torch.remainder(ar.view(1, s) + shift[:, 0:1], _GRAIN_TILE)
        g = tile[:, gy_i.view(b, s, 1), gx_i.view(b, 1, s)].permute(1, 0, 2, 3)  # (b, 3, s, s)
        out = out + stack("grain").view(b, 1, 1, 1) * g
        kernel = torch.tensor([0.2, 0.6, 0.2], device=dev, dtype=f32)
        k2 = (kernel.view(3, 1) * kernel.view(1, 3)).view(1, 1, 3, 3).expand(3, 1, 3, 3)
        out = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
        images = out.clamp(0.0, 1.0)

        if not want_masks:
            return images, None
        # -- masks: labels of the top element, sampled at the centres of the mask cells
        m = self.mask_size
        at = (
            ((torch.arange(m, device=dev, dtype=f32) + 0.5) * s / m).floor().to(i64).clamp(0, s - 1)
        )
        top_m = top[:, at][:, :, at]  # (b, m, m)
        p_m = pattern[:, :, at][:, :, :, at].gather(1, top_m.unsqueeze(1))[:, 0]
        c1 = stack("c1", i64) + 1  # colour label numbers are 1..11
        c2 = stack("c2", i64) + 1
        first = c1.gather(1, top_m.view(b, -1)).view(b, m, m)
        second = c2.gather(1, top_m.view(b, -1)).view(b, m, m)
        color = torch.where(p_m > 0.5, second, first)
        scale = stack("scale", i64)
        tex_label = torch.as_tensor(self._tex_label, device=dev)
        merged = torch.as_tensor(self._merged_label, device=dev)
        t_el = tex.gather(1, top_m.view(b, -1)).view(b, m, m)
        s_el = scale.gather(1, top_m.view(b, -1)).view(b, m, m)
        has_tex = t_el >= 0
        t_safe = t_el.clamp_min(0)
        texture = torch.where(has_tex, tex_label[t_safe, s_el], 0)
        texture_merged = torch.where(has_tex, merged[t_safe], 0)
        shape_lab = torch.as_tensor(self._shape_label, device=dev)
        is_shape = top_m >= _REGIONS
        slot_m = (top_m - _REGIONS).clamp_min(0)
        shape = torch.where(
            is_shape, shape_lab[kind.gather(1, slot_m.view(b, -1)).view(b, m, m)], 0
        )
        maps = torch.stack([color, texture, texture_merged, shape], dim=1)
        return images, maps

    # ----------------------------------------------------------------------------- display
    def preview(self, indices: Iterable[int] = range(8), layer: int = 0) -> torch.Tensor:
        """Images and one mask layer (0 colour, 1 texture, 2 merged texture, 3 shape) as two rows
        of a grid, pixel space ``(3, H, W)``: a quick look at what the probe set contains."""
        from ...imaging import make_grid

        batch = self.batch(indices)
        assert batch.masks is not None
        shown = label_colors(batch.masks[:, layer], self.labels)
        shown = F.interpolate(shown, size=(self.size, self.size), mode="nearest")
        both = torch.cat([batch.images.cpu(), shown.cpu()])
        return make_grid(both, ncol=len(batch))


def probe_set(n_images: int, size: int = 224, seed: int = 0, **options: Any) -> ProbeSet:
    """The generated concept probe set (see :mod:`cnnvis_widgets.data.concepts`).

    ``options`` are the keyword-only arguments of :class:`ProbeSet`: ``mask_size``, ``scales``
    and ``device``.

    Parameters
    ----------
    n_images : int
        Number of images; they are drawn on demand, so a long probe set costs no memory.
    size : int
        Side of the square images in pixels (224 for ImageNet models).
    seed : int
        The same seed always gives the same images and masks.
    mask_size : int, optional
        Side of the masks (default ``size // 4``: 56 for 224).
    scales : sequence of int
        Texture periods in pixels; each texture at each scale is its own concept.
    device : str or torch.device, optional
        Where images are drawn (default CPU; ``"cuda"`` draws on the GPU).

    Returns
    -------
    ProbeSet

    Examples
    --------
    >>> probe = probe_set(200)
    >>> len(probe), probe.mask_size
    (200, 56)
    >>> [c.name for c in probe.labels if c.parent == "striped"]
    ['striped@6px', 'striped@12px', 'striped@24px']
    """
    return ProbeSet(n_images, size, seed, **options)
