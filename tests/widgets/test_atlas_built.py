"""The Atlas widget opening a built atlas (``Atlas(model, atlas=DIR)``): shown at once, only
what the atlas lacks is computed."""

from __future__ import annotations

import json
import shutil

import pytest

from cnnvis_widgets import load_model
from cnnvis_widgets.core.atlas.build import BuildSettings, build_atlas
from cnnvis_widgets.widgets.atlas import Atlas
from tests.conftest import make_tiny
from tests.helpers import ForwardCounter

RECIPE = dict(steps=4, size=32, batch=8, n_images=10, shard=5, probe_images=8,
              inversion_steps=3, inversion_size=32)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_handle():
    # module-scoped: the atlas is built once (the same model object as the widgets open)
    return load_model(make_tiny(), device="cpu", input_size=32)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_handle):
    out = tmp_path_factory.mktemp("atlas") / "built"
    build_atlas(tiny_handle, ["relu1", "relu2"], None, out, BuildSettings(**RECIPE))
    return out


def _run(w: Atlas) -> None:
    w.run()
    assert w.wait(timeout=120)
    assert w.error == "", w.error


def test_a_built_atlas_opens_without_computing(built, tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))  # an empty results cache
    w = Atlas(tiny_handle, atlas=built)
    counter = ForwardCounter(tiny_handle.model)
    try:
        assert w.layers == ["relu1", "relu2"] and (w.steps, w.size, w.batch) == (4, 32, 8)
        _run(w)  # the network view
        assert [r["layer"] for r in w.network_rows] == ["relu1", "relu2"]
        assert w.network_rows[1]["interpretable"] is not None and w.strips[:4] == b"\x89PNG"
        w.show_layer("relu2")
        _run(w)
        assert w.filled == 16 and "16/16 units done (labels: dissection)" in w.layer_text
        w.show_unit(3)
        _run(w)
        rec = json.loads((built / "layers/001-relu2/layer.json").read_text())["units"][3]
        assert rec["top"][0]["source"] in w.card_text and w.card_patches[:4] == b"\x89PNG"
        assert rec["best_concept"]["label"] in w.card_text
        assert [c[0] for c in w.card_classes] == [c[0] for c in rec["classes"]]
        assert counter.n == 0  # nothing was computed: every view came from the atlas
    finally:
        counter.remove()
        w.close()


def test_units_missing_from_the_atlas_are_computed(built, tiny_handle, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    partial = tmp_path / "partial"
    shutil.copytree(built, partial)
    path = partial / "layers/001-relu2/layer.json"
    rec = json.loads(path.read_text())
    for u in (14, 15):
        rec["units"][u]["am"] = None
        (partial / "layers/001-relu2/am" / f"{u}.png").unlink()
    path.write_text(json.dumps(rec))
    w = Atlas(tiny_handle, atlas=partial, view="layer", layer="relu2")
    counter = ForwardCounter(tiny_handle.model)
    try:
        _run(w)
        assert w.filled == 16
        assert counter.n == 4 + 1  # one batch of the 2 missing units: 4 steps + 1 evaluation
    finally:
        counter.remove()
        w.close()


def test_an_atlas_of_another_model_is_refused(built, tmp_path):
    other = load_model(make_tiny(seed=3), device="cpu", input_size=32)
    with pytest.raises(ValueError, match="built from another model"):
        Atlas(other, atlas=built)
    with pytest.raises(FileNotFoundError, match="not a built atlas"):
        Atlas(other, atlas=tmp_path)
