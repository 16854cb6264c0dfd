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
