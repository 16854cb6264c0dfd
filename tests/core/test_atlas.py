"""The atlas core: batched layer grids cached and resumed, network summary, unit cards."""

from __future__ import annotations

import threading

import pytest
import torch

from cnnvis_widgets.core import atlas as A
from cnnvis_widgets.core.hooks import active_hook_count, capture
from tests.helpers import ForwardCounter


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_layer_grid_completes_caches_and_reloads_without_recomputing(tiny_handle, cache_dir):
    kw = dict(steps=6, size=32, batch=5, seed=1)
    counter = ForwardCounter(tiny_handle.model)
    grid = A.layer_grid(tiny_handle, "conv2", **kw)
    first = counter.n
    counter.remove()
    assert grid.complete and grid.units == 16
    assert grid.images.shape == (16, 3, 32, 32) and grid.images.dtype == torch.uint8
    assert torch.isfinite(grid.activation).all()
    # 4 batches (5+5+5+1) of 6 steps, plus one evaluation pass per batch
    assert first == 4 * 6 + 4
    path = A.grid_cache_path(tiny_handle, "conv2", "lucid", A.am_settings("lucid", 6), 32, 1)
    assert path.is_file()

    counter = ForwardCounter(tiny_handle.model)
    again = A.layer_grid(tiny_handle, "conv2", **kw)
    counter.remove()
    assert counter.n == 0  # everything from the cache
    assert torch.equal(again.images, grid.images)
    assert torch.allclose(again.activation, grid.activation)
    # other settings are another cache entry
    counter = ForwardCounter(tiny_handle.model)
    A.layer_grid(tiny_handle, "conv2", units=[0], **dict(kw, steps=3))
    counter.remove()
    assert counter.n == 3 + 1
    assert active_hook_count(tiny_handle.model) == 0


def test_batched_units_optimize_their_own_channel(tiny_handle, cache_dir):
    grid = A.layer_grid(tiny_handle, "conv2", steps=20, size=32, batch=16)
    pix = torch.stack([grid.pixels(u) for u in range(16)])
    with torch.no_grad(), capture(tiny_handle, ["conv2"]) as acts:
        tiny_handle.net(tiny_handle.normalize(pix))
    means = acts["conv2"].mean((2, 3))  # (image, channel)
    # image u drives channel u more than the other images do, for most units
    wins = sum(int(means[:, u].argmax()) == u for u in range(16))
    assert wins >= 12, wins


def test_cancelled_fill_keeps_finished_batches_and_resumes(tiny_handle, cache_dir):
    stop = threading.Event()
    kw = dict(steps=4, size=32, batch=4, seed=0)
    for st in A.layer_grid_steps(tiny_handle, "conv2", stop_event=stop, **kw):
        if st.index == 5:  # inside the second batch
            stop.set()
    assert active_hook_count(tiny_handle.model) == 0
    counter = ForwardCounter(tiny_handle.model)
    grid = A.layer_grid(tiny_handle, "conv2", **kw)
    counter.remove()
    assert grid.complete
    assert counter.n == 3 * (4 + 1)  # the first batch came from the cache


def test_unknown_layer_and_units_out_of_range(tiny_handle, cache_dir):
    with pytest.raises(KeyError, match="nearest valid names"):
        A.layer_grid(tiny_handle, "conv9", steps=2)
    with pytest.raises(IndexError, match="valid 0..15"):
        A.layer_grid(tiny_handle, "conv2", steps=2, units=[16])
    with pytest.raises(KeyError, match="unknown preset"):
        A.layer_grid(tiny_handle, "conv2", steps=2, preset="nope")


def test_class_contributions_equal_weight_times_mean_activation(tiny_handle):
    torch.manual_seed(0)
    pix = torch.rand(3, 3, 32, 32)
    c = A.class_contributions(tiny_handle, "relu2", 5, pix)
    with torch.no_grad(), capture(tiny_handle, ["relu2"]) as acts:
        tiny_handle.net(tiny_handle.normalize(pix))
    mean_act = acts["relu2"][:, 5].mean((1, 2))  # (B,)
    w = tiny_handle.model.fc.weight[:, 5]
    expected = (w[None, :] * mean_act[:, None]).mean(0)
    assert torch.allclose(c, expected, atol=1e-5), (c, expected)
    assert active_hook_count(tiny_handle.model) == 0


def test_the_package_keeps_every_name_of_the_old_module():
    """core/atlas.py became a package and class_contributions moved to
    core/attribution/contributions.py: every public name of the old module is still reachable
    as ``atlas.<name>``."""
    from cnnvis_widgets.core import contributions

    old = [
        "LayerGrid", "LayerSummary", "NetworkSummary", "UnitCard", "am_settings", "settings_key",
        "grid_cache_path", "cached_unit_image", "layer_grid_steps", "layer_grid",
        "default_atlas_layers", "network_summary_steps", "network_summary",
        "class_contributions", "unit_card_steps", "unit_card", "render_grid", "card_images",
    ]  # fmt: skip
    missing = [n for n in old if not hasattr(A, n)]
    assert missing == []
    assert set(old) <= set(A.__all__)
    assert A.class_contributions is contributions.class_contributions
    assert A.class_contributions.__module__ == "cnnvis_widgets.core.attribution.contributions"


