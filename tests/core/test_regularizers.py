"""Each regularizer does what it says, as a function and inside a run."""

from __future__ import annotations

import torch

from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core import regularizers as R


def noise(seed: int = 0, shape=(2, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_functions_on_known_images() -> None:
    x = noise()
    const = torch.full_like(x, 0.3)
    assert torch.allclose(R.total_variation(const), torch.zeros(2), atol=1e-3)
    assert (R.total_variation(x) > 0.1).all()
    assert (
        R.high_frequency_energy(R.gaussian_blur(x, 1.0)) < 0.3 * R.high_frequency_energy(x)
    ).all()
    assert torch.equal(R.gaussian_blur(x, 0.0), x)
    d = R.decay(x, 0.5, 0.5)
    assert torch.allclose(d - 0.5, (x - 0.5) * 0.5, atol=1e-6)
    assert torch.allclose(R.l2_penalty(const, 0.5), torch.full((2,), 0.04 * 3 * 32 * 32))
    assert torch.allclose(R.alpha_norm(const, 2.0, 0.5), torch.full((2,), 0.04))
    clipped = R.clip_small_norm(x, 40, 0.5)
    reset = (clipped == 0.5).all(dim=1).float().mean()
    assert 0.35 < float(reset) < 0.45
    grad = torch.zeros_like(x)
    grad[..., :16] = 1.0  # only the left half contributes
    cc = R.clip_small_contribution(x, grad, 50, 0.5)
    assert (cc[..., :, 16:] == 0.5).all()


def _run(handle, **overrides) -> torch.Tensor:
    r = am.maximize(handle, "conv2:3", preset="lucid", steps=25, size=32, seed=0, **overrides)
    return r.image


def test_tv_and_blur_and_decay_act_inside_a_run(tiny_handle) -> None:
    base = _run(tiny_handle, pad=0, jitter=0, scale=0.0, rotate=0.0, jitter2=0)
    plain = dict(pad=0, jitter=0, scale=0.0, rotate=0.0, jitter2=0)
    tv = _run(tiny_handle, tv_weight=5.0, **plain)
    assert R.total_variation(tv).mean() < 0.8 * R.total_variation(base).mean()
    blur = _run(tiny_handle, blur_sigma=1.5, blur_every=1, **plain)
    assert R.high_frequency_energy(blur).mean() < 0.8 * R.high_frequency_energy(base).mean()
    decayed = _run(tiny_handle, l2_decay=0.2, **plain)
    assert (decayed - 0.5).abs().mean() < (base - 0.5).abs().mean()


def test_clipping_presets_leave_neutral_pixels(tiny_handle) -> None:
    r = am.maximize(tiny_handle, "conv2:3", preset="yosinski_clip", steps=8, size=32)
    neutral = (r.image - torch.tensor(tiny_handle.mean).view(1, 3, 1, 1)).abs().sum(1) < 1e-6
    assert float(neutral.float().mean()) > 0.5  # 90% are reset after each step, then one update


def test_blur_with_tiny_or_subnormal_sigma_is_the_identity_not_nan() -> None:
    # found by the slider-storm property test: 2e-308 underflowed to 0 in float32 -> 0/0
    x = noise()
    for sigma in (2.2e-308, 5e-324, 1e-5):
        assert torch.equal(R.gaussian_blur(x, sigma), x)
    assert torch.isfinite(R.gaussian_blur(x, 0.02)).all()


def test_fast_paths_equal_the_general_formula() -> None:
    x = noise(3)
    d = x - 0.5
    for alpha in (2.0, 4.0, 6.0, 3.0, 6.5):
        ref = d.abs().pow(alpha).flatten(1).mean(1)
        assert torch.allclose(R.alpha_norm(x, alpha), ref, rtol=1e-5, atol=1e-9)
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    for beta in (1.0, 2.0, 3.0):
        ref = (dx * dx + dy * dy + 1e-8).pow(beta / 2).flatten(1).mean(1)
        assert torch.allclose(R.total_variation(x, beta), ref, rtol=1e-4, atol=1e-7)
