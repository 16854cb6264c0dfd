"""Adversarial core: exact projections, FGSM against a hand-computed gradient, PGD (L-inf/L2,
targeted/untargeted, random start, seeds, batches), zero-gradient fallback, NaN safety, hooks,
and the analyses of a clean/adversarial pair. The default model appears in two slow tests."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import adversarial as A
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.core.imaging import normalize_map
from cnnvis_widgets.core.optimize import NonFiniteLossError
from tests.conftest import make_tiny
from tests.helpers import run_without

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def linear_handle(scale: float = 1.0, classes: int = 4, side: int = 4, seed: int = 0):
    """logits = W @ flatten(normalize(x)) + b: its input gradient is known in closed form."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, classes))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(classes, 3 * side * side, generator=g) * scale)
        net[1].bias.copy_(torch.randn(classes, generator=g) * 0.1)
    return load_model(net, device="cpu", input_size=side, mean=MEAN, std=STD)


def rand_pixels(b: int, side: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(b, channels, side, side, generator=torch.Generator().manual_seed(seed))


def assert_within(adv: torch.Tensor, clean: torch.Tensor, eps: float, norm: str) -> None:
    """The bound, with no tolerance, in float32 and in float64."""
    assert adv.min() >= 0 and adv.max() <= 1
    d32 = adv - clean
    d64 = adv.double() - clean.double()
    if norm == "linf":
        assert float(d32.abs().max()) <= eps
        assert float(d64.abs().max()) <= eps
    else:
        assert float(d32.flatten(1).norm(dim=1).max()) <= eps
        assert float(d64.flatten(1).norm(dim=1).max()) <= eps


# ------------------------------------------------------------------------------ projection
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_exact_for_many_random_cases(norm) -> None:
    g = torch.Generator().manual_seed(1)
    for trial in range(200):
        b, side = 3, 5
        clean = torch.rand(b, 3, side, side, generator=g)
        # pixels stuck at the edges of the range, where clamping and rounding interact
        clean[0, 0, 0] = 0.0
        clean[0, 1, 0] = 1.0
        clean[1] = clean[1].round()
        if norm == "linf":
            eps = float(torch.randint(1, 17, (1,), generator=g)) / 255 * (1 + trial % 3 * 1e-7)
        else:
            eps = float(torch.rand(1, generator=g)) * 2
        adv = clean + torch.randn(clean.shape, generator=g) * (0.5 if trial % 2 else 1e-2)
        p = A.project(clean, adv, eps, norm)
        assert_within(p, clean, eps, norm)


def test_projection_leaves_points_inside_the_ball_alone_and_hits_the_boundary() -> None:
    clean = torch.full((1, 3, 2, 2), 0.5)
    inside = clean + 1 / 255
    assert torch.equal(A.project(clean, inside, 4 / 255), inside)
    far = clean + 0.3
    p = A.project(clean, far, 4 / 255)
    assert float((p - clean).min()) > 4 / 255 - 1e-7  # on the boundary, not shrunk
    p2 = A.project(clean, clean + torch.ones_like(clean) * 0.2, 0.5, "l2")
    n = float((p2 - clean).flatten(1).norm(dim=1))
    assert 0.5 * (1 - 1e-4) < n <= 0.5


# ------------------------------------------------------------------------------ FGSM / PGD
def test_fgsm_matches_the_hand_computed_gradient_sign() -> None:
    h = linear_handle()
    x = rand_pixels(2, 4, seed=3) * 0.8 + 0.1  # away from the range edges
    eps = 3 / 255
    adv = A.fgsm(h, x, eps)
    W = h.model[1].weight.detach()
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = h.model(h.normalize(x))
        y = logits.argmax(1)
        p = logits.softmax(1)
        dlogits = p - nn.functional.one_hot(y, 4).float()  # d CE / d logits
        grad = (dlogits @ W).view_as(x) / std  # chain rule through the normalization
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert_within(adv, x, eps, "linf")
    # targeted: towards class t, i.e. down the CE of t
    t = (y + 1) % 4
    adv_t = A.fgsm(h, x, eps, target=t)
    with torch.no_grad():
        dl_t = p - nn.functional.one_hot(t, 4).float()
        grad_t = (dl_t @ W).view_as(x) / std
    assert torch.allclose(adv_t, (x - eps * grad_t.sign()).clamp(0, 1), atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_untargeted_raises_the_loss_and_stays_in_the_ball(tiny_handle, norm) -> None:
    x = rand_pixels(4, 32, seed=5)
    eps = 8 / 255 if norm == "linf" else 0.5
    steps = list(A.pgd_steps(tiny_handle, x, eps, steps=8, norm=norm, random_start=False))
    assert [s.index for s in steps] == list(range(8)) and steps[-1].total == 8
    losses = [s.loss for s in steps]
    assert losses[-1] > losses[0]  # the cross-entropy of the clean class goes up
    for s in steps:
        assert s.image.shape == x.shape
        assert_within(s.image, x, eps, norm)
        assert s.metrics["pred"].shape == (4,) and not s.metrics["targeted"]
        assert bool((s.metrics["grad_norm"] > 0).all())
    assert active_hook_count(tiny_handle.model) == 0
    assert all(p.requires_grad for p in tiny_handle.model.parameters())  # restored


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_reaches_the_target_on_a_linear_model(norm) -> None:
    h = linear_handle(scale=0.5)
    x = rand_pixels(3, 4, seed=7)
    clean = A.predict(h, x).argmax(1)
    target = (clean + 2) % 4
    eps = 0.3 if norm == "linf" else 2.0
    adv = A.pgd(h, x, eps, steps=20, norm=norm, target=target)
    assert torch.equal(A.predict(h, adv).argmax(1), target)
    assert_within(adv, x, eps, norm)
    # one int target for the whole batch
    adv1 = A.pgd(h, x, eps, steps=20, norm=norm, target=1)
    assert A.predict(h, adv1).argmax(1).tolist() == [1, 1, 1]


def test_seeds_and_random_start() -> None:
    h = load_model(make_tiny(), device="cpu", input_size=16)
    x = rand_pixels(2, 16, seed=2)
    a = A.pgd(h, x, 4 / 255, steps=3, seed=11)
    b = A.pgd(h, x, 4 / 255, steps=3, seed=11)
    c = A.pgd(h, x, 4 / 255, steps=3, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the random start is inside the ball; without it the first step starts at the clean image
    first = next(A.pgd_steps(h, x, 4 / 255, steps=3, step_size=0.0, seed=3))
    start = first.image
    assert not torch.equal(start, x)
    assert_within(start, x, 4 / 255, "linf")
    first = next(A.pgd_steps(h, x, 4 / 255, steps=3, step_size=0.0, random_start=False))
    assert torch.equal(first.image, x)
    l2_start = next(A.pgd_steps(h, x, 0.3, steps=1, step_size=0.0, norm="l2", seed=3)).image
    assert_within(l2_start, x, 0.3, "l2") and not torch.equal(l2_start, x)


def test_batch_is_one_forward_per_step(tiny_handle) -> None:
    calls = []
    hook = tiny_handle.module("conv1").register_forward_hook(
        lambda m, i, o: calls.append(o.shape[0])
    )
    try:
        A.pgd(tiny_handle, rand_pixels(5, 32), 4 / 255, steps=4)
    finally:
        hook.remove()
    assert calls == [5] * 5  # one pass for the clean labels, then one per step


def test_saturated_softmax_falls_back_to_the_margin_gradient() -> None:
    h = linear_handle(scale=1e4)  # logits ~1e4 apart: softmax is exactly one-hot in float32
    x = rand_pixels(2, 4, seed=9)
    with torch.no_grad():
        assert float(A.predict(h, x).max()) == 1.0
    steps = list(A.pgd_steps(h, x, 2 / 255, steps=3, random_start=False))
    assert steps[0].metrics["zero_grad_fallback"] == 2
    for s in steps:
        assert bool((s.metrics["grad_norm"] > 0).all())  # no step with a zero gradient
    assert not torch.equal(steps[-1].image, x)  # the attack moved


def test_nan_model_stops_with_a_clear_error_and_cleans_up() -> None:
    net = make_tiny()
    h = load_model(net, device="cpu", input_size=16)
    x = rand_pixels(1, 16)
    with torch.no_grad():
        net.fc.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="NaN or infinite logits"):
        A.pgd(h, x, 4 / 255, steps=3, target=1)
    assert active_hook_count(net) == 0
    assert all(p.requires_grad for p in net.parameters())


def test_bad_inputs_name_the_fix(tiny_handle) -> None:
    x = rand_pixels(1, 32)
    with pytest.raises(ValueError, match="model-input space"):
        A.pgd(tiny_handle, tiny_handle.normalize(x), 4 / 255)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        A.fgsm(tiny_handle, bad, 4 / 255)
    with pytest.raises(ValueError, match="pixel units"):
        A.pgd(tiny_handle, x, 4)
    with pytest.raises(ValueError, match=">= 0"):
        A.pgd(tiny_handle, x, -0.1)
    with pytest.raises(ValueError, match="'linf' or 'l2'"):
        A.pgd(tiny_handle, x, 0.1, norm="l1")
    with pytest.raises(ValueError, match="steps"):
        A.pgd(tiny_handle, x, 0.1, steps=0)
    with pytest.raises(IndexError, match="valid 0..4"):
        A.pgd(tiny_handle, x, 0.1, target=5)
    with pytest.raises(ValueError, match="2 target classes"):
        A.pgd(tiny_handle, x, 0.1, target=[1, 2])
    with pytest.raises(ValueError, match="channels"):
        A.pgd(tiny_handle, rand_pixels(1, 32, channels=1), 0.1)
    with pytest.raises(TypeError, match="to_pixels"):
        A.pgd(tiny_handle, x.numpy(), 0.1)
    assert torch.equal(A.pgd(tiny_handle, x, 0.0, steps=2), x)  # eps 0 changes nothing


def test_stop_event_ends_between_steps(tiny_handle) -> None:
    stop = threading.Event()
    seen = []
    for s in A.pgd_steps(tiny_handle, rand_pixels(1, 32), 0.1, steps=100, stop_event=stop):
        seen.append(s.index)
        if s.index == 2:
            stop.set()
    assert seen == [0, 1, 2]
    assert active_hook_count(tiny_handle.model) == 0


# ------------------------------------------------------------------------------ analyses
def test_amplify_maps_eps_to_black_and_white() -> None:
    d = torch.tensor([[[[-0.02, 0.0, 0.01]]]])
    assert A.amplify(d, eps=0.02).flatten().tolist() == pytest.approx([0.0, 0.5, 0.75])
    assert A.amplify(torch.zeros(1, 1, 2, 2)).unique().tolist() == [0.5]


def test_unit_changes_match_a_direct_computation(tiny_handle) -> None:
    x = rand_pixels(2, 32, seed=1)
    adv = A.pgd(tiny_handle, x, 16 / 255, steps=3)
    rows = A.unit_changes(tiny_handle, x, adv, "conv1", k=3)
    conv1 = tiny_handle.model.conv1
    with torch.no_grad():
        fc, fa = conv1(tiny_handle.normalize(x)), conv1(tiny_handle.normalize(adv))
    rms = (fa - fc).flatten(2).pow(2).mean(2).sqrt()
    for i in range(2):
        assert [r["unit"] for r in rows[i]] == rms[i].topk(3).indices.tolist()
        r0 = rows[i][0]
        assert r0["change"] == pytest.approx(float(rms[i, r0["unit"]]), rel=1e-5)
        assert r0["clean"] == pytest.approx(float(fc[i, r0["unit"]].mean()), rel=1e-5, abs=1e-6)
        assert r0["delta_mean"] == pytest.approx(r0["adversarial"] - r0["clean"], abs=1e-6)
    with pytest.raises(KeyError, match="nearest valid names"):
        A.unit_changes(tiny_handle, x, adv, "conv9")
    assert active_hook_count(tiny_handle.model) == 0
    same = A.unit_changes(tiny_handle, x, x, "fc", k=2)  # non-spatial layer, no change
    assert [r["change"] for r in same[0]] == [0.0, 0.0]


@pytest.mark.parametrize("method", A.ATTRIBUTION_METHODS)
def test_attribution_maps_of_both_images_for_both_classes(tiny_handle, method) -> None:
    x = rand_pixels(2, 32, seed=4)
    adv = A.pgd(tiny_handle, x, 8 / 255, steps=3)
    maps = A.attribution_maps(tiny_handle, x, adv, [0, 1], [2, 3], method)
    for key in ("clean/original", "clean/new", "adversarial/original", "adversarial/new"):
        m = maps[key]
        assert m.shape == (2, 1, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert not torch.equal(maps["clean/original"], maps["clean/new"])
    # each of the four maps is the method's map of that image for that class, though all four
    # were computed as one batch
    from cnnvis_widgets.core import attribution as AT

    fn = {
        "saliency": AT.saliency,
        "guided_backprop": AT.guided_backprop,
        "grad_cam": lambda h, x_, t: AT.grad_cam(h, x_, t, maps["layer"]),
    }[method]
    for key, img, cls in (("clean/new", x, [2, 3]), ("adversarial/original", adv, [0, 1])):
        raw = fn(tiny_handle, tiny_handle.normalize(img), torch.tensor(cls))
        ref = A.analysis._as_map(raw, (32, 32))
        assert torch.allclose(maps[key], ref, atol=1e-5), key
    assert active_hook_count(tiny_handle.model) == 0
    with pytest.raises(ValueError, match="unknown attribution method"):
        A.attribution_maps(tiny_handle, x, adv, [0, 1], [2, 3], "lrp")


def test_saliency_maps_are_the_plain_gradient(tiny_handle) -> None:
    x = rand_pixels(1, 32, seed=6)
    maps = A.attribution_maps(tiny_handle, x, x, [1], [3], "saliency")
    assert maps["method"] == "saliency" and maps["layer"] is None
    xi = tiny_handle.normalize(x).requires_grad_(True)
    (g,) = torch.autograd.grad(tiny_handle.model(xi)[0, 3], xi)
    expected = normalize_map(g.abs().amax(1, keepdim=True))  # Simonyan et al.: max |gradient|
    assert float(expected.max()) == 1.0
    assert torch.allclose(maps["clean/new"], expected, atol=1e-6)
    (g1,) = torch.autograd.grad(tiny_handle.model(xi)[0, 1], xi)
    assert torch.allclose(maps["clean/original"], normalize_map(g1.abs().amax(1, keepdim=True)))
    assert not torch.allclose(maps["clean/original"], maps["clean/new"])


def test_analyze_summarizes_a_pair(tiny_handle) -> None:
    x = rand_pixels(2, 32, seed=8)
    adv = A.pgd(tiny_handle, x, 16 / 255, steps=5, target=[1, 2])
    r = A.analyze(tiny_handle, x, adv, target=[1, 2], eps=16 / 255, layer="conv2", units=4)
    assert r.new_class == [1, 2]
    assert r.success == [p == t for p, t in zip(A.predict(tiny_handle, adv).argmax(1), [1, 2])]
    assert r.original_class == A.predict(tiny_handle, x).argmax(1).tolist()
    assert max(r.linf) <= 16 / 255 and r.amplified.shape == x.shape
    assert len(r.units) == 2 and len(r.units[0]) == 4
    assert set(r.attribution) >= {"clean/original", "adversarial/new", "method", "layer"}
    rows = r.prediction_rows(0, k=3)
    classes = {d["index"] for d in r.clean_top[0][:3] + r.adversarial_top[0][:3]}
    assert len(rows) == len(classes) and all(len(row) == 3 for row in rows)
    assert rows == sorted(rows, key=lambda row: -max(row[1], row[2]))
    import json

    json.dumps(r.summary(1))
    # untargeted and unchanged: the "new" class is the adversarial runner-up
    r0 = A.analyze(tiny_handle, x, x, attribution=None)
    assert r0.success == [False, False] and r0.new_class != r0.original_class
    assert r0.attribution == {} and r0.units == []


# ------------------------------------------------------------------------------ default model
@pytest.fixture(scope="module")
def photos(lite0):
    from cnnvis_widgets.data import sample_images

    # 128 px: the network (global average pooling) accepts it and it is 3x cheaper than 224
    return torch.cat([lite0.to_pixels(im, 128) for im in sample_images().values()])


# the finding (PGD within 4/255 flips most predictions) is in tests/test_findings.py


@pytest.mark.slow
def test_targeted_pgd_reaches_the_target_on_photos(lite0, photos) -> None:
    target = 409  # analog clock
    adv = A.pgd(lite0, photos[:3], 8 / 255, steps=10, target=target)
    assert A.predict(lite0, adv).argmax(1).tolist() == [target] * 3
    assert_within(adv, photos[:3], 8 / 255, "linf")
    r = A.analyze(lite0, photos[:1], adv[:1], target=target, layer="_blocks.8", units=5)
    assert r.success == [True] and r.new_class == [target]
    assert r.attribution["adversarial/new"].shape == (1, 1, 128, 128)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_pgd_runs_on_cuda_and_stays_on_the_device() -> None:
    h = load_model(make_tiny(), device="cuda", input_size=32)
    x = rand_pixels(3, 32).cuda()
    steps = list(A.pgd_steps(h, x, 4 / 255, steps=3))
    assert all(s.image.is_cuda for s in steps)
    assert_within(steps[-1].image, x, 4 / 255, "linf")
    adv = A.pgd(h, x.cpu(), 0.5, steps=3, norm="l2")
    assert adv.device.type == "cpu"  # returned where the images came from
    assert_within(adv, x.cpu(), 0.5, "l2")
    r = A.analyze(h, x, steps[-1].image, layer="conv2", units=3, attribution="grad_cam")
    assert r.attribution["adversarial/new"].device.type == "cpu"
    assert active_hook_count(h.model) == 0


def test_core_adversarial_runs_without_widget_packages() -> None:
    code = """
from cnnvis_widgets import load_model
from cnnvis_widgets.core import adversarial
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                          torch.nn.Flatten(), torch.nn.Linear(4, 3))
h = load_model(net, device='cpu', input_size=16)
x = torch.rand(2, 3, 16, 16)
adv = adversarial.pgd(h, x, 4 / 255, steps=2)
r = adversarial.analyze(h, x, adv, layer='1', units=2, attribution='saliency')
print('ok', float((adv - x).abs().max()) <= 4 / 255, len(r.units[0]))
"""
    out = run_without(code)
    assert "ok True 2" in out.stdout
