"""Every method by name: ``attribute(handle, x, target, method=..., **options)`` reaches occlusion
(every score, the Fig. 7 feature variant), integrated gradients (with its completeness check) and
SmoothGrad over any gradient method, with the results of the functions themselves; bad options
are refused, never ignored."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core.attribution import integrated_gradients as IG
from cnnvis_widgets.core.attribution import occlusion as OC
from tests.conftest import make_tiny


@pytest.fixture(scope="module")
def tiny():
    return load_model(make_tiny(3), device="cpu", input_size=16)


def _x(seed: int = 0, b: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_every_method_is_reachable_by_name_with_its_maps_shape(tiny) -> None:
    x = _x(1, b=2)
    assert list(A.ALL_METHODS) == [*A.METHODS, "occlusion", "integrated_gradients"]
    for m in A.ALL_METHODS:
        opts = {"patch": 4, "stride": 4} if m == "occlusion" else {}
        a = A.attribute(tiny, x, [1, 2], m, layer="conv2", **opts)
        one_channel = m in ("grad_cam", "occlusion")
        assert a.shape == (2, 1 if one_channel else 3, 16, 16), m
        assert torch.isfinite(a).all()


def test_occlusion_scores_are_the_maps_of_the_occlusion_run(tiny) -> None:
    x = _x(2)
    run = OC.occlusion(tiny, x, 1, patch=5, stride=3)
    for score, want in [("logit", run.score), ("probability", run.probability),
                        ("occluded_probability", run.occluded_probability)]:  # fmt: skip
        got = A.attribute(tiny, x, 1, "occlusion", patch=5, stride=3, score=score)
        assert torch.equal(got, want), score
    default = OC.occlusion(tiny, x, 1, patch=8).score  # stride 8: the default
    assert torch.equal(A.attribute(tiny, x, 1, "occlusion", patch=8), default)
    e = A.explain(tiny, x, 1, "occlusion", "conv2", patch=4, stride=2, score="feature")
    maps, units = OC.feature_occlusion(tiny, x, "conv2", patch=4, stride=2)
    assert torch.equal(e.attributions, maps.score) and e.units == units and e.layer == "conv2"
    assert e.passes == maps.passes and "strongest feature map" in e.summary()
    with pytest.raises(ValueError, match="class target"):
        A.attribute(tiny, x, "conv2:1", "occlusion", patch=8, score="probability")


def test_integrated_gradients_report_their_completeness(tiny) -> None:
    x = _x(3)
    e = A.explain(tiny, x, 2, "integrated_gradients", steps=8, baseline="blur")
    r = IG.integrated_gradients(tiny, x, 2, steps=8, baseline_kind="blur")
    assert torch.equal(e.attributions, r.attributions) and e.passes == 8
    assert e.completeness is not None
    assert float(e.completeness.total[0]) == pytest.approx(float(e.attributions.sum()), rel=1e-5)
    gap = float(e.completeness.relative_gap()[0])
    text = e.summary()
    assert "8 steps from a blurred copy" in text and f"gap {gap:.1%}" in text
    assert ("enough steps" if gap <= 0.05 else "use more steps") in text
    black = A.attribute(tiny, x, 2, "integrated_gradients")  # the defaults: 32 steps from black
    assert torch.equal(black, IG.integrated_gradients(tiny, x, 2).attributions)


def test_smoothgrad_over_any_gradient_method_batched(tiny) -> None:
    x = _x(4)
    want = IG.smoothgrad(tiny, x, 1, "guided_backprop", samples=5, noise=0.2, seed=3)
    got = A.attribute(tiny, x, 1, "guided_backprop", smoothgrad=True, samples=5, noise=0.2, seed=3)
    torch.testing.assert_close(got, want)
    as_dict = A.explain(tiny, x, 1, "guided_backprop", smoothgrad={"samples": 5, "noise": 0.2,
                        "seed": 3}, batch_size=2)  # fmt: skip
    torch.testing.assert_close(as_dict.attributions, want, atol=1e-6, rtol=1e-4)
    assert as_dict.passes == 5 and "5 noisy copies" in as_dict.summary()
    cam = A.attribute(tiny, x, 1, "grad_cam", "conv2", smoothgrad=True, samples=2)
    assert cam.shape == (1, 1, 16, 16)
    assert not torch.allclose(cam, A.grad_cam(tiny, x, 1, "conv2"))
    assert torch.equal(
        A.attribute(tiny, x, 1, "saliency", smoothgrad=False), A.saliency(tiny, x, 1)
    )


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        ("saliency", {"pach": 4}, TypeError, "unknown option 'pach'"),
        ("saliency", {"patch": 4}, ValueError, "option of 'occlusion', not of 'saliency'"),
        ("occlusion", {"steps": 4}, ValueError, "option of 'integrated_gradients'"),
        ("occlusion", {"smoothgrad": True}, ValueError, "SmoothGrad averages a gradient"),
        ("integrated_gradients", {"samples": 4}, ValueError, "SmoothGrad option"),
        ("saliency", {"samples": 4}, ValueError, "pass smoothgrad=True"),
        ("saliency", {"smoothgrad": "yes"}, TypeError, "True or False"),
        ("saliency", {"smoothgrad": {"sample": 4}}, TypeError, "unknown SmoothGrad option"),
        ("saliency", {"smoothgrad": True, "samples": 0}, ValueError, "samples must be at least"),
        ("saliency", {"smoothgrad": True, "noise": -0.1}, ValueError, "noise must be at least"),
        ("occlusion", {"patch": 0}, ValueError, "patch must be at least"),
        ("occlusion", {"patch": 17}, ValueError, "larger than the image"),
        ("occlusion", {"patch": 4, "stride": 5}, ValueError, "never be hidden"),
        ("occlusion", {"score": "area"}, ValueError, "unknown occlusion score"),
        ("integrated_gradients", {"baseline": "white"}, ValueError, "unknown baseline"),
        ("integrated_gradients", {"steps": 0}, ValueError, "steps must be at least"),
        ("lime", {}, ValueError, "unknown method"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(tiny, method, options, error, match) -> None:
    with pytest.raises(error, match=match):
        A.attribute(tiny, _x(), 1, method, **options)


def test_options_key_names_what_each_map_depends_on() -> None:
    o = A.MethodOptions()
    assert o.key("saliency") == () and o.key("occlusion") == ("occlusion", 32, 8, "logit")
    assert o.key("integrated_gradients") == ("ig", 32, "black")
    o.update(smoothgrad=True, samples=4)
    assert o.key("guided_backprop") == ("smoothgrad", 4, 0.15, 0) and o.key("occlusion")[1] == 32
    assert A.MethodOptions().describe("integrated_gradients") == "32 steps from a black image"
