"""The AM widget without a browser: validation, worker start/stop/restart, frames, errors."""

from __future__ import annotations

import io
import json
import random
import threading

import pytest
import traitlets
from PIL import Image

from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets import _base, _frames
from cnnvis_widgets.widgets.activation_max import ActivationMaximization
from tests.conftest import make_tiny
from tests.helpers import FakeView, check_nan_then_recovery


@pytest.fixture
def widget(tiny_handle):
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=20, size=32)
    yield w
    w.close()


def cnnvis_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("cnnvis-ActivationMax")]


def test_validation_and_unknown_arguments(widget, tiny_handle) -> None:
    assert widget.unit_max == 15
    with pytest.raises(traitlets.TraitError, match="valid 0..15"):
        widget.unit = 16
    with pytest.raises(traitlets.TraitError, match="nearest valid names"):
        widget.layer = "conv3"
    with pytest.raises(traitlets.TraitError, match="between 0 and"):
        widget.tv_weight = -1.0
    with pytest.raises(traitlets.TraitError, match="between 0 and"):
        widget.blur_sigma = float("nan")
    with pytest.raises(TypeError, match="unknown argument"):
        ActivationMaximization(tiny_handle, layr="conv2")
    with pytest.raises(KeyError, match="nearest valid names"):
        ActivationMaximization(tiny_handle, layer="conv9")
    widget.unit = 15
    widget.layer = "conv1"  # 8 channels: the unit follows the new range
    assert widget.unit_max == 7 and widget.unit == 7


def test_preset_sets_the_sliders(widget) -> None:
    widget.preset = "yosinski"
    assert widget.l2_decay == pytest.approx(1e-4) and widget.blur_sigma == 1.0
    assert widget.steps == 1000 and widget.pad == 0
    widget.preset = "lucid"
    assert widget.blur_sigma == 0.0 and widget.pad == 12 and widget.steps == 512


def test_run_wait_save_record_and_static_png(widget, tmp_path) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert not widget.running and widget.error == ""
    assert len(widget.history) == 20 and widget.step == 19
    assert "conv2 unit 0" in widget.status and "done" in widget.status
    png = Image.open(io.BytesIO(widget.image))
    assert png.size == (32, 32)
    path = widget.save(tmp_path / "am")
    assert path.suffix == ".png" and Image.open(path).size == (32, 32)
    rec = widget.record()
    json.dumps(rec)
    assert rec["settings"]["layer"] == "conv2" and rec["settings"]["seed"] == 0
    assert rec["model"]["name"] == "TinyNet" and "torch" in rec["versions"]
    assert rec["result"]["objective"] == "conv2:0" and len(rec["result"]["activation"]) == 1
    bundle = widget._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle
    assert active_hook_count(widget.handle.model) == 0


def test_changing_unit_mid_run_restarts_with_the_new_unit(widget) -> None:
    widget.steps = 100_000
    widget.run()
    while widget.step < 2 and not widget.error:
        threading.Event().wait(0.01)
    first = widget.run_id
    widget.unit = 5
    while widget.run_id == first:
        threading.Event().wait(0.01)
    widget.steps = 10  # live: the restarted run ends soon
    assert widget.wait(timeout=120)
    assert widget._last_record["objective"] == "conv2:5"
    assert "unit 5" in widget.status and len(widget.history) == 10


def test_live_setting_reaches_the_running_core(widget) -> None:
    seen = []
    widget.steps = 100_000
    widget.run()
    while widget._live is None:
        threading.Event().wait(0.01)
    widget.tv_weight = 0.7
    seen.append(widget._live.tv_weight)
    widget.stop()
    assert widget.wait(timeout=60)
    assert seen == [0.7]
    assert "stopped at step" in widget.status


def test_live_jitter_moves_the_second_jitter_as_a_restart_would(widget) -> None:
    from cnnvis_widgets.core import activation_max as am

    widget.steps = 100_000
    widget.run()
    while widget._live is None:
        threading.Event().wait(0.01)
    live = widget._live
    assert live == am.preset_settings("lucid", steps=100_000)  # the widget's settings
    widget.jitter = 0
    assert (live.jitter, live.jitter2) == (0, 0)  # as a new run from these sliders would get
    widget.stop()
    assert widget.wait(timeout=60)


def test_a_finished_run_evaluates_its_image_once(widget) -> None:
    calls = []
    hook = widget.handle.module("conv1").register_forward_hook(lambda *a: calls.append(1))
    try:
        widget.run()
        assert widget.wait(timeout=120)
    finally:
        hook.remove()
    assert widget.error == "" and len(calls) == 20 + 1  # 20 steps, then the run's evaluation
    act = [round(float(a), 6) for a in widget._result.activation]
    assert widget.record()["result"]["activation"] == act


