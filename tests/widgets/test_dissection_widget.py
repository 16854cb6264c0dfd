"""The Dissection widget without a browser: runs, table rows, unit selection, stop/resume,
comparison, threshold changes, exports, errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import traitlets
from PIL import Image

from cnnvis_widgets import load_model
from cnnvis_widgets.core.dissection import dissect
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.data.concepts import probe_set
from cnnvis_widgets.widgets.dissection import Dissection, default_layers
from tests.conftest import make_tiny
from tests.helpers import FakeView, check_nan_then_recovery

SMALL = dict(n_images=32, image_size=32, batch_size=8)


@pytest.fixture
def widget(tiny_handle):
    w = Dissection(tiny_handle, layers=["conv1", "relu2"], **SMALL)
    yield w
    w.close()


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def test_controls_panels_and_validation(widget, tiny_handle) -> None:
    assert widget.layer == "relu2" and widget.unit_max == 15
    traits = [c.get("trait") for c in widget.controls]
    assert {"n_images", "quantile", "iou_threshold", "layer", "unit"} <= set(traits)
    actions = [c.get("action") for c in widget.controls if c.get("kind") == "button"]
    assert actions == ["export_csv", "export_json", "export_png", "export_zip"]
    kinds = [p["kind"] for p in widget.panels]
    assert kinds == ["progress", "table", "image", "text", "bars"]
    table = widget.panels[1]
    assert table["select_trait"] == "unit" and table["select_key"] == "unit"
    assert widget.panels[4]["series"] == ["color", "texture", "shape"]
    with pytest.raises(traitlets.TraitError, match="valid 0..15"):
        widget.unit = 16
    with pytest.raises(traitlets.TraitError, match="not dissected"):
        widget.layer = "conv2"
    with pytest.raises(traitlets.TraitError, match="nearest valid names"):
        widget.layers = ["conv1", "conv3"]
    with pytest.raises(traitlets.TraitError, match="quantile"):
        widget.quantile = 0.9
    with pytest.raises(traitlets.TraitError, match="iou_threshold"):
        widget.iou_threshold = float("nan")
    with pytest.raises(traitlets.TraitError, match="no comparison model"):
        widget.view_model = "compare"
    with pytest.raises(TypeError, match="unknown argument"):
        Dissection(tiny_handle, layers=["conv1"], n_image=3)
    with pytest.raises(KeyError, match="nearest valid names"):
        Dissection(tiny_handle, layers=["conv9"])
    with pytest.raises(ValueError, match="no spatial output"):
        Dissection(tiny_handle, layers=["fc"])
    widget.layer = "conv1"
    assert widget.unit_max == 7


def test_default_layers_spread_over_the_network(tiny_handle) -> None:
    lite = load_model("efficientnet_lite0", weights=None, device="cpu")
    assert default_layers(lite) == ["_blocks.1", "_blocks.6", "_blocks.10", "_blocks.15"]
    assert default_layers(tiny_handle) == ["relu1", "relu2"]


def test_run_fills_table_unit_view_bars_and_static_png(widget) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and not widget.running and widget.stage == "done"
    assert "done" in widget.status and "units interpretable" in widget.status
    result = widget.result
    assert result is not None and result.layers == ["conv1", "relu2"]
    # table rows = the shown layer's units, straight from the result
    assert [r["unit"] for r in widget.rows] == list(range(16))
    for row, rec in zip(widget.rows, result.units("relu2")):
        assert row["concept"] == rec["concept"] and row["iou"] == pytest.approx(
            rec["iou"], abs=1e-4
        )
        assert row["ok"] == ("yes" if rec["interpretable"] else "")
    # bars: unique detectors per category per layer
    assert widget.summary_bars == [
        [s["layer"], *(s["unique"][c] for c in result.categories)] for s in result.summary()
    ]
    first = widget.unit_image
    assert _png(first).size[0] >= 4 * 32
    assert (
        "relu2 unit 0" in widget.details and result.units("relu2")[0]["concept"] in widget.details
    )
    # selecting another row changes the pictures and the text
    widget.unit = 9
    assert "relu2 unit 9" in widget.details
    top0, top9 = result.unit("relu2", 0)["top_images"], result.unit("relu2", 9)["top_images"]
    assert top0 != top9 and widget.unit_image != first
    # static representation: the widget's PNG for exports
    bundle = widget._repr_mimebundle_()
    assert "image/png" in bundle and _png(widget.image).size[0] >= 480
    rec = widget.record()
    json.dumps(rec)
    assert rec["settings"]["layers"] == ["conv1", "relu2"] and "rows" not in rec["settings"]
    assert rec["result"]["summary"] == result.summary()
    assert active_hook_count(widget.handle.model) == 0


def test_result_equals_the_core_api(widget, tiny_handle) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    core = dissect(tiny_handle, ["conv1", "relu2"], probe_set(32, size=32), batch_size=8)
    assert np.array_equal(widget.result["relu2"].iou, core["relu2"].iou)


def test_iou_threshold_rejudges_without_a_new_run(widget) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    run_id = widget.run_id
    widget.iou_threshold = 0.0
    assert all(r["ok"] == "yes" for r in widget.rows)
    assert widget.result.summary()[1]["interpretable"] == 16
    widget.iou_threshold = 1.0
    assert not any(r["ok"] for r in widget.rows)
    assert widget.run_id == run_id and not widget.running


def test_stop_keeps_the_tallies_and_run_resumes(tiny_handle) -> None:
    w = Dissection(tiny_handle, layers=["relu2"], n_images=64, image_size=32, batch_size=4)
    try:
        # stop inside the IoU stage: the partial table is already filling
        job_steps = []

        def stop_in_iou(step):
            job_steps.append(step.index)
            if step.metrics.get("stage") == "iou" and len(job_steps) > 18:
                w.stop()

        w._on_step = stop_in_iou  # type: ignore[method-assign]
        w.run()
        assert w.wait(timeout=120)
        assert "stopped" in w.status and w.result is None
        dissector = w._job.dissectors[0]
        done = dissector.steps_done
        assert 16 < done < 32 and dissector.stage == "iou"
        assert len(w.rows) == 16  # partial labels shown while tallying
        w._on_step = lambda step: None  # type: ignore[method-assign]
        w.run()
        assert w.wait(timeout=120)
        assert w._job.dissectors[0] is dissector  # resumed, not restarted
        assert w.result is not None and "done" in w.status
        fresh = dissect(tiny_handle, ["relu2"], probe_set(64, size=32), batch_size=4)
        assert np.array_equal(w.result["relu2"].iou, fresh["relu2"].iou)
        # a setting that changes the result starts over
        w.seed = 1
        w.run()
        assert w.wait(timeout=120)
        assert w._job.dissectors[0] is not dissector
    finally:
        w.close()


def test_compare_with_random_weights(tiny_handle, tmp_path) -> None:
    net = make_tiny(seed=3)
    w = Dissection(
        load_model(net, device="cpu", input_size=32), layers=["relu2"], compare="random", **SMALL
    )
    try:
        assert w.compare_handle is not None and "random" in w.compare_name
        assert [p["kind"] for p in w.panels][-1] == "bars"
        assert w.panels[-1]["series"] == [w.model_name, w.compare_name]
        w.run()
        assert w.wait(timeout=120)
        a, b = w.result, w.compare_result
        assert a is not None and b is not None
        assert w.compare_bars == [
            ["relu2", a.summary()[0]["interpretable"], b.summary()[0]["interpretable"]]
        ]
        assert not np.array_equal(a["relu2"].iou, b["relu2"].iou)
        rows_a = list(w.rows)
        w.view_model = "compare"
        assert w.rows != rows_a and w.compare_name in w.details
        text = w.to_csv()
        assert text.startswith("model,layer,unit") and text.count("\n") == 1 + 2 * 16
        paths = w.export(tmp_path / "out")
        assert set(paths) == {"csv", "json", "compare_json", "png"}
        assert all(p.is_file() for p in paths.values())
        with pytest.raises(KeyError, match="comparison model"):
            Dissection(
                tiny_handle,
                layers=["relu2"],
                compare=load_model(
                    torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), device="cpu", input_size=32
                ),
            )
    finally:
        w.close()


def test_export_buttons_send_downloads_and_write_nothing(widget, tmp_path, monkeypatch) -> None:
    """The browser's export buttons send the files to the browser (a ``download`` message):
    no trait names a folder on the kernel's machine; ``export(path)`` is Python's."""
    import zipfile

    monkeypatch.chdir(tmp_path)
    view = FakeView(widget, ready=False)
    assert "export_dir" not in widget.trait_names()
    widget._on_front_msg(widget, {"type": "action", "action": "export_csv"}, [])
    assert "run() the widget" in widget.error and view.messages == []  # nothing to export yet
    widget.run()
    assert widget.wait(timeout=120)
    view.messages.clear()
    for action in ("export_csv", "export_json", "export_png", "export_zip"):
        widget._on_front_msg(widget, {"type": "action", "action": action}, [])
        assert widget.error == ""
    downloads = [(c, bytes(b[0])) for c, b in view.messages if c["type"] == "download"]
    assert [(c["name"], c["mime"]) for c, _ in downloads] == [
        ("dissection.csv", "text/csv"),
        ("dissection-json.zip", "application/zip"),
        ("dissection.png", "image/png"),
        ("dissection.zip", "application/zip"),
    ]
    csv, js, pic, everything = (b for _, b in downloads)
    assert csv.decode() == widget.to_csv() and csv.startswith(b"layer,unit,concept")
    with zipfile.ZipFile(io.BytesIO(js)) as z:
        assert json.loads(z.read("dissection.json"))["layers"] == ["conv1", "relu2"]
        assert "dissection.npz" in z.namelist()
    assert _png(pic).size[0] >= 480
    with zipfile.ZipFile(io.BytesIO(everything)) as z:
        assert {"dissection.csv", "dissection.json", "dissection.png"} <= set(z.namelist())
    assert "downloads" in widget.status
    assert list(tmp_path.iterdir()) == []  # nothing written on the kernel's side
    paths = widget.export(tmp_path / "mine")  # Python still takes a path
    assert (tmp_path / "mine" / "dissection.csv").read_bytes() == csv and "png" in paths


def test_manual_widget_says_press_run_for_a_new_pass_and_applies_the_view(tiny_handle) -> None:
    w = Dissection(tiny_handle, layers=["conv1", "relu2"], auto_run=False, **SMALL)
    try:
        FakeView(w, ready=False)
        w._on_front_msg(w, {"type": "ready"}, [])
        assert w.run_id == 0 and w.status == "ready: press Run"
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        rows = w.rows
        w.iou_threshold = 0.0  # applied from the results at once
        assert all(r["ok"] for r in w.rows) and w.rows != rows
        w.unit = 3
        assert "unit 3" in w.details
        runs = w.run_id
        w.n_images = 64  # needs a new pass: said, not silently ignored
        assert w.run_id == runs and w.status == "settings changed: press Run"
    finally:
        w.close()


def test_view_ready_starts_a_run_and_nan_shows_an_error() -> None:
    net = make_tiny()
    w = Dissection(load_model(net, device="cpu", input_size=32), layers=["conv2"], **SMALL)
    try:
        FakeView(w, ready=False)
        check_nan_then_recovery(
            w,
            net,
            net.conv1.weight,
            "NonFiniteActivationError",
            "conv2",
            start=lambda: w._on_front_msg(w, {"type": "ready"}, []),  # auto run, as in a view
        )
        assert w.result is not None
    finally:
        w.close()


def test_plotly_figures(widget) -> None:
    pytest.importorskip("plotly")
    widget.run()
    assert widget.wait(timeout=120)
    fig = widget.figure()
    assert [bar.name for bar in fig.data] == ["color", "texture", "shape"]
    assert list(fig.data[1].x) == ["conv1", "relu2"]
    assert list(fig.data[1].y) == [s["unique"]["texture"] for s in widget.result.summary()]
    with pytest.raises(RuntimeError, match="compare="):
        widget.comparison_figure()
