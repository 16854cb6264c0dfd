"""The Atlas widget without a browser: network -> layer -> unit by clicks, sort/filter, links."""

from __future__ import annotations

import pytest
import traitlets

from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets.atlas import Atlas

# small settings: a whole run on the tiny model takes seconds
SMALL = dict(steps=4, size=32, batch=8, probe_images=16, inversion_steps=4, n_images=16, variants=2)


@pytest.fixture
def atlas(tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    w = Atlas(tiny_handle, **SMALL)
    yield w
    w.close()


def _run(w: Atlas) -> None:
    w.run()
    assert w.wait(timeout=120)
    assert w.error == "", w.error


def test_arguments_are_validated(tiny_handle):
    with pytest.raises(TypeError, match="unknown argument"):
        Atlas(tiny_handle, stepz=3)
    with pytest.raises(KeyError, match="nearest valid names"):
        Atlas(tiny_handle, layers=["conv9"])
    w = Atlas(tiny_handle)
    try:
        with pytest.raises(traitlets.TraitError, match="valid 0..15"):
            w.show_unit(16, layer="conv2")
        with pytest.raises(traitlets.TraitError, match="between"):
            w.steps = 0
    finally:
        w.close()


def test_click_through_network_layer_unit(atlas):
    assert atlas.view == "network" and atlas.layers == ["relu1", "relu2"]
    assert atlas.panels[0]["kind"] == "table"
    _run(atlas)
    assert [r["layer"] for r in atlas.network_rows] == ["relu1", "relu2"]
    assert atlas.strips[:4] == b"\x89PNG"
    # a row click sets pick_layer: the layer view opens and fills
    atlas.pick_layer = "relu2"
    assert atlas.view == "layer" and atlas.layer == "relu2" and atlas.pick_layer == ""
    assert atlas.panels[0]["trait"] == "grid_image"
    _run(atlas)
    assert atlas.filled == 16 and len(atlas.grid_units) == 16
    assert atlas.grid_shape == [4, 4] and atlas.panels[0]["grid"] == [4, 4]
    assert "16/16 units done" in atlas.layer_text and "dissection" in atlas.layer_text
    # a click on the cell of row 1, column 2 opens that unit's card
    click = {"type": "click", "trait": "grid_image", "x": 0.6, "y": 0.3}
    atlas._on_front_msg(atlas, dict(click, row=4, col=0), [])  # no such cell: nothing opens
    assert atlas.view == "layer"
    atlas._on_front_msg(atlas, dict(click, row=1, col=2), [])
    unit = atlas.grid_units[1 * 4 + 2]
    assert atlas.view == "unit" and atlas.unit == unit
    _run(atlas)
    assert atlas.card is not None and atlas.card.unit == unit
    assert f"relu2 unit {unit}" in atlas.card_text
    for b in (atlas.card_am, atlas.card_patches, atlas.card_projections, atlas.card_probe):
        assert b[:4] == b"\x89PNG"
    assert len(atlas.card_classes) == 5
    # beside it, what removing the unit does (issue 16)
    assert atlas.card_removal_text.startswith("removing it (set to zero): accuracy")
    assert atlas.card_removal == [[n, round(-d, 4)] for n, d in atlas.card.removal.hurts]
    assert any(p.get("trait") == "card_removal" for p in atlas.panels)
    # back to the network view by the toggle; a strip click opens relu1
    atlas.view = "network"
    atlas._on_front_msg(atlas, {"type": "click", "trait": "strips", "row": 0, "col": 0}, [])
    assert atlas.view == "layer" and atlas.layer == "relu1"
    assert atlas.record()["settings"]["view"] == "layer"
    assert active_hook_count(atlas.handle.model) == 0


def test_sort_and_filter_reorder_without_a_run(atlas):
    _run(atlas)  # network view: the dissection gives labels
    atlas.show_layer("relu2")
    _run(atlas)
    runs = atlas.run_id
    atlas.sort = "activation"
    act = atlas._grid.activation
    vals = [float(act[u]) for u in atlas.grid_units]
    assert vals == sorted(vals, reverse=True)
    atlas.sort = "iou"
    ious = {r["unit"]: r["iou"] for r in atlas._summary.dissection.units("relu2")}
    got = [ious[u] for u in atlas.grid_units]
    assert got == sorted(got, reverse=True)
    concept = atlas._summary.dissection.units("relu2")[0]["concept"]
    atlas.filter = concept
    assert 0 < len(atlas.grid_units) <= 16
    assert all(
        concept in r["concept"]
        for r in atlas._summary.dissection.units("relu2")
        if r["unit"] in atlas.grid_units
    )
    atlas.filter = "no such concept"
    assert atlas.grid_units == []
    assert atlas.run_id == runs  # display only


def test_stop_leaves_the_widget_usable_and_the_links(atlas):
    atlas.steps = 100_000
    atlas.show_layer("relu2")
    atlas.run()
    import time

    t0 = time.monotonic()
    while atlas.step < 2 and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    atlas.stop()
    assert atlas.wait(timeout=60)
    assert "stopped" in atlas.status and atlas.error == ""
    assert active_hook_count(atlas.handle.model) == 0
    atlas.steps = 4
    _run(atlas)
    assert atlas.filled == 16
    atlas.show_unit(3)
    am = atlas.open_unit("am")
    dn = atlas.open_unit("deconvnet")
    try:
        assert am.handle is atlas.handle and (am.layer, am.unit, am.steps) == ("relu2", 3, 4)
        assert dn.handle is atlas.handle and (dn.layer, dn.unit) == ("relu2", 3)
        with pytest.raises(ValueError, match="unknown method"):
            atlas.open_unit("nope")
    finally:
        am.close()
        dn.close()


def test_open_buttons_show_the_method_widget_below_the_atlas(atlas):
    atlas.show_layer("relu2")
    atlas.show_unit(5)
    buttons = [c for c in atlas.controls if c.get("kind") == "button"]
    assert {b["action"] for b in buttons} == {"open_am", "open_deconvnet", "open_dissection"}
    assert all(b["visible_when"] == {"trait": "view", "in": ["unit"]} for b in buttons)
    # displaying the atlas shows the atlas with the output area below it
    bundle = atlas._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert view == atlas.app().model_id and atlas.app().children == (atlas, atlas.output)
    atlas._on_front_msg(atlas, {"type": "action", "action": "open_am"}, [])
    try:
        am = atlas.opened[-1]
        assert type(am).__name__ == "ActivationMaximization"
        assert (am.layer, am.unit) == ("relu2", 5) and am.handle is atlas.handle
        (out,) = atlas.output.outputs
        shown = out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        assert shown == am.model_id and "opened" in atlas.status
        atlas._on_front_msg(atlas, {"type": "action", "action": "open_nothing"}, [])
        assert len(atlas.opened) == 1  # unknown actions are ignored
    finally:
        for w in atlas.opened:
            w.close()


def test_manual_atlas_follows_clicks_and_says_press_run_for_settings(
    tiny_handle, tmp_path, monkeypatch
):
    """auto_run=False (the tour): after the first run, a click opens the layer it names (its
    grid is computed), while an AM setting says "settings changed: press Run"."""
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    w = Atlas(tiny_handle, **SMALL, auto_run=False)
    try:
        w.send = lambda content, buffers=None: None  # type: ignore[method-assign]
        w._on_front_msg(w, {"type": "ready"}, [])
        assert w.run_id == 0 and w.status == "ready: press Run"
        _run(w)
        w.pick_layer = "relu2"  # a click on a network-view row
        assert w.wait(timeout=120) and w.error == ""
        assert w.view == "layer" and w.record()["result"]["view"] == "layer"
        assert w.grid_image[:4] == b"\x89PNG" and w.filled == 16
        runs = w.run_id
        w.steps = 8
        assert w.run_id == runs and w.status == "settings changed: press Run"
    finally:
        w.close()
