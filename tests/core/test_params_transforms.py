"""Parameterizations round-trip; transforms have the documented shapes and are seeded."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets.core import transforms as T
from cnnvis_widgets.core.params import (
    IMAGENET_COLOR_CORRELATION,
    ImageParam,
    color_correlation_from_images,
)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 31, 45), (1, 1, 20, 17)])
@pytest.mark.parametrize(
    "kind",
    [
        dict(fft=True, decorrelate=True, sigmoid=True),
        dict(fft=True, decorrelate=False, sigmoid=False),
        dict(fft=False, decorrelate=True, sigmoid=True),
        dict(fft=False, decorrelate=False, sigmoid=False),
    ],
)
def test_set_image_round_trips(shape, kind) -> None:
    g = torch.Generator().manual_seed(1)
    p = ImageParam(shape, sd=0.5, generator=g, **kind)
    target = torch.rand(shape, generator=g) * 0.9 + 0.05
    p.set_image(target)
    assert torch.allclose(p.image(), target, atol=1e-5)


def test_fft_image_is_smooth_and_seeded() -> None:
    a = ImageParam((1, 3, 64, 64), sd=1.0, generator=torch.Generator().manual_seed(3)).image()
    b = ImageParam((1, 3, 64, 64), sd=1.0, generator=torch.Generator().manual_seed(3)).image()
    c = ImageParam((1, 3, 64, 64), sd=1.0, generator=torch.Generator().manual_seed(4)).image()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    from cnnvis_widgets.core.regularizers import high_frequency_energy

    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # the 1/f spectrum puts far less energy in high frequencies than white noise
    assert high_frequency_energy(a.detach()) < 0.5 * high_frequency_energy(noise)


def test_color_correlation_from_images_whitens() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 3, 8, 8, generator=g)
    mixed = torch.einsum("bchw,dc->bdhw", z, IMAGENET_COLOR_CORRELATION)
    m = color_correlation_from_images(mixed)
    # m m^T equals the colour covariance
    flat = mixed.permute(1, 0, 2, 3).reshape(3, -1)
    cov = torch.cov(flat)
    assert torch.allclose(m @ m.T, cov, atol=1e-3)


def test_transform_shapes_and_determinism() -> None:
    x = torch.rand(2, 3, 40, 40)
    assert T.pad(5)(x, None).shape[-1] == 50
    assert T.pad(5)(x, None)[0, 0, 0, 0] == 0.5
    assert T.jitter(8)(x, torch.Generator().manual_seed(0)).shape[-1] == 32
    assert T.random_scale([1.5])(x, None).shape[-1] == 60
    r = T.random_rotate([90])(x, None)
    assert r.shape == x.shape
    # a quarter turn maps pixel centres onto pixel centres: exactly a rot90 (either direction)
    assert any(torch.allclose(r, x.rot90(k, dims=(2, 3)), atol=1e-4) for k in (1, -1))
    std = T.standard_transforms()
    a = std(x, torch.Generator().manual_seed(5))
    b = std(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert T.compose([])(x, None) is x


def test_affine_warp_matches_the_composed_geometry() -> None:
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    padded = T.pad(4)(x, None)
    assert torch.allclose(T.affine_warp(x, pad_width=4), padded, atol=1e-5)
    # a quarter turn of the padded image maps pixel centres to pixel centres: a rot90
    turned = T.affine_warp(x, pad_width=4, angle=90)
    assert any(torch.allclose(turned, padded.rot90(k, dims=(2, 3)), atol=1e-4) for k in (1, -1))
    # pad, crop by 6 at (2, 5), crop by 2 at (1, 0) == slicing
    out = T.affine_warp(x, pad_width=4, crop1=6, offset1=(2, 5), crop2=2, offset2=(1, 0))
    ref = padded[..., 2 : 2 + 22, 5 : 5 + 22][..., 1 : 1 + 20, 0:20]
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    # doubling the size equals bilinear interpolation of the padded image
    up = T.affine_warp(x, pad_width=4, scale=2.0)
    ref = torch.nn.functional.interpolate(padded, scale_factor=2, mode="bilinear")
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # borders differ (padding)
    assert torch.allclose(up[inner], ref[inner], atol=1e-4)


def test_random_affine_sizes_and_seeds() -> None:
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    std = T.random_affine(12, 8, 0.0, 10.0, 4)
    assert std(x, torch.Generator().manual_seed(1)).shape[-1] == 20 + 24 - 8 - 4
    a = std(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, std(x, torch.Generator().manual_seed(2)))
    assert not torch.equal(a, std(x, torch.Generator().manual_seed(3)))
    assert T.random_affine(0, 0, 0.0, 0.0, 0)(x, None) is x


def test_out_size_upsamples_the_transformed_crop_in_the_same_warp() -> None:
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    padded = T.pad(4)(x, None)
    crop = padded[..., 2 : 2 + 22, 5 : 5 + 22][..., 1 : 1 + 20, 0:20]
    # pad + two crops, then resampled to 50 x 40: equals bilinear interpolation of the crop
    out = T.affine_warp(
        x, pad_width=4, crop1=6, offset1=(2, 5), crop2=2, offset2=(1, 0), out_size=(50, 40)
    )
    ref = torch.nn.functional.interpolate(crop, size=(50, 40), mode="bilinear")
    assert out.shape == (2, 3, 50, 40)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # borders: padding differs
    assert torch.allclose(out[inner], ref[inner], atol=1e-4)
    # random_affine: every draw lands on out_size; without transforms it is a plain resize
    std = T.random_affine(12, 8, 0.1, 10.0, 4, out_size=56)
    for seed in range(4):
        assert std(x, torch.Generator().manual_seed(seed)).shape[-2:] == (56, 56)
    plain = T.random_affine(0, 0, 0.0, 0.0, 0, out_size=(40, 40))(x, None)
    ref = torch.nn.functional.interpolate(x, size=(40, 40), mode="bilinear")
    assert torch.allclose(plain[inner], ref[inner], atol=1e-4)
    assert T.random_affine(0, 0, 0.0, 0.0, 0, out_size=20)(x, None) is x