def test_slider_storm_ends_with_one_run_for_the_final_settings(widget) -> None:
    rng = random.Random(0)
    widget.steps = 15
    widget.run()
    for _ in range(300):
        name = rng.choice(["unit", "seed", "lr", "tv_weight"])
        value = {
            "unit": rng.randrange(16),
            "seed": rng.randrange(100),
            "lr": rng.uniform(0.01, 0.1),
            "tv_weight": rng.uniform(0, 1),
        }[name]
        setattr(widget, name, value)
        widget.run()
    widget.unit, widget.seed = 11, 42
    assert widget.wait(timeout=180)
    assert len(cnnvis_threads()) <= 1
    assert widget._last_record["objective"] == "conv2:11"
    assert widget.record()["settings"]["seed"] == 42 and len(widget.history) == 15
    assert active_hook_count(widget.handle.model) == 0


def test_frames_are_binary_jpeg_and_flow_controlled(widget, monkeypatch) -> None:
    view = FakeView(widget, ack=True)
    widget.steps = 60
    widget.wait(timeout=120)  # the 'ready' message started a run (auto_run)
    assert widget.run_id == 1
    assert view.frames, "no frame was sent"
    content, buffers = view.frames[0]
    assert content["type"] == "frame" and content["mime"] == "image/jpeg"
    assert bytes(buffers[0][:2]) == b"\xff\xd8"  # JPEG magic
    steps = [s for c, _ in view.frames for s, _ in c["losses"]]
    assert steps == sorted(set(steps))  # every loss sent once, in order
    assert view.frames[-1][0]["step"] < len(widget.history) == 60  # the trait has every step

    monkeypatch.setattr(_frames, "ACK_TIMEOUT", 1e9)
    monkeypatch.setattr(_frames, "FRAME_INTERVAL", 0.0)
    view.ack = False  # the first view stops acknowledging too: its acks would free slots
    silent = FakeView(widget, ack=False)  # a view that never acknowledges
    widget.steps = 200
    widget.run()
    assert widget.wait(timeout=180)
    sent = [c for c, _ in silent.frames if c["run_id"] == widget.run_id]
    assert 1 <= len(sent) <= _base.MAX_IN_FLIGHT


def test_nan_shows_an_error_and_the_widget_stays_usable() -> None:
    net = make_tiny()
    w = ActivationMaximization(net, layer="conv2", steps=10, size=32)
    try:
        check_nan_then_recovery(w, net, net.conv1.weight, "NonFiniteLossError", "step 0")
        assert len(w.history) == 10
    finally:
        w.close()


def test_grid_mode_optimizes_units_as_one_batch(widget) -> None:
    widget.grid = 4
    widget.unit = 2
    widget.run()
    assert widget.wait(timeout=120)
    assert widget._last_record["objective"] == "conv2:[2, 3, 4, 5]"
    assert len(widget._last_record["activation"]) == 4
    img = Image.open(io.BytesIO(widget.image))
    assert img.size == (2 + 2 * 34, 2 + 2 * 34)  # 2x2 grid of 32 px with 2 px gaps
    with pytest.raises(traitlets.TraitError, match="grid"):
        widget.unit = 14  # 14..17 does not fit 16 channels


def test_close_while_running_ends_the_worker(tiny_handle) -> None:
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=100_000, size=32)
    w.run()
    while w.step < 1:
        threading.Event().wait(0.01)
    w.close()
    assert not any(t.is_alive() for t in cnnvis_threads() if t is w._worker)
    assert active_hook_count(tiny_handle.model) == 0


def test_fed_size_setting_reaches_the_run_and_the_record() -> None:
    from cnnvis_widgets import load_model

    h = load_model(make_tiny(), device="cpu", input_size=48)
    seen: list[int] = []
    hook = h.module("conv1").register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    w = ActivationMaximization(
        h, layer="conv2", steps=3, size=32, pad=0, jitter=0, scale=0.0, rotate=0.0
    )
    try:
        assert w.fed_size == "model" and w.record()["settings"]["fed_size"] == "model"
        assert any(c.get("trait") == "fed_size" for c in w.controls)
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        assert set(seen) == {48}  # the model's input size, though the image is 32 px
        assert Image.open(io.BytesIO(w.image)).size == (32, 32)
        seen.clear()
        w.fed_size = "param"
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        assert set(seen) == {32} and w.record()["settings"]["fed_size"] == "param"
        with pytest.raises(traitlets.TraitError):
            w.fed_size = "224"
    finally:
        hook.remove()
        w.close()


@pytest.mark.parametrize("preset", ["lucid", "yosinski", "yosinski_clip", "simonyan"])
def test_an_explicit_trait_wins_over_the_preset(tiny_handle, preset) -> None:
    given = dict(blur_sigma=2.5, pad=3, steps=7, lr=0.3, size=40, fed_size="param")
    w = ActivationMaximization(tiny_handle, layer="conv2", preset=preset, **given)
    try:
        assert {k: getattr(w, k) for k in given} == given
    finally:
        w.close()
