"""The Inversion widget without a browser: validation, live reconstruction and restarts, strips,
decoder training that stops and resumes, uploads, export, errors."""

from __future__ import annotations

import io
import json
import threading

import pytest
import torch
from PIL import Image

from cnnvis_widgets.core import upconv
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets.inversion import Inversion, default_layers
from tests.conftest import make_tiny
from tests.helpers import FakeView, assert_refused


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def widget(tiny_handle):
    w = Inversion(tiny_handle, layer="conv2", steps=20, size=32)
    yield w
    w.close()


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def _wait_for(cond, timeout=60.0) -> None:
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        ev.wait(0.01)
    raise AssertionError("condition not reached")


def test_validation_and_unknown_arguments(widget, tiny_handle) -> None:
    assert widget.layer == "conv2" and widget.method == "regularized"
    assert widget.strip_layers == "conv1, conv2" == ", ".join(default_layers(tiny_handle))
    assert_refused(widget, "layer", {"conv3": "nearest valid names"})
    assert_refused(widget, "strip_layers", {"conv1, conv7": "nearest valid names"})
    assert_refused(widget, "strip_layers", {" ; ": "strip_layers is empty"})
    assert_refused(widget, "strip_layers", {"; ".join(["conv1"] * 13): "at most 12 layers"})
    assert_refused(widget, "tv_weight", {-1.0: "between 0 and"})
    assert_refused(widget, "alpha_weight", {float("nan"): "between 0 and"})
    assert_refused(widget, "sample", {"dog": "unknown photo"})
    with pytest.raises(TypeError, match="unknown argument"):
        Inversion(tiny_handle, layr="conv2")
    with pytest.raises(TypeError, match="unknown argument"):
        Inversion(tiny_handle, feature_error=0.5)  # a result, not a setting
    with pytest.raises(KeyError, match="nearest valid names"):
        Inversion(tiny_handle, layer="conv9")
    with pytest.raises(KeyError, match="unknown sample photo"):
        Inversion(tiny_handle, image="dog")
    assert _png_size(widget.original) == (32, 32)  # shown before any run


def test_preset_sets_the_sliders(widget) -> None:
    widget.preset = "unregularized"
    assert widget.tv_weight == 0.0 and widget.alpha_weight == 0.0 and widget.jitter == 0
    widget.preset = "mahendran"
    assert widget.tv_weight == 3.0 and widget.jitter == 2 and widget.steps == 200


def test_run_shows_the_feature_error_per_step_and_exports(widget, tmp_path) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and not widget.running
    assert len(widget.history) == 20
    assert widget.history[-1] < widget.history[0]  # the chart shows the feature error falling
    assert 0 <= widget.feature_error < 1 and -1 <= widget.pixel_correlation <= 1
    assert "conv2 regularized" in widget.status and "feature error" in widget.status
    assert "conv2: feature error" in widget.details
    assert _png_size(widget.image) == (32, 32)
    png, js = widget.export(tmp_path / "out" / "cat_conv2")
    assert _png_size(png.read_bytes()) == (2 + 2 * 34, 36)  # original | reconstruction
    rec = json.loads(js.read_text())
    assert rec["widget"] == "Inversion" and rec["settings"]["layer"] == "conv2"
    assert rec["settings"]["tv_weight"] == 3.0 and "details" not in rec["settings"]
    assert rec["result"]["feature_error"][0] == pytest.approx(widget.feature_error, rel=1e-4)
    bundle = widget._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle
    assert active_hook_count(widget.handle.model) == 0


def test_changing_the_layer_restarts_the_live_reconstruction(widget) -> None:
    view = FakeView(widget)
    widget.steps = 100_000
    _wait_for(lambda: widget.step >= 2 or widget.error)
    first = widget.run_id
    widget.layer = "conv1"
    _wait_for(lambda: widget.run_id > first)
    widget.steps = 15  # live: the restarted run ends soon
    assert widget.wait(timeout=120)
    assert widget._last_record["layers"] == ["conv1"] and len(widget.history) == 15
    assert "conv1 regularized" in widget.status
    runs = {c["run_id"] for c, _ in view.frames}
    assert first in runs and widget.run_id in runs
    assert all(bytes(b[0][:2]) == b"\xff\xd8" for _, b in view.frames)  # JPEG frames


def test_live_prior_weight_reaches_the_running_core(widget) -> None:
    widget.steps = 100_000
    widget.run()
    _wait_for(lambda: widget._live is not None)
    widget.tv_weight = 7.5
    assert widget._live.tv_weight == 7.5
    run = widget.run_id
    widget.stop()
    assert widget.wait(timeout=60)
    assert widget.run_id == run and "stopped at step" in widget.status