def test_network_summary_and_its_cache(tiny_handle, cache_dir):
    kw = dict(probe_images=16, inversion_steps=6, inversion_size=32)
    s = A.network_summary(tiny_handle, ["relu1", "relu2"], **kw)
    rows = s.rows()
    assert [r["layer"] for r in rows] == ["relu1", "relu2"]
    assert rows[1]["shape"] == "16x16x16"
    for r in rows:
        assert 0.0 <= r["interpretable"] <= 1.0
        assert r["feature_error"] > 0 and r["feature_error"] < 10
    assert s.strips().shape[0] == 3 and s.strips().shape[1] >= 2 * 48
    counter = ForwardCounter(tiny_handle.model)
    s2 = A.network_summary(tiny_handle, ["relu1", "relu2"], **kw)
    counter.remove()
    assert counter.n == 1  # only the thumbnails' forward pass
    assert s2.rows() == rows


def test_unit_card_and_amortized_cache(tiny_handle, cache_dir):
    kw = dict(steps=5, size=32, seed=0)
    grid = A.layer_grid(tiny_handle, "relu2", batch=16, **kw)
    s = A.network_summary(
        tiny_handle, ["relu2"], probe_images=16, inversion_steps=4, inversion_size=32
    )
    card = A.unit_card(
        tiny_handle, "relu2", 3, n_images=16, variants=3, dissection=s.dissection, **kw
    )
    assert torch.allclose(card.am_image, grid.pixels(3))  # the grid's image, not recomputed
    assert card.variants.shape == (3, 3, 32, 32)
    assert len(card.entries) == 9 and len(card.patches) == 9 and len(card.projections) == 9
    assert card.dissection is not None and card.dissection["unit"] == 3
    assert len(card.classes) == 5
    assert card.classes[0][2] >= card.classes[-1][2]
    assert "relu2 unit 3" in card.text() and "feeds most" in card.text()
    pics = A.card_images(card)
    assert pics["patches"].shape == pics["projections"].shape
    counter = ForwardCounter(tiny_handle.model)
    A.unit_card(tiny_handle, "relu2", 3, n_images=16, variants=3, **kw)
    counter.remove()
    # cached: variants and the top-9 pass; left: one DeconvNet pass + one for the classes, and
    # the removal of the unit (the intact network and the one without it, one batch)
    assert counter.n <= 5
    assert card.removal is not None and card.removal.units == (3,)
    assert "16 images, agreement with the intact network" in card.removal_text()
    from cnnvis_widgets.core import importance
    from cnnvis_widgets.data.datasets import augmented_samples

    ref = importance.ablate(tiny_handle, "relu2", [3], augmented_samples(n=16, size=32, seed=0))
    assert card.removal.accuracy_drop == float(ref.accuracy_drop[0])
    assert card.removal.hurts == ref.hurts_most(0)
    assert active_hook_count(tiny_handle.model) == 0


def test_am_widget_shows_the_atlas_image_without_recomputing(tiny_handle, cache_dir):
    from cnnvis_widgets.widgets.activation_max import ActivationMaximization

    grid = A.layer_grid(tiny_handle, "conv2", steps=8, size=32, batch=16)
    w = ActivationMaximization(tiny_handle, layer="conv2", unit=4, steps=8, size=32)
    try:
        counter = ForwardCounter(tiny_handle.model)
        w.run()
        assert w.wait(timeout=60)
        counter.remove()
        assert w.error == ""
        assert counter.n == 1  # only the final evaluation of the shown image
        assert torch.allclose(w._last_pixels.float(), grid.pixels(4), atol=1 / 255)
        # other settings: a real run
        w.steps = 9
        counter = ForwardCounter(tiny_handle.model)
        w.run()
        assert w.wait(timeout=60)
        counter.remove()
        assert counter.n >= 9 and len(w.history) == 9
    finally:
        w.close()


def test_grid_labels_are_wrapped_never_cut() -> None:
    """Labels burnt into the atlas grid were cut to w // 6 characters ('3 spiralle'): every
    character is drawn now, on as many lines as it needs."""
    from PIL import Image, ImageDraw

    from cnnvis_widgets.core.atlas import grid as AT

    d = ImageDraw.Draw(Image.new("RGB", (64, 64)))
    for text in ("3 spiralled", "117 honeycombed", "5 a-very-long-concept-name-without-spaces"):
        lines = AT._wrap_label(text, 60, d.textlength)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")
        assert all(d.textlength(line) <= 60 for line in lines)
    cells = torch.full((2, 3, 64, 64), 0.5)
    drawn = AT._label_cells(cells, ["3 spiralled", "117 honeycombed"])
    # both lines of a two-line label are drawn: the band covers two text lines
    assert drawn.shape == cells.shape
    assert (drawn[1, :, 64 - 21 : 64 - 12] != 0.5).any()


