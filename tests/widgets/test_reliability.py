"""Reliability under real use: slider storms, interrupts, shared models, long use, bad models.

Widgets are driven from many threads and in quick succession; what must hold: exactly one run
for the final settings, at most one worker thread, no hooks left, memory back near its start.
"""

from __future__ import annotations

import gc
import threading

import psutil
import pytest
import torch
import traitlets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets.activation_max import ActivationMaximization
from tests.conftest import make_tiny
from tests.helpers import until_no_threads

RSS_MARGIN = 64 * 2**20  # bytes


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def worker_threads(w) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"cnnvis-{type(w).__name__}"]


CHANGE = st.one_of(
    st.tuples(st.just("unit"), st.integers(0, 12)),
    st.tuples(st.just("seed"), st.integers(0, 1000)),
    st.tuples(st.just("layer"), st.sampled_from(["conv1", "conv2", "relu2"])),
    st.tuples(st.just("lr"), st.floats(0.001, 0.2)),
    st.tuples(st.just("tv_weight"), st.floats(0.0, 2.0)),
    st.tuples(st.just("blur_sigma"), st.floats(0.0, 2.0)),
    st.tuples(st.just("objective"), st.sampled_from(["channel", "neuron", "dream"])),
    st.tuples(st.just("size"), st.sampled_from([16, 24, 32])),
)


@pytest.fixture(scope="module")
def storm_widget():
    """The widget after one warm-up storm; ``w.baseline`` is the RSS then (the allocator's
    first growth is not a leak: measured here, RSS plateaus after the first storm)."""
    import random

    h = load_model(make_tiny(), device="cpu", input_size=32)
    w = ActivationMaximization(h, layer="conv2", steps=10_000, size=32)
    rng = random.Random(0)
    w.run()
    for _ in range(1000):
        for name, value in [
            ("unit", rng.randrange(8)),
            ("size", rng.choice([16, 24, 32])),
            ("objective", rng.choice(["channel", "neuron", "dream"])),
            ("layer", rng.choice(["conv1", "conv2", "relu2"])),
        ]:
            setattr(w, name, value)
    w.steps = 12
    w.wait()
    w.baseline = rss()
    yield w
    w.close()


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(CHANGE, min_size=1000, max_size=1000))
def test_slider_storm_ends_with_one_run_for_the_final_settings(storm_widget, changes) -> None:
    w = storm_widget
    w.steps = 10_000
    w.run()
    for name, value in changes:
        try:
            setattr(w, name, value)
        except traitlets.TraitError:
            pass  # e.g. unit 12 of conv1 (8 channels): refused, nothing lost
        if name in ("unit", "layer", "seed"):
            w.run()  # like the slider: a restart per change
        assert len(worker_threads(w)) <= 1
    w.steps = 12  # the final settings end soon
    final = (w.layer, w.unit, w.seed, w.objective, w.size)
    assert w.wait(timeout=300)
    runs = w.run_id
    assert w.wait(timeout=5) and w.run_id == runs  # nothing else starts afterwards
    rec = w.record()
    assert (rec["settings"]["layer"], rec["settings"]["unit"], rec["settings"]["seed"]) == final[:3]
    assert w.error == "" and len(w.history) == 12
    assert len(worker_threads(w)) <= 1
    assert active_hook_count(w.handle.model) == 0
    assert rss() - w.baseline < RSS_MARGIN


def test_two_hundred_runs_without_growth() -> None:
    h = load_model(make_tiny(), device="cpu", input_size=16)
    w = ActivationMaximization(h, layer="conv2", steps=2, size=16)
    try:
        w.run()
        w.wait()
        until_no_threads()  # the warm-up's threads end first
        threads, mem = threading.active_count(), rss()
        for i in range(200):
            w.seed = i
            w.run()
            assert w.wait(timeout=60)
        assert w.run_id == 201 and w.error == ""
        assert until_no_threads() == [] and threading.active_count() <= threads
        assert active_hook_count(h.model) == 0
        assert rss() - mem < RSS_MARGIN
    finally:
        w.close()


def test_keyboard_interrupt_in_the_worker_leaves_the_widget_usable(tiny_handle, monkeypatch):
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=30, size=32)
    real = w._steps

    def interrupted(stop_event):
        for step in real(stop_event):
            if step.index == 3:
                raise KeyboardInterrupt
            yield step

    try:
        monkeypatch.setattr(w, "_steps", interrupted)
        w.run()
        assert w.wait(timeout=60)
        assert "KeyboardInterrupt" in w.error and not w.running
        assert active_hook_count(tiny_handle.model) == 0
        monkeypatch.setattr(w, "_steps", real)
        w.run()
        assert w.wait(timeout=60) and w.error == "" and len(w.history) == 30
    finally:
        w.close()


def test_two_widgets_sharing_one_model_give_the_results_of_separate_runs() -> None:
    h = load_model(make_tiny(), device="cpu", input_size=32)
    alone = [
        am.maximize(h, f"conv2:{u}", steps=25, size=32, seed=s).image for u, s in ((1, 5), (7, 9))
    ]
    a = ActivationMaximization(h, layer="conv2", unit=1, seed=5, steps=25, size=32)
    b = ActivationMaximization(h, layer="conv2", unit=7, seed=9, steps=25, size=32)
    try:
        a.run()
        b.run()
        assert a.wait(timeout=120) and b.wait(timeout=120)
        for w, ref in zip((a, b), alone):
            assert w.error == ""
            assert torch.allclose(w._last_pixels, ref[0].clamp(0, 1), atol=1 / 255)
        assert active_hook_count(h.model) == 0
        assert all(p.requires_grad for p in h.model.parameters())
    finally:
        a.close()
        b.close()


def test_bad_models_and_devices_have_clear_errors() -> None:
    with pytest.raises(ValueError, match="no layer with a spatial output"):
        ActivationMaximization(
            load_model(
                nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), device="cpu", input_size=8
            )
        )

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="failed on a dummy input.*shapes do not match"):
        load_model(Broken(), device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            ActivationMaximization(make_tiny(), device="cuda")


def test_settings_out_of_range_are_refused_on_the_trait(tiny_handle) -> None:
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=5, size=32)
    try:
        for name, value in [
            ("steps", 0),
            ("size", 4),
            ("lr", -1.0),
            ("grid", 100),
            ("clip_norm_pct", 150.0),
            ("l2_decay", float("inf")),
        ]:
            with pytest.raises(traitlets.TraitError):
                setattr(w, name, value)
        assert w.steps == 5 and w.size == 32
    finally:
        w.close()