def test_strip_shows_every_layer_side_by_side(widget) -> None:
    widget.strip = True
    widget.strip_layers = "conv2, relu1, conv1"
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == ""
    assert widget._last_record["layers"] == ["conv1", "relu1", "conv2"]  # shallow to deep
    assert _png_size(widget.image) == (2 + 3 * 34, 36)
    assert len(widget._last_record["feature_error"]) == 3
    assert widget.details.count("feature error") >= 3


def test_decoder_training_streams_stops_and_resumes(widget) -> None:
    widget.method = "decoder"
    widget.run()
    assert widget.wait(timeout=60)
    assert "no decoder trained" in widget.error and "Train decoder" in widget.error
    assert "no decoder for conv2" in widget.decoder_info
    view = FakeView(widget)
    widget.wait(timeout=60)
    widget.train_steps = 100_000
    widget.train_batch = 4
    widget._on_front_msg(widget, {"type": "action", "action": "train"}, [])
    _wait_for(lambda: widget.step >= 3 and widget.running)
    assert "training the decoder of conv2" in widget.status
    assert any(p["kind"] == "chart" and "training" in p["label"] for p in widget.panels)
    widget.stop()
    assert widget.wait(timeout=60)
    saved = upconv.load_decoder(widget.handle, "conv2", size=32).trained_steps
    assert saved >= 4 and f"trained {saved} steps" in widget.decoder_info
    widget.train_steps = saved + 3  # resume: three more steps
    widget.train_decoder()
    assert widget.wait(timeout=120)
    assert widget.error == "" and widget._last_record["trained_steps"] == saved + 3
    assert len(widget.history) == 3
    assert any(c["run_id"] == widget.run_id - 1 for c, _ in view.frames)  # training streamed
    # the decoder method now reconstructs in one pass
    widget.run()
    assert widget.wait(timeout=60)
    assert widget.error == "" and len(widget.history) == 1
    assert widget._last_record["method"] == "decoder" and widget.feature_error >= 0
    assert active_hook_count(widget.handle.model) == 0


def test_upload_and_bad_upload(widget) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (200, 30, 30)).save(buf, format="PNG")
    before = widget.original
    widget.upload_name = "red.png"
    widget.upload = buf.getvalue()
    assert widget.sample == "upload" and widget.error == ""
    assert ["your image: red.png", "upload"] in widget.sample_options
    assert widget.original != before
    red = Image.open(io.BytesIO(widget.original)).getpixel((16, 16))
    assert red[0] > 150 and red[1] < 80
    widget.upload = b"not an image"
    assert "could not read" in widget.error and widget.sample == "upload"


def test_image_argument_variants(tiny_handle, tmp_path) -> None:
    t = torch.zeros(3, 40, 40)
    t[1] = 1.0  # green
    w = Inversion(tiny_handle, image=t, layer="conv1", size=32)
    assert w.sample == "custom"
    g = Image.open(io.BytesIO(w.original)).getpixel((10, 10))
    assert g[1] > 200 and g[0] < 50
    w.close()
    path = tmp_path / "p.png"
    Image.new("RGB", (40, 40), (0, 0, 255)).save(path)
    w = Inversion(tiny_handle, image=str(path), layer="conv1", size=32)
    assert Image.open(io.BytesIO(w.original)).getpixel((10, 10))[2] > 200
    w.close()


def test_nan_shows_an_error_and_the_widget_stays_usable() -> None:
    net = make_tiny()
    w = Inversion(net, layer="conv2", steps=10, size=32)
    try:
        with torch.no_grad():
            saved = net.conv2.weight.clone()
            net.conv2.weight[0, 0, 0, 0] = float("nan")
        w.run()
        assert w.wait(timeout=60)
        assert w.error and not w.running and active_hook_count(net) == 0
        with torch.no_grad():
            net.conv2.weight.copy_(saved)
        w.run()
        assert w.wait(timeout=60)
        assert w.error == "" and len(w.history) == 10
    finally:
        w.close()


def test_close_while_training_ends_the_worker(tiny_handle) -> None:
    w = Inversion(tiny_handle, layer="conv2", size=32, train_steps=100_000, train_batch=2)
    w.train_decoder()
    _wait_for(lambda: w.step >= 1 and w.running)
    w.close()
    assert w._worker is None or not w._worker.is_alive()
    assert active_hook_count(tiny_handle.model) == 0
    # the stop wrote a checkpoint
    assert upconv.load_decoder(tiny_handle, "conv2", size=32) is not None
