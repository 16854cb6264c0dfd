"""MaCo's parameterization: the natural magnitude is fixed, only the phase moves (Fel et al.)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core.params import MacoParam, maco_image, natural_magnitude
from cnnvis_widgets.data import sample_images


def _image_magnitude(p: MacoParam) -> torch.Tensor:
    """The Fourier magnitude of the parameterization's real field (what the image is made of)."""
    return torch.fft.rfft2(p.field().detach(), norm="ortho").abs()


@pytest.mark.parametrize("blur", [0.0, 1.0])  # blur: the pixel regularizers go through set_image
def test_phase_only_optimization_keeps_the_magnitude_fixed(tiny_handle, blur) -> None:
    p = am.PRESETS["maco"].make_param(tiny_handle, 2, 32, seed=0)
    assert p.parameters() == [p.phase]  # the magnitude is not optimized
    mag = p.magnitude.clone()
    phase0, image0 = p.phase.detach().clone(), p.image().detach().clone()
    torch.testing.assert_close(_image_magnitude(p), mag.expand(2, -1, -1, -1), atol=1e-4, rtol=1e-4)
    r = am.maximize(
        tiny_handle, "conv2:5", param=p, preset="maco", steps=15, blur_sigma=blur, blur_every=5
    )
    assert (p.phase.detach() - phase0).abs().max() > 0.1  # the steps moved the phase...
    assert (r.image - image0).abs().mean() > 0.01  # ... and so the picture
    torch.testing.assert_close(p.magnitude, mag)
    # ... but not the magnitude of the image's spectrum, at any frequency (float tolerance)
    torch.testing.assert_close(_image_magnitude(p), mag.expand(2, -1, -1, -1), atol=1e-4, rtol=1e-4)


def test_set_image_takes_the_phase_and_round_trips_a_maco_image() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = MacoParam((1, 3, 24, 31), generator=g), MacoParam((1, 3, 24, 31), generator=g)
    assert (a.image() - b.image()).abs().mean() > 0.01
    b.set_image(a.image().detach())
    torch.testing.assert_close(b.image(), a.image(), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.magnitude, a.magnitude)


def test_natural_magnitude_falls_with_frequency_and_follows_the_photos(tmp_path) -> None:
    mag = natural_magnitude(32)
    assert mag.shape == (3, 32, 17)
    low, high = mag[:, 1:3, 1:3].mean(), mag[:, 12:16, 12:16].mean()
    assert low > 5 * high  # natural photos: most energy at low frequencies (~1/f)
    torch.testing.assert_close(natural_magnitude(32), mag)  # same photos, same result
    photos = sample_images()
    two = [photos["cat"], photos["coffee"]]
    for i, img in enumerate(two):
        img.save(tmp_path / f"{i}.png")
    from_folder = natural_magnitude(32, tmp_path)
    torch.testing.assert_close(from_folder, natural_magnitude(32, two))
    assert (from_folder - mag).abs().max() > 0.01  # other photos, another spectrum
    flat = natural_magnitude(32, [Image.new("RGB", (40, 40), (90, 120, 30))])
    assert float(flat.max()) < 1e-3  # a flat photo has no energy once its mean is removed
    with pytest.raises(ValueError, match="at least one photo"):
        natural_magnitude(32, [])
    with pytest.raises(ValueError, match="shape"):
        maco_image((1, 3, 32, 32), magnitude=torch.ones(3, 32, 32))


def test_maco_builder_works_with_any_preset(tiny_handle) -> None:
    # param= takes the builder like fft_image; the lucid preset's sd 0.01 still gives a random
    # phase (a small sd must not start from a zero-phase blob)
    r = am.maximize(tiny_handle, "conv2:5", param=maco_image, steps=3, size=32)
    p = maco_image((1, 3, 32, 32), sd=0.01, generator=torch.Generator().manual_seed(0))
    assert float(p.phase.detach().abs().mean()) > 1.0  # uniform in [-pi, pi): mean |phase| ~ pi/2
    assert r.image.shape == (1, 3, 32, 32) and float(r.image.std()) > 0.05