def test_the_steps_return_their_results_and_stopped_runs_return_none(tiny_handle, cache_dir):
    """Run protocol: grid, summary and card are what the generators return, not metrics."""
    from cnnvis_widgets.core.blocks.runs import Run, finish

    run = Run(A.layer_grid_steps(tiny_handle, "conv2", steps=2, size=32, batch=16))
    steps = list(run)
    assert isinstance(run.result, A.LayerGrid) and run.result.complete
    assert all("grid" not in s.metrics for s in steps) and steps[-1].metrics["filled"] == 16
    assert steps[0].metrics["partial"] is run.result  # the grid being filled, for live views
    run = Run(A.network_summary_steps(tiny_handle, ["relu2"], probe_images=8, inversion=False))
    steps = list(run)
    assert isinstance(run.result, A.NetworkSummary) and steps[-1].metrics == {"stage": "done"}
    assert run.result.probe is not None and len(run.result.probe) == 8  # the dissection's probe
    assert set(run.result.labels("relu2")) == set(range(16))
    assert run.result.labels("relu1") == {}  # not dissected
    stop = threading.Event()
    stop.set()
    kw = dict(steps=2, size=32, stop_event=stop)
    assert finish(A.unit_card_steps(tiny_handle, "relu2", 1, n_images=8, **kw)) is None
    with pytest.raises(RuntimeError, match="grid was not completed"):
        A.layer_grid(tiny_handle, "relu2", **kw)
    with pytest.raises(RuntimeError, match="unit card was not completed"):
        A.unit_card(tiny_handle, "relu2", 1, **kw)


def _grid(activation, done) -> A.LayerGrid:
    n = len(done)
    images = torch.arange(n, dtype=torch.uint8).mul(40).view(n, 1, 1, 1).expand(n, 3, 8, 8)
    return A.LayerGrid("l", images.clone(), torch.tensor(activation), torch.tensor(done))


def test_order_units_sorts_and_filters_the_layer_view() -> None:
    g = _grid([0.5, 2.0, float("nan"), 1.0], [True, True, False, True])
    labels = {0: ("striped", 0.2), 1: ("grass", 0.05), 3: ("Stripy", 0.4)}
    assert A.order_units(g) == [0, 1, 2, 3]
    assert A.order_units(g, labels, "activation") == [1, 3, 0, 2]  # not done: last
    assert A.order_units(g, labels, "iou") == [3, 0, 1, 2]  # unlabelled: last
    assert A.order_units(g, labels, "label") == [3, 1, 0, 2]  # "~" after every label
    assert A.order_units(g, labels, "unit", contains=" STRIP ") == [0, 3]
    assert A.order_units(g, labels, contains="none") == []
    with pytest.raises(ValueError, match="unknown order"):
        A.order_units(g, labels, "size")


def test_grid_view_draws_the_kept_units_in_order_with_a_caption() -> None:
    g = _grid([0.5, 2.0, 1.0], [True, True, True])
    labels = {0: ("dotted", 0.3), 2: ("dots", 0.1)}
    v = A.grid_view(g, labels, sort="iou", contains="dot", cell=16)
    assert v.units == [0, 2] and (v.rows, v.cols) == (1, 2) and v.filled == 3
    assert (
        v.text
        == "l: 3/3 units done (labels: dissection); showing 2 sorted by iou, label contains 'dot'"
    )
    image, rows, cols = A.render_grid(g, [0, 2], labels={0: "dotted", 2: "dots"}, cell=16)
    assert torch.equal(v.image, image) and (rows, cols) == (1, 2)
    empty = A.grid_view(g, labels, contains="none", cell=16)
    assert empty.units == [] and "showing 0" in empty.text


def test_card_view_is_the_card_as_png_text_and_rows() -> None:
    card = A.UnitCard(
        "l", 2, torch.zeros(3, 8, 8), torch.zeros(2, 3, 8, 8), [], [], [],
        classes=[(4, "cat", 0.123456), (1, "dog", -0.5)],
    )  # fmt: skip
    view = A.card_view(card, cell=16)
    assert set(view) == {
        "am", "patches", "projections", "probe", "text", "classes", "removal_text", "removal"
    }  # fmt: skip
    assert view["removal"] == [] and view["removal_text"] == "removal: not measured"
    assert view["am"][:4] == b"\x89PNG" and view["patches"][:4] == b"\x89PNG"
    assert view["probe"] == b""  # not dissected
    assert view["text"] == card.text() and view["classes"] == [["cat", 0.1235], ["dog", -0.5]]
