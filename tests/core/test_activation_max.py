"""Activation maximization: objectives rise, presets run, batches, seeds, live settings,
early stopping, hooks always removed."""

from __future__ import annotations

import threading

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core import objectives as O
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.core.optimize import NonFiniteLossError
from tests.helpers import run_without


def _initial_activation(handle, objective, preset="lucid", size=32, seed=0, batch=1):
    param = am.PRESETS[preset].make_param(handle, batch, size, seed)
    return am.evaluate(handle, objective, param.image().detach())


@pytest.mark.parametrize("preset", list(am.PRESETS))
def test_every_preset_raises_the_objective(tiny_handle, preset) -> None:
    obj = O.channel("conv2", 5)
    before = _initial_activation(tiny_handle, obj, preset)
    r = am.maximize(tiny_handle, obj, preset=preset, steps=30, size=32)
    assert r.image.shape == (1, 3, 32, 32)
    assert len(r.history) == 30
    assert float(r.activation[0]) > float(before[0]) + 0.02
    start = am.PRESETS[preset].make_param(tiny_handle, 1, 32, 0).image().detach()
    assert (r.image - start).abs().mean() > 0.01  # the picture itself moved


def test_class_logit_and_neuron_and_dream(tiny_handle) -> None:
    for obj in (O.class_logit(2), O.neuron("conv1", 1), O.layer("relu1")):
        before = _initial_activation(tiny_handle, obj)
        r = am.maximize(tiny_handle, obj, steps=30, size=32)
        assert float(r.activation[0]) > float(before[0])


@pytest.mark.slow
def test_pretrained_channel_and_class_rise(lite0) -> None:
    obj = O.channel("_blocks.4", 7)
    before = _initial_activation(lite0, obj, size=64)
    r = am.maximize(lite0, obj, steps=20, size=64)
    assert float(r.activation[0]) > float(before[0]) + 1.0
    cat = O.class_logit(281)
    before = _initial_activation(lite0, cat, preset="simonyan", size=96)
    r = am.maximize(lite0, cat, preset="simonyan", steps=20, size=96)
    assert float(r.activation[0]) > float(before[0]) + 5.0


def test_batch_of_units_is_one_forward_per_step(tiny_handle) -> None:
    calls = []
    h = tiny_handle.module("conv1").register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        r = am.maximize(tiny_handle, O.channel("conv2", [0, 1, 2, 3]), batch=4, steps=5, size=32)
    finally:
        h.remove()
    # 5 steps, one batch of 4 each, plus one final evaluation pass
    assert calls == [4] * 6
    assert r.image.shape[0] == 4 and r.activation.shape == (4,)


def test_forward_stops_at_the_deepest_needed_layer(tiny_handle) -> None:
    later = []
    h = tiny_handle.module("fc").register_forward_hook(lambda *a: later.append(1))
    try:
        am.maximize(tiny_handle, "conv1:0", steps=3, size=32)
        assert later == []  # fc never ran
        am.maximize(tiny_handle, O.class_logit(0), steps=3, size=32)
        assert len(later) == 4
    finally:
        h.remove()


def test_seed_repeats_and_differs(tiny_handle) -> None:
    a = am.maximize(tiny_handle, "conv2:1", steps=10, size=32, seed=3).image
    b = am.maximize(tiny_handle, "conv2:1", steps=10, size=32, seed=3).image
    c = am.maximize(tiny_handle, "conv2:1", steps=10, size=32, seed=4).image
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_settings_changed_mid_run_take_effect_next_step(tiny_handle) -> None:
    settings = am.AMSettings(steps=100, lr=0.05)
    seen = []
    for step in am.maximize_steps(tiny_handle, "conv2:1", size=32, settings=settings):
        seen.append(step.total)
        if step.index == 2:
            settings.steps = 6  # e.g. the iterations slider moved down
    assert len(seen) == 6 and seen[:3] == [100] * 3 and seen[3:] == [6] * 3


def test_bad_input_errors(tiny_handle) -> None:
    with pytest.raises(KeyError, match="nearest valid names: conv1"):
        am.maximize(tiny_handle, "conv_1:0", steps=2)
    with pytest.raises(IndexError, match="valid 0..15"):
        am.maximize(tiny_handle, "conv2:16", steps=2)
    with pytest.raises(IndexError, match="valid 0..4"):
        am.maximize(tiny_handle, O.class_logit(5), steps=2)
    with pytest.raises(KeyError, match="unknown preset"):
        am.maximize(tiny_handle, "conv2:1", preset="nope", steps=2)
    with pytest.raises(TypeError, match="unknown setting"):
        am.maximize(tiny_handle, "conv2:1", steps=2, blurr=1.0)
    assert active_hook_count(tiny_handle.model) == 0


class NaNNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.poison = False

    def forward(self, x):
        return self.conv(x * float("nan") if self.poison else x)


