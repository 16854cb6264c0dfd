"""The Training widget without a browser: live training, stop/resume, scrubbing checkpoints, a
user's own loop feeding a Timeline, and the label-randomization comparison (tiny data)."""

from __future__ import annotations

import copy
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

import cnnvis_widgets as cw
from cnnvis_widgets import load_model
from cnnvis_widgets.core import training as TR
from cnnvis_widgets.core.timeline import Timeline
from tests.helpers import assert_refused


@pytest.fixture(scope="module")
def tiny_data():
    """100 training digits (10 per class), 100 test digits."""
    return TR.digits_data(train_per_class=10, test_per_class=10)


@pytest.fixture
def widget(tiny_data):
    w = cw.Training(data=tiny_data, epochs=2, am_steps=4, n_units=2, random_epochs=3)
    yield w
    w.close()


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_validation_and_defaults(widget) -> None:
    assert widget.handle.name == "zf_mnist" and widget.handle.weights.startswith("random")
    assert widget.layer == "features" and widget.unit_max == 31
    assert "features.conv1" in [o[1] for o in widget.layer_options]
    assert_refused(widget, "checkpoint", {1: "valid 0..0"})  # nothing trained yet
    assert_refused(widget, "layer", {"fc": "nearest valid names|no spatial output"})
    assert_refused(widget, "epochs", {0: "epochs"})
    assert_refused(widget, "unit", {32: "valid 0..31"})
    with pytest.raises(TypeError, match="unknown argument"):
        cw.Training(epoch=3)


def test_run_trains_a_copy_and_scrubbing_changes_the_filters(widget) -> None:
    before = {k: v.clone() for k, v in widget.handle.model.state_dict().items()}
    widget.run()
    assert widget.wait(timeout=300)
    assert widget.error == "" and "done" in widget.status
    assert len(widget.timeline) == 3 and widget.checkpoint == widget.checkpoint_max == 2
    names = [s["name"] for s in widget.curves["series"]]
    assert names == ["loss", "batch accuracy", "test accuracy"]
    loss = widget.curves["series"][0]["points"]
    assert len(loss) == 4 and [p[0] for p in loss] == [1, 2, 3, 4]  # 2 epochs x 2 batches
    assert len(widget.curves["series"][2]["points"]) == 3  # epochs 0, 1, 2
    assert widget.details.startswith("epoch 2")
    last_filters, am, patches = widget.filters, widget.am_images, widget.top_patches
    assert png(am).shape[1] > 2 * 84 and png(patches).shape[1] > 2 * 288  # two units
    widget.checkpoint = 0
    assert widget.wait(timeout=120)
    assert widget.details.startswith("epoch 0") and widget.filters != last_filters
    assert widget.top_patches != patches  # the initialisation's own top-9
    # the user's network was not trained: the widget trained a copy
    assert all(torch.equal(v, before[k]) for k, v in widget.handle.model.state_dict().items())
    res = widget.result
    assert res is not None and res.finished and res.epoch == 2
    rec = widget.record()
    json.dumps(rec)
    assert rec["settings"]["epochs"] == 2 and rec["settings"]["checkpoint"] == 0


def test_stop_then_run_resumes_exactly(widget, tiny_data) -> None:
    widget.batch_size = 10  # 10 steps an epoch
    original = widget._on_step

    def stop_after_five(step):
        original(step)
        if step.index == 4:
            widget.stop()

    widget._on_step = stop_after_five
    widget.run()
    assert widget.wait(timeout=300) and "stopped" in widget.status
    assert widget.result is not None and widget.result.step == 5 and not widget.result.finished
    widget._on_step = original
    widget.run()  # Run again: resumes where it stopped
    assert widget.wait(timeout=300) and "done" in widget.status
    straight = TR.train(widget.handle, tiny_data, epochs=2, batch_size=10)
    got = widget.result.model.state_dict()
    assert widget.result.step == straight.step == 20
    assert all(torch.equal(v, got[k]) for k, v in straight.model.state_dict().items())


def test_a_users_own_loop_feeds_the_timeline(tiny_data) -> None:
    handle = load_model("zf_mnist", weights=None, device="cpu")
    tl = Timeline()
    w = cw.Training(handle, data=tiny_data, timeline=tl, auto_run=False, am_steps=0)
    try:
        net = copy.deepcopy(handle.model)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for step in range(3):  # the user's loop
            x = handle.normalize(tiny_data.x[step * 20 : step * 20 + 20])
            loss = torch.nn.functional.cross_entropy(net(x), tiny_data.y[step * 20 :][:20])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tl.snapshot(net, step, loss=loss.item())
            tl.record(step, loss=loss.item())
        deadline = time.monotonic() + 30
        while w.checkpoint_max != 2 and time.monotonic() < deadline:  # the widget polls
            time.sleep(0.1)
        assert w.checkpoint_max == 2 and w.checkpoint == 2
        assert [p[0] for p in w.curves["series"][0]["points"]] == [0, 1, 2]
        f2 = w.filters
        w.checkpoint = 0
        assert w.wait(timeout=60) and w.filters != f2 and w.details.startswith("step 0")
    finally:
        w.close()


def test_label_randomization_comparison(widget) -> None:
    widget.n_compare = 4
    widget.compare()
    assert widget.wait(timeout=300)
    assert widget.error == "" and "label randomization" in widget.status
    pic = png(widget.comparison)
    assert pic.shape[1] == 3 * 84 + 4 * 4 and pic.shape[0] == 4 * 84 + 5 * 4  # 4 rows of 3
    text = widget.compare_details
    assert "random labels: train accuracy" in text and "Spearman" in text
    corr = widget.record()["result"]["spearman_abs"]
    assert len(corr) == 4 and all(-1 <= c <= 1 for c in corr)
    assert len(widget.timeline) == 0  # the comparison adds no snapshots
