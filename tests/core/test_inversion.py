"""Regularized inversion: features are matched, priors pull the right way, jitter stops for the
last quarter, strips run as one shrinking batch, errors are clear and hooks always go away."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import inversion as inv
from cnnvis_widgets.core import regularizers as R
from cnnvis_widgets.core.blocks.runs import Run, finish
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.core.inversion import regularized
from cnnvis_widgets.core.inversion.layer_batch import LayerGroups
from cnnvis_widgets.core.optimize import NonFiniteLossError
from cnnvis_widgets.data import sample_image
from tests.conftest import make_tiny
from tests.helpers import run_without


@pytest.fixture
def photo(tiny_handle):
    return inv.target_pixels(tiny_handle, sample_image("cat"), 32)


def _initial_error(handle, layer, target, seed=0):
    """Feature error of the noise the run starts from (same seed, same parameterization)."""
    first = next(inv.invert_steps(handle, target, layer, steps=1, jitter=0, seed=seed, lr=1e-9))
    phi0 = inv.layer_features(handle, target, layer)[layer]
    return float(inv.feature_error(handle, first.image, layer, phi0)[0])


@pytest.mark.parametrize("preset", list(inv.PRESETS))
def test_every_preset_lowers_the_feature_error(tiny_handle, photo, preset) -> None:
    before = _initial_error(tiny_handle, "conv2", photo)
    r = inv.invert(tiny_handle, photo, "conv2", preset=preset, steps=60)
    assert r.image.shape == (1, 3, 32, 32) and r.target.shape == (1, 3, 32, 32)
    start = next(inv.invert_steps(tiny_handle, photo, "conv2", preset=preset, steps=1, lr=1e-9))
    assert (r.image - start.image.cpu()).abs().mean() > 0.01  # the picture itself moved
    assert len(r.history) == 60 and len(r.feature_history) == 60
    assert float(r.feature_error[0]) < 0.5 * before
    assert r.layers == ["conv2"] and r.preset == preset
    assert active_hook_count(tiny_handle.model) == 0


def test_reported_error_is_that_of_the_final_image_without_jitter(tiny_handle, photo) -> None:
    r = inv.invert(tiny_handle, photo, "conv2", steps=40, jitter=3)
    phi0 = inv.layer_features(tiny_handle, photo, "conv2")["conv2"]
    direct = inv.feature_error(tiny_handle, r.image, "conv2", phi0)
    assert torch.allclose(r.feature_error, direct, rtol=1e-4, atol=1e-7)
    # the normalized error of the original itself is zero, of a grey image about one or more
    assert float(inv.feature_error(tiny_handle, photo, "conv2", phi0)[0]) < 1e-10
    grey = torch.full_like(photo, 0.5)
    assert float(inv.feature_error(tiny_handle, grey, "conv2", phi0)[0]) > 0.1


def test_jitter_runs_for_the_first_three_quarters_only(tiny_handle, photo, monkeypatch) -> None:
    calls: list[int] = []
    real = regularized.jitter  # the module whose loop draws the shifts

    def counting(d):
        calls.append(d)
        return real(d)

    monkeypatch.setattr(regularized, "jitter", counting)
    list(inv.invert_steps(tiny_handle, photo, "conv2", steps=40, jitter=2))
    assert len(calls) == 30 and set(calls) == {4}  # shifts of -2..1 pixels, steps 0..29
    calls.clear()
    list(inv.invert_steps(tiny_handle, photo, "conv2", steps=40, jitter=0))
    assert calls == []


def test_learning_rate_decays_along_a_cosine() -> None:
    lrs = [regularized._cosine(i, 100, 0.02, 0.001) for i in range(100)]
    assert lrs[0] == pytest.approx(0.02) and lrs[-1] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[50] == pytest.approx(0.0105, rel=0.05)


def test_tv_prior_gives_a_smoother_image(tiny_handle, photo) -> None:
    common = dict(steps=60, jitter=0, alpha_weight=0.0, seed=3)
    rough = inv.invert(tiny_handle, photo, "conv2", tv_weight=0.0, **common)
    smooth = inv.invert(tiny_handle, photo, "conv2", tv_weight=30.0, **common)
    tv = lambda r: float(R.total_variation(r.image, 2.0)[0])  # noqa: E731
    assert tv(smooth) < 0.5 * tv(rough)


def test_alpha_norm_prior_pulls_pixels_to_the_middle(tiny_handle, photo) -> None:
    common = dict(steps=60, jitter=0, tv_weight=0.0, alpha=2.0, seed=3)
    free = inv.invert(tiny_handle, photo, "conv2", alpha_weight=0.0, **common)
    held = inv.invert(tiny_handle, photo, "conv2", alpha_weight=30.0, **common)
    spread = lambda r: float(R.alpha_norm(r.image, 2.0, center=0.5)[0])  # noqa: E731
    assert spread(held) < 0.5 * spread(free)
    # ... at the price of a worse feature match
    assert float(held.feature_error[0]) > float(free.feature_error[0])


def test_live_settings_and_stop_event(tiny_handle, photo) -> None:
    settings = inv.InversionSettings(steps=10_000)
    stop = threading.Event()
    seen = []
    for step in inv.invert_steps(tiny_handle, photo, "conv2", settings=settings, stop_event=stop):
        seen.append(step.total)
        if step.index == 2:
            settings.steps = 6  # the loop reads it at the next step
        if step.index == 3:
            settings.tv_weight = 5.0
    assert len(seen) == 6 and seen[-1] == 6
    seen.clear()
    for step in inv.invert_steps(tiny_handle, photo, "conv2", steps=100, stop_event=stop):
        seen.append(step.index)
        if step.index == 4:
            stop.set()
    assert seen == [0, 1, 2, 3, 4]
    assert active_hook_count(tiny_handle.model) == 0


def test_seed_repeats_and_differs(tiny_handle, photo) -> None:
    a = inv.invert(tiny_handle, photo, "conv2", steps=10, seed=1).image
    b = inv.invert(tiny_handle, photo, "conv2", steps=10, seed=1).image
    c = inv.invert(tiny_handle, photo, "conv2", steps=10, seed=2).image
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_forward_stops_at_the_layer(tiny_handle, photo) -> None:
    later = []
    h = tiny_handle.module("fc").register_forward_hook(lambda *a: later.append(1))
    try:
        inv.invert(tiny_handle, photo, "conv1", steps=3)
    finally:
        h.remove()
    assert later == []


def test_strip_is_one_batch_that_sheds_rows_after_their_layer(tiny_handle, photo) -> None:
    sizes: dict[str, list[int]] = {"conv1": [], "conv2": []}
    hooks = [
        tiny_handle.module(n).register_forward_hook(
            lambda m, i, o, n=n: sizes[n].append(o.shape[0])
        )
        for n in sizes
    ]
    try:
        gen = inv.invert_layers_steps(tiny_handle, photo, ["conv2", "conv1", "conv2"], steps=6)
        next(gen)  # set-up passes (targets, the shrink check) and step 0
        sizes["conv1"].clear(), sizes["conv2"].clear()
        rest = [next(gen) for _ in range(5)]
        during = {n: list(v) for n, v in sizes.items()}
        result = finish(gen)  # no step left: the generator returns the result
    finally:
        for h in hooks:
            h.remove()
    # each step: 3 rows at conv1, then only the 2 conv2 rows go on
    assert during["conv1"] == [3] * 5 and during["conv2"] == [2] * 5
    assert rest[-1].image.shape == (3, 3, 32, 32)
    assert result.layers == ["conv2", "conv1", "conv2"] and len(result.history) == 6
    assert torch.equal(result.image, rest[-1].image.clamp(0, 1).cpu())
    r = inv.invert_layers(tiny_handle, photo, ["conv2", "conv1", "conv2"], steps=8)
    assert r.layers == ["conv2", "conv1", "conv2"] and r.image.shape == (3, 3, 32, 32)
    # results come back in the order asked for: row 1 is the conv1 reconstruction
    phi1 = inv.layer_features(tiny_handle, photo, "conv1")["conv1"]
    assert float(r.feature_error[1]) == pytest.approx(
        float(inv.feature_error(tiny_handle, r.image[1:2], "conv1", phi1)[0]), rel=1e-4
    )
    steps = list(inv.invert_layers_steps(tiny_handle, photo, ["conv2", "conv1"], steps=2))
    assert steps[-1].image.shape[0] == 2 and steps[-1].metrics["feature_error"].shape == (2,)
    assert active_hook_count(tiny_handle.model) == 0


class Residual(nn.Module):
    """conv0 -> conv1 -> conv2, plus a skip from conv0 to after conv2 (crosses conv1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv0(x)
        y = self.act(self.conv2(self.conv1(a)) + a)
        return self.head(y.mean(dim=(2, 3)))


def test_strip_keeps_the_batch_whole_where_a_skip_crosses_the_cut(photo) -> None:
    torch.manual_seed(0)
    h = load_model(Residual(), device="cpu", input_size=32)
    groups = LayerGroups(h, ["conv1", "act"])
    groups.try_shrink(torch.rand(2, 3, 32, 32))
    assert not groups.shrink  # cutting after conv1 would break `+ a`: detected, batch kept
    r = inv.invert_layers(h, photo, ["conv1", "act"], steps=5)
    assert r.image.shape == (2, 3, 32, 32) and torch.isfinite(r.feature_error).all()
    tiny = load_model(make_tiny(), device="cpu", input_size=32)
    ok = LayerGroups(tiny, ["conv1", "conv2"])
    ok.try_shrink(torch.rand(2, 3, 32, 32))
    assert ok.shrink
    assert active_hook_count(h.model) == 0


def test_batched_and_separate_strips_agree_in_kind(tiny_handle, photo) -> None:
    a = inv.invert_layers(tiny_handle, photo, ["conv1", "conv2"], steps=40)
    b = inv.invert_layers(tiny_handle, photo, ["conv1", "conv2"], steps=40, batched=False)
    assert a.image.shape == b.image.shape and len(a.history) == len(b.history) == 40
    assert (a.feature_error < 0.5).all() and (b.feature_error < 0.5).all()


def test_clear_errors_and_no_hooks_left(tiny_handle, photo) -> None:
    with pytest.raises(KeyError, match="nearest valid names"):
        inv.invert(tiny_handle, photo, "conv3", steps=2)
    with pytest.raises(KeyError, match="mahendran"):
        inv.invert(tiny_handle, photo, "conv2", preset="lucid", steps=2)
    with pytest.raises(TypeError, match="PIL image or a pixel-space tensor"):
        inv.invert(tiny_handle, [1, 2, 3], "conv2", steps=2)
    with pytest.raises(ValueError, match="channels"):
        inv.invert(tiny_handle, torch.rand(1, 1, 32, 32), "conv2", steps=2)
    with pytest.raises(TypeError, match="unknown setting"):
        inv.invert(tiny_handle, photo, "conv2", steps=2, tv_wieght=1.0)
    with pytest.raises(ValueError, match="no layer"):
        inv.invert_layers(tiny_handle, photo, [], steps=2)
    assert active_hook_count(tiny_handle.model) == 0


def test_all_zero_features_are_refused(photo) -> None:
    net = make_tiny()
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.conv1.bias.fill_(-1.0)  # relu1 is zero everywhere
    h = load_model(net, device="cpu", input_size=32)
    with pytest.raises(ValueError, match="all zero"):
        inv.invert(h, photo, "relu1", steps=2)


def test_nan_stops_the_run_and_removes_hooks(photo) -> None:
    net = make_tiny()
    h = load_model(net, device="cpu", input_size=32)
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises((NonFiniteLossError, ValueError)):
        inv.invert(h, photo, "conv2", steps=5)
    assert active_hook_count(net) == 0
    assert all(p.requires_grad for p in net.parameters())  # grad flags restored


def test_closing_the_generator_mid_run_cleans_up(tiny_handle, photo) -> None:
    gen = inv.invert_layers_steps(tiny_handle, photo, ["conv1", "conv2"], steps=100)
    next(gen)
    next(gen)
    gen.close()
    assert active_hook_count(tiny_handle.model) == 0
    assert all(p.requires_grad for p in tiny_handle.model.parameters())


def test_pixel_metrics() -> None:
    a = torch.rand(1, 3, 8, 8)
    assert float(inv.pixel_correlation(a, a)[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(inv.pixel_correlation(1 - a, a)[0]) == pytest.approx(-1.0, abs=1e-6)
    assert float(inv.pixel_error(a, a)[0]) == pytest.approx(0.0, abs=1e-9)
    flat = torch.full_like(a, float(a.mean()))
    assert float(inv.pixel_error(flat, a)[0]) == pytest.approx(63 / 64 * 192 / 191, rel=0.05)


# Mahendran & Vedaldi's finding (deeper layers keep less of the photo) is in tests/test_findings.py


def test_inversion_and_decoders_run_without_widget_packages() -> None:
    code = r"""
from cnnvis_widgets import load_model
from cnnvis_widgets.core import inversion, upconv
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
h = load_model(net, device='cpu', input_size=16)
r = inversion.invert(h, torch.rand(3, 16, 16), '1', steps=3)
s = list(upconv.train_decoder_steps(h, '1', torch.rand(4, 3, 16, 16), steps=2, size=16,
                                    save=False))
print('ok', tuple(r.image.shape), len(s))
"""
    out = run_without(code)
    assert "ok (1, 3, 16, 16) 2" in out.stdout


@pytest.mark.parametrize("preset", list(inv.PRESETS))
def test_preset_descriptions_state_what_runs(tiny_handle, photo, preset, monkeypatch) -> None:
    import re

    p = inv.PRESETS[preset]
    s = p.settings
    m = re.search(r"lr ([\d.e-]+) cosine-decayed to ([\d.e-]+), (\d+) steps", p.description)
    assert m, p.description
    assert (float(m[1]), float(m[2]), int(m[3])) == (s.lr, s.lr_end, s.steps)
    jit = re.search(r"jitter (\d+)", p.description)
    assert (int(jit[1]) if jit else 0) == s.jitter, p.description
    # and the run uses those learning rates: the optimizer's first and last step
    used: list[float] = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        used.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    r = inv.invert(tiny_handle, photo, "conv2", preset=preset, steps=6)
    assert used[0] == pytest.approx(s.lr) and used[-1] == pytest.approx(s.lr_end)
    assert r.settings.lr == s.lr and r.settings.lr_end == s.lr_end


@pytest.mark.parametrize("preset", list(inv.PRESETS))
def test_an_explicit_inversion_setting_wins_over_the_preset(tiny_handle, photo, preset) -> None:
    import dataclasses

    p = inv.PRESETS[preset]
    for f in dataclasses.fields(inv.InversionSettings):
        v = getattr(p.settings, f.name)
        v = 3 if f.name == "steps" else (v + 1 if isinstance(v, int) else round(v * 0.5 + 0.1, 6))
        kw = {f.name: v} if f.name == "steps" else {f.name: v, "steps": 3}
        r = inv.invert(tiny_handle, photo, "conv2", preset=preset, **kw)
        assert getattr(r.settings, f.name) == v, f.name


def test_steps_return_the_result_of_their_last_step(tiny_handle, photo) -> None:
    run = Run(inv.invert_steps(tiny_handle, photo, "conv2", steps=5, jitter=1))
    losses = []
    for step in run:
        losses.append(float(step.loss))
        last = step.image.clone()
        step.loss = -1.0  # what a widget does (it charts the feature error): history unaffected
    r = run.result
    assert run.finished and isinstance(r, inv.InversionResult)
    assert r.history == losses and len(r.feature_history) == 5
    assert torch.equal(r.image, last.clamp(0, 1).cpu())
    phi0 = inv.layer_features(tiny_handle, photo, "conv2")["conv2"]
    assert torch.allclose(r.feature_error, inv.feature_error(tiny_handle, r.image, "conv2", phi0))
    # stopped before the first step: the generator returns None, invert() says so
    stop = threading.Event()
    stop.set()
    empty = Run(inv.invert_steps(tiny_handle, photo, "conv2", steps=5, stop_event=stop))
    assert list(empty) == [] and empty.finished and empty.result is None
    with pytest.raises(RuntimeError, match="made no step"):
        inv.invert(tiny_handle, photo, "conv2", steps=5, stop_event=stop)


def test_a_refused_setting_leaves_the_live_settings_as_they_were(tiny_handle, photo) -> None:
    live = inv.InversionSettings(steps=7)
    with pytest.raises(ValueError, match="steps"):
        next(inv.invert_steps(tiny_handle, photo, "conv2", settings=live, steps=0))
    with pytest.raises(TypeError, match="unknown setting 'stpes'"):
        next(inv.invert_steps(tiny_handle, photo, "conv2", settings=live, stpes=3))
    assert live == inv.InversionSettings(steps=7)
    with pytest.raises(KeyError, match="choose one of mahendran"):
        next(inv.invert_steps(tiny_handle, photo, "conv2", preset="nope"))