def test_nan_stops_with_a_message_and_leaves_no_hooks() -> None:
    net = NaNNet()
    h = load_model(net, device="cpu", input_size=16)
    net.poison = True
    with pytest.raises(NonFiniteLossError, match="step 0"):
        am.maximize(h, "conv:0", steps=5, size=16)
    assert active_hook_count(net) == 0
    # the model's parameters are restored to requiring grad
    assert all(p.requires_grad for p in net.parameters())


def test_hooks_removed_after_error_inside_objective_and_after_cancel(tiny_handle) -> None:
    def boom(acts):
        raise RuntimeError("objective failed")

    bad = O.Objective(boom, ["conv2"], "boom")
    with pytest.raises(RuntimeError, match="objective failed"):
        am.maximize(tiny_handle, bad, steps=3, size=32)
    assert active_hook_count(tiny_handle.model) == 0
    stop = threading.Event()
    gen = am.maximize_steps(tiny_handle, "conv2:0", steps=50, size=32, stop_event=stop)
    n = 0
    for _ in gen:
        n += 1
        if n == 3:
            stop.set()
    assert n == 3
    assert active_hook_count(tiny_handle.model) == 0
    gen = am.maximize_steps(tiny_handle, "conv2:0", steps=50, size=32)
    next(gen)
    gen.close()  # abandoned mid-run, e.g. a widget restart
    assert active_hook_count(tiny_handle.model) == 0
    assert all(p.requires_grad for p in tiny_handle.model.parameters())


def test_inplace_relu_and_one_channel_small_input() -> None:
    from tests.conftest import make_tiny

    h = load_model(make_tiny(in_channels=1), device="cpu", input_size=12)
    assert h.in_channels == 1 and h.mean == (0.5,)
    r = am.maximize(h, "relu2:2", steps=10, size=12)  # relu2 is in place
    assert r.image.shape == (1, 1, 12, 12)


def test_core_imports_and_runs_without_widget_packages() -> None:
    code = r"""
from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max, objectives, hooks, params, transforms
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
r = activation_max.maximize(load_model(net, device='cpu', input_size=16), '1:2', steps=3, size=16)
print('ok', tuple(r.image.shape))
"""
    out = run_without(code)
    assert "ok (1, 3, 16, 16)" in out.stdout


def _other_value(name: str, value):
    """A valid value of the setting ``name`` that differs from ``value``."""
    if name == "fed_size":
        return "param" if value == "model" else "model"
    if name == "steps":
        return 2
    if name.endswith("_pct"):
        return 55.0 if value != 55.0 else 45.0
    if isinstance(value, int):
        return value + 3
    return round(value + 0.25, 6)


@pytest.mark.parametrize("preset", list(am.PRESETS))
def test_an_explicit_setting_always_wins_over_the_preset(tiny_handle, preset) -> None:
    import dataclasses

    from cnnvis_widgets.core import atlas

    p = am.PRESETS[preset]
    for f in dataclasses.fields(am.AMSettings):
        v = _other_value(f.name, getattr(p.settings, f.name))
        kw = {f.name: v} if f.name == "steps" else {f.name: v, "steps": 2}
        r = am.maximize(tiny_handle, "conv2:1", preset=preset, size=32, batch=2, **kw)
        assert getattr(r.settings, f.name) == v, f.name
        assert getattr(atlas.am_settings(preset, **kw), f.name) == v, f.name
    # the atlas keeps the widget's rule when jitter2 is not given: the second jitter follows
    assert atlas.am_settings(preset, jitter=0).jitter2 == 0
    assert atlas.am_settings(preset, jitter=8).jitter2 == 4
    assert am.PRESETS[preset].settings == p.settings  # the preset itself is unchanged


def test_every_preset_feeds_the_model_input_size_and_returns_the_param_size() -> None:
    from tests.conftest import make_tiny

    h = load_model(make_tiny(), device="cpu", input_size=48)
    seen: list[tuple[int, int]] = []
    hook = h.module("conv1").register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-2:]))
    try:
        for preset in am.PRESETS:
            assert am.PRESETS[preset].settings.fed_size == "model"
            seen.clear()
            r = am.maximize(h, "conv2:1", preset=preset, steps=3, size=20)
            assert r.image.shape[-2:] == (20, 20)  # what is saved and shown
            assert seen == [(48, 48)] * 4  # 3 steps and the final evaluation
            seen.clear()
            r = am.maximize(h, "conv2:1", preset=preset, steps=3, size=20, fed_size="param")
            assert r.image.shape[-2:] == (20, 20)
            assert all(s[-1] < 48 for s in seen)  # the image's own size (+ padding - crops)
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="fed_size must be one of model, param"):
        am.maximize(h, "conv2:1", steps=2, fed_size="224")


