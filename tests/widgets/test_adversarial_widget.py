"""The Adversarial widget without a browser: validation, one run end to end, restarts, reuse of
the attack, uploads, cancellation during the unit synthesis, NaN errors, export."""

from __future__ import annotations

import io
import json
import threading

import pytest
import torch
import traitlets
from PIL import Image

from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets.adversarial import L2_MAX, Adversarial
from tests.conftest import make_tiny
from tests.helpers import FakeView, check_nan_then_recovery


def small(handle, **kw):
    args = dict(
        image="cat", size=32, steps=4, am_steps=4, am_size=32, n_units=3, layer="conv2", seed=0
    )
    args.update(kw)
    return Adversarial(handle, **args)


@pytest.fixture
def widget(tiny_handle):
    w = small(tiny_handle)
    yield w
    w.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


def png_bytes(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_validation_and_unknown_arguments(widget, tiny_handle) -> None:
    with pytest.raises(traitlets.TraitError, match="pixel units"):
        widget.epsilon = -0.1
    with pytest.raises(traitlets.TraitError, match="between 0"):
        widget.epsilon = float("nan")
    with pytest.raises(traitlets.TraitError, match="valid 0..4"):
        widget.target = 5
    with pytest.raises(traitlets.TraitError, match="nearest valid names"):
        widget.layer = "conv3"
    with pytest.raises(traitlets.TraitError, match="channels"):
        widget.layer = "conv1"  # 8 channels
        widget.n_units = 9
    with pytest.raises(traitlets.TraitError, match="unknown image"):
        widget.sample = "dog"
    with pytest.raises(TypeError, match="unknown argument"):
        Adversarial(tiny_handle, epsilonn=0.1)
    with pytest.raises(TypeError, match="unknown argument"):
        Adversarial(tiny_handle, predictions=[])  # a result, not a setting
    with pytest.raises(KeyError, match="packaged photos: cat"):
        Adversarial(tiny_handle, image="dog")
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\].*/ 255"):
        Adversarial(tiny_handle, image=torch.full((3, 8, 8), 2.0))
    assert widget.target == -1 and widget.class_options[0] == ["untargeted", -1]
    assert widget.original and png_size(widget.original) == (32, 32)  # shown before any run
    assert widget.image == widget.original  # static picture before the first run


def test_one_run_end_to_end(widget, tmp_path) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and not widget.running
    assert "done" in widget.status
    r = widget.result
    assert r is not None
    clean = widget.clean_pixels().cpu()
    assert float((r.adversarial - clean).abs().max()) <= widget.epsilon  # exactly
    for trait in ("original", "perturbation", "adversarial"):
        assert png_size(getattr(widget, trait)) == (32, 32)
    assert widget.predictions and all(len(row) == 3 for row in widget.predictions)
    assert all(0 <= row[1] <= 1 and 0 <= row[2] <= 1 for row in widget.predictions)
    top_clean = max(widget.predictions, key=lambda row: row[1])
    assert top_clean[0].startswith(r.clean_top[0][0]["name"])
    assert widget.clean_label.startswith(r.clean_top[0][0]["name"])
    assert "4/255" in widget.details and "pgd-linf" in widget.details
    assert [row["unit"] for row in widget.unit_rows] == [u["unit"] for u in r.units[0]]
    assert len(widget.unit_rows) == 3
    assert png_size(widget.units_image) == (2 + 3 * 34, 2 + 34)  # 3 units of 32 px, one row
    for img in ("clean", "adversarial"):
        for cls in ("original", "new"):
            assert png_size(getattr(widget, f"attribution_{img}_{cls}")) == (32, 32)
    assert widget.attribution_clean_original != widget.attribution_adversarial_new
    assert png_size(widget.image)[1] > 3 * 96  # report: images, maps, units
    # a click on the second unit picture selects that unit (the table highlights it)
    units = [row["unit"] for row in widget.unit_rows]
    panel = next(i for i, p in enumerate(widget.panels) if p.get("trait") == "units_image")
    assert widget.panels[panel]["grid"] == [1, 3]
    click = {"type": "click", "panel": panel, "trait": "units_image", "x": 0.5, "y": 0.5}
    widget._on_front_msg(widget, click, [])  # no cell named (an old front end): nothing selected
    assert widget.selected_unit == -1
    widget._on_front_msg(widget, {**click, "row": 0, "col": 2}, [])
    assert widget.selected_unit == units[2]
    widget._on_front_msg(widget, {**click, "row": 0, "col": 1}, [])
    assert widget.selected_unit == units[1]
    assert len(widget.history) == 4  # the attack objective per step (AM steps have no loss)

    rec = widget.record()
    json.dumps(rec)
    assert rec["settings"]["method"] == "pgd-linf" and rec["settings"]["epsilon"] == 4 / 255
    assert "predictions" not in rec["settings"] and "details" not in rec["settings"]
    res = rec["result"]
    assert res["linf"] <= 4 / 255 and res["units_synthesized"] is True
    assert res["attribution"]["method"] in ("grad_cam", "saliency (fallback: plain gradient)")
    paths = widget.export(tmp_path / "attack")
    assert png_size(paths["png"].read_bytes()) == png_size(widget.image)
    assert json.loads(paths["json"].read_text())["result"]["new_class"] == res["new_class"]
    bundle = widget._repr_mimebundle_()
    assert "image/png" in bundle
    assert active_hook_count(widget.handle.model) == 0
    assert all(p.requires_grad for p in widget.handle.model.parameters())


