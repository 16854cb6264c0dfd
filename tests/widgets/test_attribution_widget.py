"""The Attribution widget without a browser: predictions, maps, re-compositing, uploads, errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import traitlets
from PIL import Image

from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import imaging as I
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.data import sample_image
from cnnvis_widgets.widgets.attribution import Attribution
from tests.helpers import assert_refused


@pytest.fixture
def widget(tiny_handle):
    w = Attribution(tiny_handle, image="cat")
    yield w
    w.close()


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def encoded(pixels: torch.Tensor) -> np.ndarray:
    return png(I.encode(pixels, "png"))


def test_run_predicts_and_shows_the_core_maps(widget, tiny_handle, tmp_path) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and not widget.running
    x = tiny_handle.preprocess(sample_image("cat"))
    with torch.no_grad():
        probs = tiny_handle.model(x).softmax(1)[0]
    top = probs.argsort(descending=True).tolist()
    # predictions: the top-5 (all 5 classes of the tiny model), best first, offered first
    assert [row[0] for row in widget.predictions] == [f"{c} class {c}" for c in top]
    assert [round(float(probs[c]), 4) for c in top] == [row[1] for row in widget.predictions]
    assert widget.class_options[0][1] == -1 and [o[1] for o in widget.class_options[1:6]] == top
    assert f"class {top[0]}" in widget.status and "done" in widget.status
    # the guided map (default method) is the core's, shown as a signed image
    guided = A.guided_backprop(tiny_handle, x, top[0])
    assert np.array_equal(png(widget.heatmap), encoded(I.signed_to_pixels(guided)[0]))
    assert png(widget.original).shape == (32, 32, 3)
    assert png(widget.overlay).shape == (32, 32, 3)
    assert png(widget.all_maps).shape[1] == 5 * (128 + 4)
    assert png(widget.image).shape == (32, 32 * 3 + 12, 3)
    rec = widget.record()
    json.dumps(rec)
    assert rec["result"]["target"] == top[0] and len(rec["result"]["top5"]) == 5
    assert rec["settings"]["method"] == "guided_backprop" and rec["settings"]["image_name"] == "cat"
    assert widget.save(tmp_path / "a.png").is_file()
    assert "image/png" in widget._repr_mimebundle_()
    assert active_hook_count(tiny_handle.model) == 0


def test_method_and_opacity_recomposite_without_recomputing(widget, tiny_handle, monkeypatch):
    widget.run()
    assert widget.wait(timeout=120)
    calls = []
    monkeypatch.setattr(A, "attribute", lambda *a, **k: calls.append(a) or 1 / 0)
    before_map, before_over, before_img = widget.heatmap, widget.overlay, widget.image
    widget.method = "saliency"
    assert widget.heatmap != before_map and widget.image != before_img
    x = tiny_handle.preprocess(sample_image("cat"))
    target = widget.record()["result"]["target"]
    sal = A.saliency(tiny_handle, x, target)
    assert np.array_equal(png(widget.heatmap), encoded(I.heatmap(sal)[0]))
    widget.opacity = 0.0
    assert np.array_equal(png(widget.overlay), png(widget.original))  # photo only
    widget.opacity = 1.0
    assert widget.overlay != before_over
    assert calls == [] and not widget.running


def test_target_and_layer_changes_restart(widget, tiny_handle) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    widget.target = 3
    widget.method = "grad_cam"
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.record()["result"]["target"] == 3 and "class 3" in widget.status
    x = tiny_handle.preprocess(sample_image("cat"))
    cam = A.grad_cam(tiny_handle, x, 3, widget.cam_layer)
    assert np.array_equal(png(widget.heatmap), encoded(I.heatmap(cam)[0]))
    widget.cam_layer = "relu1"
    widget.run()
    assert widget.wait(timeout=120)
    cam1 = A.grad_cam(tiny_handle, x, 3, "relu1")
    assert np.array_equal(png(widget.heatmap), encoded(I.heatmap(cam1)[0]))
    # a new photo goes back to its own top-1 prediction
    widget.image_name = "coffee"
    assert widget.target == -1


def test_upload_and_image_argument(widget, tiny_handle, tmp_path) -> None:
    rng = np.random.default_rng(0)
    pic = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    widget.upload_name = "noise.png"
    widget.upload = buf.getvalue()
    assert widget.image_name == "upload"
    assert widget.image_options[-1] == ["your picture: noise.png", "upload"]
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == ""
    expected = tiny_handle.to_pixels(pic)[0]
    assert np.array_equal(png(widget.original), encoded(expected))
    assert widget.record()["result"]["image"] == "noise.png"
    # a file that is not an image: a message, and the widget keeps its picture
    widget.upload_name = "notes.txt"
    widget.upload = b"hello, not a picture"
    assert "notes.txt" in widget.error and "not an image" in widget.error
    assert widget.image_name == "upload"
    # the image= argument: a file path, a PIL image, a sample name, a bad name
    path = tmp_path / "mine.jpg"
    pic.save(path)
    w2 = Attribution(tiny_handle, image=str(path))
    assert w2.image_name == "upload" and w2.photo().size == (60, 40)
    w2.close()
    w3 = Attribution(tiny_handle, image=pic, target=3)  # the settings apply after the image
    assert w3.image_name == "upload" and w3.target == 3
    assert w3.image_options[-1] == ["your picture: image", "upload"]
    w3.close()
    with pytest.raises(KeyError, match="choose one of"):
        Attribution(tiny_handle, image="kitten")


def test_validation(widget, tiny_handle) -> None:
    assert_refused(widget, "target", {5: "valid 0..4"})
    assert_refused(widget, "cam_layer", {"gap": "larger than 1x1", "conv7": "nearest valid names"})
    assert_refused(
        widget, "image_name", {"upload": "no picture was uploaded", "kitten": "unknown picture"}
    )
    assert_refused(widget, "opacity", {-0.1: "between 0 and 1"})


def test_bad_arguments_are_refused(tiny_handle) -> None:
    from torch import nn

    from cnnvis_widgets import load_model

    with pytest.raises(TypeError, match="unknown argument"):
        Attribution(tiny_handle, methd="saliency")
    flat = load_model(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), input_size=8)
    with pytest.raises(ValueError, match="no layer with a spatial output"):
        Attribution(flat)
    with pytest.raises(traitlets.TraitError, match="valid 0..4"):
        Attribution(tiny_handle, image="coffee", target=7)


def test_unsupported_activation_is_an_error_in_the_widget() -> None:
    from torch import nn

    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    w = Attribution(net, image="cat", method="saliency")
    try:
        w.run()
        assert w.wait(timeout=120)
        # the maps that need ReLU are left out, and the status says so
        assert w.error == "" and "not available" in w.status and "Guided backprop" in w.status
        unsupported = set(w.record()["result"]["unsupported"])
        assert unsupported == {"deconvnet", "guided_backprop", "guided_grad_cam"}
        assert png(w.all_maps).shape[1] == 2 * (128 + 4)  # saliency and Grad-CAM
        w.method = "guided_backprop"  # not computed: a run that fails with the reason
        assert w.wait(timeout=120)
        assert "UnsupportedActivationError" in w.error and "'1'" in w.error
        assert not w.running and active_hook_count(net) == 0
        assert not A.patches_installed()
    finally:
        w.close()


def test_a_grey_model_works() -> None:
    from cnnvis_widgets import load_model
    from tests.conftest import make_tiny

    h = load_model(make_tiny(in_channels=1), device="cpu", input_size=32)
    w = Attribution(h, image="camera", method="grad_cam")
    try:
        w.run()
        assert w.wait(timeout=120)
        assert w.error == "" and png(w.heatmap).shape == (32, 32, 3)
        assert png(w.all_maps).shape[1] == 5 * (128 + 4)
    finally:
        w.close()


def test_a_second_upload_with_the_same_name_gets_its_own_maps(widget, tiny_handle) -> None:
    """The key holds every pixel (it hashed only the first 64 KiB: the second upload, equal in
    its top rows, got the first one's predictions and maps) and the model's content."""
    rng = np.random.default_rng(1)
    top = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)  # 72 000 bytes: > 64 KiB
    pics = [
        Image.fromarray(np.concatenate([top, rng.integers(0, 255, (80, 200, 3), np.uint8)]))
        for _ in range(2)
    ]
    for pic in pics:
        buf = io.BytesIO()
        pic.save(buf, format="PNG")
        widget.upload_name = "photo.png"
        widget.upload = buf.getvalue()
        widget.run()
        assert widget.wait(timeout=120) and widget.error == ""
        x = tiny_handle.preprocess(pic)
        target = int(tiny_handle.net(x).argmax())
        guided = A.guided_backprop(tiny_handle, x, target)
        assert np.array_equal(png(widget.heatmap), encoded(I.signed_to_pixels(guided)[0]))
    # the same picture after a weight change: predicted and mapped again
    with torch.no_grad():
        tiny_handle.model.fc.weight.mul_(-1.0)
    widget.run()
    assert widget.wait(timeout=120) and widget.error == ""
    x = tiny_handle.preprocess(pics[1])
    with torch.no_grad():
        probs = tiny_handle.net(x).softmax(1)[0]
    assert widget.predictions[0][1] == round(float(probs.max()), 4)


def test_the_map_cache_is_bounded_by_count_and_bytes(widget, monkeypatch) -> None:
    """Every class x photo adds one map per method: the cache keeps the most recent ones only
    (it grew without bound: 305 maps, +194 MB after 60 classes)."""
    per_run = 2 * len(A.METHODS)  # a map and its summary per method
    widget._maps.max_items = 2 * per_run
    sizes = []
    for image in ("cat", "camera", "cat"):
        for target in range(5):
            widget.image_name = image
            widget.target = target
            widget.run()
            assert widget.wait(timeout=120) and widget.error == ""
            sizes.append(len(widget._maps))
    assert max(sizes) <= 2 * per_run and len(widget._maps) == 2 * per_run
    kept = widget._maps._items.values()
    assert widget._maps.nbytes == sum(
        len(m.encode()) if isinstance(m, str) else m.nelement() * m.element_size() for m in kept
    )
    widget.method = next(
        m for m in A.METHODS if m != widget.method
    )  # the last run's maps are still there: no new pass
    assert widget.heatmap and widget.error == ""