@pytest.mark.parametrize("preset", ["lucid", "yosinski"])
def test_omitting_param_and_transforms_equals_passing_the_presets(tiny_handle, preset) -> None:
    obj = O.channel("conv2", [1, 2])
    default = am.maximize(tiny_handle, obj, preset=preset, steps=6, size=24, batch=2, seed=3)
    settings = am.preset_settings(preset, steps=6)
    explicit = am.maximize(
        tiny_handle,
        obj,
        preset=preset,
        settings=settings,
        param=am.PRESETS[preset].make_param(tiny_handle, 2, 24, 3),
        transforms=am.settings_transform(tiny_handle, settings),
        optimizer=am.PRESETS[preset].optimizer,
        seed=3,
    )
    assert torch.equal(default.image, explicit.image)
    assert default.history == explicit.history


def test_a_user_param_is_the_one_optimized(tiny_handle) -> None:
    from cnnvis_widgets.core.blocks.params import ImageParam, pixel_image

    prm = pixel_image((2, 3, 20, 20), mean=tiny_handle.mean)
    start = prm.image().detach().clone()
    r = am.maximize(tiny_handle, "conv2:1", param=prm, steps=5)  # lucid's settings, pixels
    assert r.image.shape == (2, 3, 20, 20)  # batch and size from the param
    assert torch.equal(r.image, prm.image().detach().clamp(0, 1))  # optimized in place
    assert not torch.equal(start, prm.image().detach())
    shapes = []

    def build(shape, **kw):
        shapes.append((tuple(shape), sorted(kw)))
        return ImageParam(shape, fft=True, decorrelate=False, **kw)

    r = am.maximize(tiny_handle, "conv2:1", param=build, batch=3, size=16, steps=2)
    assert shapes == [((3, 3, 16, 16), ["device", "generator", "mean", "sd"])]
    assert r.image.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="size=32 disagrees"):
        am.maximize(tiny_handle, "conv2:1", param=prm, size=32, steps=2)
    with pytest.raises(ValueError, match="channels"):
        am.maximize(tiny_handle, "conv2:1", param=pixel_image((1, 1, 16, 16)), steps=2)
    with pytest.raises(TypeError, match="ImageParam or a callable"):
        am.maximize(tiny_handle, "conv2:1", param="fft", steps=2)


def test_user_transforms_replace_the_settings_and_feed_the_model_size() -> None:
    from cnnvis_widgets.core.blocks import transforms as T
    from tests.conftest import make_tiny

    h = load_model(make_tiny(), device="cpu", input_size=40)
    calls, seen = [], []

    def spy(x, g):
        calls.append(tuple(x.shape[-2:]))
        return x

    hook = h.module("conv1").register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-2:]))
    try:
        am.maximize(h, "conv2:1", steps=3, size=20, transforms=[T.pad(2), spy, T.jitter(3)])
    finally:
        hook.remove()
    assert calls == [(24, 24)] * 3  # after the pad, once per step
    assert seen == [(40, 40)] * 4  # resampled to the model's input size; + final evaluation
    default = am.maximize(h, "conv2:1", steps=3, size=20)
    mine = am.maximize(h, "conv2:1", steps=3, size=20, transforms=T.pad(2))
    assert not torch.equal(default.image, mine.image)
    with pytest.raises(TypeError, match="transforms must be"):
        am.maximize(h, "conv2:1", steps=2, transforms=[1])


def test_maximize_steps_returns_its_result(tiny_handle) -> None:
    from cnnvis_widgets.core.blocks.runs import Run

    run = Run(am.maximize_steps(tiny_handle, "conv2:1", steps=4, size=16))
    steps = [s.image.clone() for s in run]
    assert run.finished and isinstance(run.result, am.AMResult)
    assert torch.equal(run.result.image, steps[-1].clamp(0, 1))
    assert len(run.result.history) == 4 and len(run.result.metrics) == 4
    assert "result" not in am.maximize(tiny_handle, "conv2:1", steps=2, size=16).metrics[-1]
    stop = threading.Event()
    run = Run(am.maximize_steps(tiny_handle, "conv2:1", steps=50, size=16, stop_event=stop))
    for s in run:
        if s.index == 1:
            stop.set()
    assert run.result is not None and len(run.result.history) == 2  # what was made so far
    stop = threading.Event()
    stop.set()
    gen = am.maximize_steps(tiny_handle, "conv2:1", steps=5, size=16, stop_event=stop)
    run = Run(gen)
    assert list(run) == [] and run.finished and run.result is None


def test_preset_settings_is_the_one_way_from_a_preset() -> None:
    from cnnvis_widgets.core import atlas

    assert atlas.am_settings is am.preset_settings
    s = am.preset_settings("yosinski", steps=7, blur_sigma=0.5)
    assert (s.steps, s.blur_sigma, s.l2_decay, s.jitter2) == (7, 0.5, 1e-4, 0)
    assert am.preset_settings("lucid", jitter=1).jitter2 == 0
    assert am.preset_settings("lucid", jitter=1, jitter2=3).jitter2 == 3
    live = am.preset_settings("lucid")
    live.update(jitter=0)  # a live change of the first jitter: the second follows
    assert live.jitter2 == 0
    with pytest.raises(ValueError, match="fed_size must be one of"):
        live.update(fed_size="big")
    with pytest.raises(KeyError, match="unknown preset"):
        am.preset_settings("lucent")