def test_moving_epsilon_restarts_and_updates_the_prediction(widget) -> None:
    view = FakeView(widget)  # 'ready' starts the first run (auto_run)
    assert widget.wait(timeout=120) and widget.run_id == 1
    before = [row[2] for row in widget.predictions]
    widget.epsilon = 16 / 255  # as the slider does: the run restarts by itself
    assert widget.wait(timeout=120)
    assert widget.run_id == 2 and widget.error == ""
    after = [row[2] for row in widget.predictions]
    assert after != before
    assert widget.record()["result"]["epsilon"] == 16 / 255
    assert widget.result.linf[0] <= 16 / 255
    assert "16/255" in widget.details
    assert view.messages == []  # every picture travels as a bytes trait, no frame stream


def test_slider_storm_ends_with_the_final_epsilon(widget) -> None:
    FakeView(widget)
    for i in range(60):
        widget.epsilon = (i % 16) / 255
        if i % 7 == 0:
            widget.target = i % 5
    widget.target = -1
    widget.epsilon = 7 / 255
    assert widget.wait(timeout=180)
    assert widget.error == "" and "7/255" in widget.details
    assert widget.record()["result"]["epsilon"] == 7 / 255
    assert widget.record()["result"]["target"] is None
    assert widget.result.linf[0] <= 7 / 255
    assert active_hook_count(widget.handle.model) == 0


def test_analysis_only_changes_reuse_the_attack(widget) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    adv = widget.result.adversarial.clone()
    widget.attribution = "saliency"
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.record()["result"]["attack_reused"] is True
    assert widget.record()["result"]["units_reused"] is True  # same units, images cached
    assert torch.equal(widget.result.adversarial, adv)
    widget.seed = 1  # changes the random start: a new attack
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.record()["result"]["attack_reused"] is False


def test_method_switch_sets_the_epsilon_scale(widget) -> None:
    widget.epsilon = 6 / 255
    widget.method = "pgd-l2"
    assert widget.epsilon == 1.0 and widget.epsilon_max == L2_MAX
    spec = next(c for c in widget.controls if c["trait"] == "epsilon")
    assert spec["step"] == 0.05 and "L2" in spec["label"]
    widget.epsilon = 0.5
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and widget.result.l2[0] <= 0.5
    widget.method = "fgsm"
    assert widget.epsilon == 6 / 255  # the L-inf value is remembered
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and len(widget.history) == 1  # FGSM: one step
    assert widget.result.linf[0] <= 6 / 255


def test_targeted_attack_reaches_the_target(tiny_handle) -> None:
    w = small(tiny_handle, epsilon=0.5, steps=20, show_units=False)
    try:
        w.run()
        assert w.wait(timeout=120)
        clean_top = w.result.original_class[0]
        w.target = (clean_top + 1) % 5
        w.run()
        assert w.wait(timeout=120)
        assert w.error == ""
        assert w.result.new_class == [w.target] and w.result.success == [True]
        assert w.adversarial_label.startswith(f"class {w.target} ")
        assert "reached the target" in w.details
        assert w.units_image == b""  # unit synthesis switched off
    finally:
        w.close()


def test_units_grid_follows_the_number_of_units(widget) -> None:
    def grid() -> list[int]:
        return next(p["grid"] for p in widget.panels if p.get("trait") == "units_image")

    assert grid() == [1, 3]
    widget.n_units = 7
    assert grid() == [3, 3]
    widget.run()
    assert widget.wait(timeout=120)
    assert png_size(widget.units_image) == (2 + 3 * 34, 2 + 3 * 34)
    assert len(widget.unit_rows) == 7


