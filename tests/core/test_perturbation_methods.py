"""Occlusion, integrated gradients, SmoothGrad: batched results equal one-at-a-time ones, the
completeness check, agreement with Captum where it is installed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core.attribution import integrated_gradients as IG
from cnnvis_widgets.core.attribution import occlusion as OC
from tests.conftest import make_tiny


@pytest.fixture
def tiny():
    return load_model(make_tiny(3), device="cpu", input_size=16)


def _x(seed: int = 0, b: int = 1, side: int = 16) -> torch.Tensor:
    return torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_positions_cover_every_pixel_once_flush_with_the_edge() -> None:
    for size, patch, stride in [(16, 4, 3), (224, 32, 8), (10, 10, 1), (9, 2, 2)]:
        covered = torch.zeros(size)
        for p in OC.positions(size, patch, stride):
            covered[p : p + patch] += 1
        assert bool((covered > 0).all()) and OC.positions(size, patch, stride)[-1] == size - patch


def test_batched_occlusion_equals_one_copy_at_a_time(tiny) -> None:
    x = _x(1, b=2)
    m = OC.occlusion(tiny, x, [1, 3], patch=5, stride=3, batch_size=7)
    for i, c in enumerate([1, 3]):
        base = tiny.logits(x[i : i + 1])[0]
        drop, n = torch.zeros(16, 16), torch.zeros(16, 16)
        pdrop = torch.zeros(16, 16)
        for r in OC.positions(16, 5, 3):
            for q in OC.positions(16, 5, 3):
                xo = x[i : i + 1].clone()
                xo[..., r : r + 5, q : q + 5] = 0
                out = tiny.logits(xo)[0]
                drop[r : r + 5, q : q + 5] += base[c] - out[c]
                pdrop[r : r + 5, q : q + 5] += base.softmax(0)[c] - out.softmax(0)[c]
                n[r : r + 5, q : q + 5] += 1
        torch.testing.assert_close(m.score[i, 0], drop / n, atol=1e-5, rtol=1e-4)
        assert m.probability is not None
        torch.testing.assert_close(m.probability[i, 0], pdrop / n, atol=1e-6, rtol=1e-4)
    assert m.passes == 2 * (len(OC.positions(16, 5, 3)) ** 2 + 1)


def test_occlusion_refuses_a_patch_larger_than_the_image(tiny) -> None:
    with pytest.raises(ValueError, match="larger than the image"):
        OC.occlusion(tiny, _x(), 0, patch=17)
    with pytest.raises(ValueError, match="stride"):
        OC.occlusion(tiny, _x(), 0, stride=0)
    with pytest.raises(ValueError, match="never be hidden"):
        OC.occlusion(tiny, _x(), 0, patch=4, stride=5)


def test_feature_occlusion_follows_the_strongest_map(tiny) -> None:
    x = _x(2)
    maps, units = OC.feature_occlusion(tiny, x, "conv2", patch=4, stride=4)
    with torch.no_grad():
        from cnnvis_widgets.core.blocks.hooks import capture, forward_to

        with capture(tiny, ["conv2"]) as acts:
            forward_to(tiny, x, acts, needs_logits=False)
    totals = acts["conv2"].flatten(2).sum(2)[0]
    assert units == [int(totals.argmax())]
    assert float(maps.base_score[0]) == pytest.approx(float(totals.max()), rel=1e-5)
    assert maps.score.shape == (1, 1, 16, 16) and maps.probability is None


def test_integrated_gradients_complete_and_batch_independent(tiny) -> None:
    x = _x(3)
    r = IG.integrated_gradients(tiny, x, 2, steps=256, batch_size=64)
    # a piecewise-linear net: the midpoint sum converges to f(x) - f(x')
    assert float(r.relative_gap()[0]) < 0.02
    r1 = IG.integrated_gradients(tiny, x, 2, steps=16, batch_size=1)
    r16 = IG.integrated_gradients(tiny, x, 2, steps=16, batch_size=16)
    torch.testing.assert_close(r1.attributions, r16.attributions, atol=1e-6, rtol=1e-4)
    black = IG.baseline(tiny, x, "black")
    torch.testing.assert_close(tiny.denormalize(black), torch.zeros_like(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="unknown baseline"):
        IG.baseline(tiny, x, "white")


def test_smoothgrad_without_noise_is_the_method_and_leaves_the_global_rng(tiny) -> None:
    x = _x(4)
    plain = A.guided_backprop(tiny, x, 1)
    torch.testing.assert_close(
        IG.smoothgrad(tiny, x, 1, "guided_backprop", samples=3, noise=0.0), plain
    )
    state = torch.random.get_rng_state()
    a = IG.smoothgrad(tiny, x, 1, "saliency", samples=5, seed=7, batch_size=2)
    b = IG.smoothgrad(tiny, x, 1, "saliency", samples=5, seed=7, batch_size=5)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(a, A.saliency(tiny, x, 1))
    assert IG.smoothgrad(tiny, x, 1, "grad_cam", samples=2, layer="conv2").shape == (1, 1, 16, 16)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_occlusion_and_integrated_gradients_agree_with_captum(lite0) -> None:
    cap = pytest.importorskip("captum.attr")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x = lite0.normalize(x)
    net = lite0.net
    ours = OC.occlusion(lite0, x, 281, patch=32, stride=16)  # (224 - 32) % 16 == 0: same windows
    theirs = cap.Occlusion(net).attribute(
        x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0, target=281,
        perturbations_per_eval=16,
    )  # fmt: skip
    assert _cos(ours.score[0, 0], theirs[0, 0]) >= 0.99
    ig = IG.integrated_gradients(lite0, x, 281, steps=32, baseline_kind="black")
    black = IG.baseline(lite0, x, "black")
    theirs_ig = cap.IntegratedGradients(net).attribute(
        x, baselines=black, target=281, n_steps=32, method="riemann_middle", internal_batch_size=16
    )
    assert _cos(ig.attributions, theirs_ig) >= 0.99


def test_integrated_gradients_flush_denormals_only_while_they_run(tiny) -> None:
    from cnnvis_widgets.core.attribution.scoring import _flushing

    x = _x(5)
    assert not _flushing()
    fast = IG.integrated_gradients(tiny, x, 1, steps=4)
    assert not _flushing()  # this thread's setting is restored
    torch.set_flush_denormal(True)
    try:
        IG.integrated_gradients(tiny, x, 1, steps=4)
        assert _flushing()  # the caller's own choice is kept too
    finally:
        torch.set_flush_denormal(False)
    obj = A.as_target(tiny, 1, 1)
    alphas = (torch.arange(4) + 0.5) / 4
    black = IG.baseline(tiny, x, "black")
    path = black + alphas.view(-1, 1, 1, 1) * (x - black)
    slow = A.gradients._input_gradient(tiny, path, obj, "gradient").sum(0, keepdim=True)
    torch.testing.assert_close(fast.attributions, (x - black) * slow / 4, atol=1e-7, rtol=1e-5)
