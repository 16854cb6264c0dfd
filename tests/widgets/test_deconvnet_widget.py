"""The DeconvNet widget without a browser: the pass, its caches, unit changes, clicks, errors."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.data.datasets import augmented_samples
from cnnvis_widgets.widgets import deconvnet as D
from cnnvis_widgets.widgets.deconvnet import DeconvNet
from tests.conftest import make_tiny
from tests.helpers import assert_refused

N = 24  # images of the test dataset (32 px, the tiny model's input)


@pytest.fixture(autouse=True)
def fresh_memo():
    D._MEMO.clear()
    yield
    D._MEMO.clear()


@pytest.fixture
def widget(tiny_handle):
    w = DeconvNet(tiny_handle, layer="conv2", unit=3, n_images=N)
    yield w
    w.close()


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def no_pass(*args, **kwargs):
    raise AssertionError("a dataset pass ran although its result was cached")


def test_validation_and_unknown_arguments(widget, tiny_handle) -> None:
    assert widget.unit_max == 15 and widget.layer == "conv2"
    assert_refused(widget, "unit", {16: "valid 0..15"})
    assert_refused(widget, "layer", {"conv3": "nearest valid names", "fc": "no spatial output"})
    assert_refused(widget, "opacity", {1.5: "between 0 and 1"})
    assert_refused(widget, "selected", {9: "selected must be between -1 and 8"})
    assert_refused(widget, "n_images", {0: "n_images"})
    assert (widget.unit, widget.layer, widget.opacity) == (3, "conv2", 0.7)  # nothing lost
    with pytest.raises(TypeError, match="unknown argument"):
        DeconvNet(tiny_handle, unitt=3)
    with pytest.raises(KeyError, match="nearest valid names"):
        DeconvNet(tiny_handle, layer="conv9")
    widget.unit = 15
    widget.layer = "conv1"  # 8 channels: the unit follows the range
    assert widget.unit_max == 7 and widget.unit == 7


def test_run_shows_the_core_top9_and_exports(widget, tiny_handle, tmp_path) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and not widget.running
    assert "conv2 unit 3" in widget.status and "done" in widget.status
    # the widget shows exactly the core's ranking
    ds = augmented_samples(n=N, size=32)
    ref = T.top_k_patches(tiny_handle, "conv2", ds, k=9)
    rec = widget.record()
    json.dumps(rec)
    top = rec["result"]["top"]
    assert [e["index"] for e in top] == [e.image for e in ref.entries(3)]
    assert [e["box"] for e in top] == [list(e.box) for e in ref.entries(3)]
    assert rec["settings"]["unit"] == 3 and rec["settings"]["method"] == "deconvnet"
    assert "details" not in rec["settings"]
    assert len(widget.details.splitlines()) == 10 and ref.entries(3)[0].name in widget.details
    # pictures: two 3x3 grids of 96 px cells, side by side in the static image
    assert png(widget.patches).shape == (288, 288, 3)
    assert png(widget.projections).shape == (288, 288, 3)
    assert png(widget.image).shape == (288, 288 * 2 + 8, 3)
    assert png(widget.projections).std() > 1  # not blank
    path = widget.save(tmp_path / "deconv")
    assert Image.open(path).size == (584, 288)
    bundle = widget._repr_mimebundle_()
    assert "image/png" in bundle
    assert active_hook_count(tiny_handle.model) == 0


def test_another_unit_or_method_reuses_the_pass(widget, monkeypatch) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    first_patches, first_proj = widget.patches, widget.projections
    monkeypatch.setattr(T, "top_k_steps", no_pass)
    widget.unit = 4
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and "conv2 unit 4" in widget.status
    assert widget.patches != first_patches
    assert widget.record()["result"]["unit"] == 4
    unit4_patches, unit4_proj = widget.patches, widget.projections
    widget.method = "guided_backprop"
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == ""
    assert widget.patches == unit4_patches and widget.projections != unit4_proj
    assert first_proj != unit4_proj


def test_the_pass_is_cached_on_disk_per_model_layer_and_dataset(tiny_handle, monkeypatch):
    w = DeconvNet(tiny_handle, layer="conv1", unit=2, n_images=N)
    try:
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        shown = w.patches
    finally:
        w.close()
    D._MEMO.clear()  # a new kernel: only the disk cache is left
    monkeypatch.setattr(T, "top_k_steps", no_pass)
    w2 = DeconvNet(tiny_handle, layer="conv1", unit=2, n_images=N)
    try:
        w2.run()
        assert w2.wait(timeout=120) and w2.error == ""
        assert w2.patches == shown
        w2.n_images = N + 1  # another dataset: a new pass is needed
        w2.run()
        assert w2.wait(timeout=120)
        assert "cached" in w2.error
    finally:
        w2.close()


def test_click_on_a_patch_shows_the_whole_image(widget) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.detail == b"" and widget.selected == -1
    # the front end names the cell; x/y alone (an old or hand-made message) select nothing
    widget._on_click({"type": "click", "panel": 1, "trait": "projections", "x": 0.5, "y": 0.9})
    assert widget.selected == -1
    click = {"type": "click", "panel": 1, "trait": "projections", "x": 0.5, "y": 0.9}
    widget._on_click(dict(click, row=2, col=1))
    assert widget.selected == 7
    detail = png(widget.detail)
    assert detail.shape == (32, 32, 3)
    box = widget.record()["result"]["top"][7]["box"]
    # the receptive field is outlined in green
    t, l_, b, r = box
    edge = detail[t, max(l_, 0) : r]
    assert (edge[:, 1] > 150).all() and (edge[:, 0] < 100).all()
    faint = widget.detail
    widget.opacity = 0.0  # opacity re-composites without a run
    assert widget.detail != faint
    widget._on_click({"type": "click", "panel": 0, "trait": "detail", "row": 0, "col": 0})
    widget._on_click(dict(click, row=3, col=0))  # no such cell
    assert widget.selected == 7  # clicks on the detail picture or outside the grid do nothing


def test_fewer_images_than_cells_and_clicks_on_empty_cells(tiny_handle) -> None:
    w = DeconvNet(tiny_handle, layer="conv2", unit=0, n_images=5)
    try:
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        assert len(w.record()["result"]["top"]) == 5
        w._on_click({"type": "click", "panel": 0, "trait": "patches", "row": 2, "col": 2})
        assert w.selected == -1
    finally:
        w.close()


def test_the_dataset_pass_reports_progress_and_can_be_cancelled(widget, monkeypatch) -> None:
    slow = T.to_pixels

    def slow_to_pixels(*args, **kwargs):
        time.sleep(0.004)
        return slow(*args, **kwargs)

    monkeypatch.setattr(T, "to_pixels", slow_to_pixels)
    widget.n_images = 2000
    widget.run()
    deadline = time.monotonic() + 60
    while widget.step < 1 and time.monotonic() < deadline:
        threading.Event().wait(0.02)
    widget.stop()
    assert widget.wait(timeout=60)
    assert "stopped" in widget.status and widget.error == ""
    assert widget.patches == b""  # nothing half-done was shown
    assert widget.total_steps == 2000 // 16
    widget._pass_total = 2000
    widget.running = True
    widget._sync_extra(T.Step(3, None, None, {"images": 64}, 125))
    assert "dataset pass, 64/2000 images" in widget.status
    widget.running = False
    monkeypatch.setattr(T, "to_pixels", slow)
    widget.n_images = N  # the widget stays usable
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and widget.patches != b""
    assert active_hook_count(widget.handle.model) == 0


def test_folder_errors_are_shown_and_a_folder_works(widget, tmp_path) -> None:
    widget.dataset = "folder"
    widget.run()
    assert widget.wait(timeout=60)
    assert "set it in Python" in widget.error
    widget.folder = str(tmp_path / "nowhere")
    widget.run()
    assert widget.wait(timeout=60)
    assert "does not exist" in widget.error and not widget.running
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / f"{i:02d}.png"
        )
    widget.folder = str(tmp_path)
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == ""
    assert widget.record()["result"]["top"][0]["image"].endswith(".png")
    assert widget.record()["settings"]["folder"] == str(tmp_path)
    assert "folder" not in widget.trait_names(sync=True)


def test_nan_weights_show_an_error() -> None:
    net = make_tiny()
    w = DeconvNet(net, layer="conv2", n_images=8)
    try:
        with torch.no_grad():
            net.conv1.weight.fill_(float("nan"))
        w.run()
        assert w.wait(timeout=60)
        assert "NaN" in w.error and not w.running
        assert active_hook_count(net) == 0
    finally:
        w.close()


def test_a_grey_model_works() -> None:
    from cnnvis_widgets import load_model

    h = load_model(make_tiny(in_channels=1), device="cpu", input_size=32)
    w = DeconvNet(h, layer="conv2", n_images=12, method="guided_backprop")
    try:
        w.run()
        assert w.wait(timeout=120)
        assert w.error == "" and png(w.patches).shape == (288, 288, 3)
        w.selected = 0
        assert png(w.detail).shape == (32, 32, 3)
    finally:
        w.close()


def open_view(w) -> None:
    w.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    w._on_front_msg(w, {"type": "ready"}, [])


def test_manual_widget_applies_unit_and_method_from_the_cached_pass(tiny_handle, monkeypatch):
    """auto_run=False (the tour): after the first run, moving the unit or switching the
    projection shows the new result at once (the pass is cached); a new dataset says so."""
    w = DeconvNet(tiny_handle, layer="conv2", unit=5, n_images=N, auto_run=False)
    try:
        open_view(w)
        assert w.run_id == 0 and w.status == "ready: press Run"
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        monkeypatch.setattr(T, "top_k_steps", no_pass)
        unit5 = w.patches
        w.unit = 9
        assert w.wait(timeout=120) and w.error == ""
        assert w.record()["result"]["unit"] == 9 and w.patches != unit5
        proj = w.projections
        w.method = "guided_backprop"
        assert w.wait(timeout=120) and w.error == ""
        assert w.record()["result"]["method"] == "guided_backprop" and w.projections != proj
        runs = w.run_id
        w.n_images = N + 8  # another dataset: a new pass, only on Run
        assert w.run_id == runs and w.status == "settings changed: press Run"
    finally:
        w.close()


def test_without_max_pooling_the_widget_starts_on_guided_backprop_and_says_why(lite0) -> None:
    w = DeconvNet(lite0, n_images=16)
    try:
        assert not D.has_max_pooling(lite0)
        assert w.method == "guided_backprop" and "max-pooling" in w.note and "switches" in w.note
        assert w.panels[0] == {"kind": "text", "trait": "note", "label": "Note"}
        explicit = DeconvNet(lite0, method="deconvnet")  # an explicit choice wins
        assert explicit.method == "deconvnet"
        explicit.close()
    finally:
        w.close()


def test_with_max_pooling_the_widget_stays_on_deconvnet(tiny_handle) -> None:
    w = DeconvNet(tiny_handle, layer="conv2", n_images=N)
    try:
        assert D.has_max_pooling(tiny_handle)
        assert w.method == "deconvnet" and w.note == ""
        assert all(p.get("trait") != "note" for p in w.panels)
    finally:
        w.close()