def test_upload_and_bad_upload(widget) -> None:
    widget.upload_name = "red.png"
    widget.upload = png_bytes()
    assert widget.sample == "upload" and ["your image: red.png", "upload"] in widget.sample_options
    px = widget.clean_pixels()
    assert px.shape == (1, 3, 32, 32) and float(px[0, 0].mean()) > 0.7  # red
    widget.run()
    assert widget.wait(timeout=120) and widget.error == ""
    widget.upload_name = "notes.txt"
    widget.upload = b"not an image"
    assert "could not read" in widget.error and "PNG or JPEG" in widget.error
    assert widget.sample == "upload"  # the previous image is kept
    widget.sample = "cat"
    widget.run()
    assert widget.wait(timeout=120) and widget.error == ""


def test_image_argument_variants(tiny_handle, tmp_path) -> None:
    path = tmp_path / "green.png"
    path.write_bytes(png_bytes(color=(20, 220, 20)))
    for image in (Image.open(path), str(path), torch.rand(3, 20, 20)):
        w = small(tiny_handle, image=image, show_units=False)
        try:
            assert w.sample == "custom" and w.clean_pixels().shape == (1, 3, 32, 32)
            w.run()
            assert w.wait(timeout=120) and w.error == ""
        finally:
            w.close()


def test_stop_during_unit_synthesis_leaves_the_widget_usable(widget) -> None:
    widget.am_steps = 4000
    widget.run()
    while widget.step < widget.steps + 1 and not widget.error:  # inside the AM phase
        threading.Event().wait(0.01)
    assert widget.predictions  # the attack's results are out before the units
    widget.stop()
    assert widget.wait(timeout=60)
    assert "stopped" in widget.status and widget.error == ""
    assert active_hook_count(widget.handle.model) == 0
    assert all(p.requires_grad for p in widget.handle.model.parameters())
    widget.am_steps = 3
    widget.run()
    assert widget.wait(timeout=120)
    assert widget.error == "" and widget.units_image


def test_nan_model_shows_an_error_and_stays_usable() -> None:
    net = make_tiny()
    from cnnvis_widgets import load_model

    h = load_model(net, device="cpu", input_size=32)
    w = small(h, show_units=False)
    try:
        w.target = 1
        check_nan_then_recovery(w, net, net.fc.weight, "NonFiniteLossError", "NaN")
        assert w.result is not None
    finally:
        w.close()


@pytest.mark.slow
def test_default_model_widget_changes_the_prediction(lite0) -> None:
    w = Adversarial(lite0, image="coffee", size=128, steps=3, am_steps=4, am_size=48, n_units=3)
    try:
        w.run()
        assert w.wait(timeout=300)
        assert w.error == ""
        assert w.clean_label.startswith("espresso")
        assert w.result.success == [True] and not w.adversarial_label.startswith("espresso")
        assert w.result.linf[0] <= 4 / 255
        assert len(w.unit_rows) == 3 and w.units_image
    finally:
        w.close()


def test_grey_model_and_guided_backprop() -> None:
    from cnnvis_widgets import load_model

    h = load_model(make_tiny(in_channels=1), device="cpu", input_size=32, mean=(0.5,), std=(0.25,))
    w = small(h, image="camera", n_units=2, attribution="guided_backprop")
    try:
        w.run()
        assert w.wait(timeout=120)
        assert w.error == "" and w.result.clean.shape == (1, 1, 32, 32)
        assert "guided_backprop" in w.details and w.units_image
        assert png_size(w.attribution_adversarial_new) == (32, 32)
    finally:
        w.close()


def test_status_counts_the_attack_steps_the_slider_shows(tiny_handle) -> None:
    """The Steps slider said 10 while the status said 58 steps: the status counted the unit
    pictures' activation-maximization steps too. Each phase is now named with its own count."""
    w = small(tiny_handle, steps=3, am_steps=5)
    seen: list[str] = []
    w.observe(lambda c: seen.append(c["new"]), names=["status"])
    try:
        w.run()
        assert w.wait(timeout=120) and w.error == ""
        assert "3 attack steps" in w.status and "5 steps of unit pictures" in w.status
        assert "8 steps" not in w.status
        assert not [s for s in seen if "/8" in s], seen  # progress: x/3, then x/5
        assert any("attack step 1/3" in s for s in seen), seen
        w.n_units = 2  # attack reused: it says so and keeps the slider's count
        assert w.wait(timeout=120)
        w.run()
        assert w.wait(timeout=120) and "attack reused (3 steps)" in w.status
    finally:
        w.close()


def test_epsilon_reads_as_a_fraction_of_255_under_linf(widget) -> None:
    spec = next(c for c in widget.controls if c["trait"] == "epsilon")
    assert spec["format"] == "fraction255"
    widget.method = "pgd-l2"
    spec = next(c for c in widget.controls if c["trait"] == "epsilon")
    assert "format" not in spec  # L2 epsilons are not grey levels
