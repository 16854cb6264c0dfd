"""Reliability under real use for the method widgets (issue 8): DeconvNet, Attribution,
Inversion, Dissection and Adversarial.

The same properties as ``test_reliability.py`` (which covers ActivationMaximization), each
parametrized over the five widgets with a tiny model and their smallest settings:

* storms of random trait changes (hypothesis) end with exactly one run for the final settings,
  at most one worker thread, no hooks, RSS back near its start;
* stop mid-run, KeyboardInterrupt in the worker, close while running: the widget stays usable
  (or its threads end), hooks are removed;
* two widgets sharing one model concurrently give the results of separate runs;
* many consecutive runs without growth in threads, hooks or RSS;
* bad pictures through the API and through the upload trait (as the browser sends them, a
  memoryview) give a clear error in ``error`` and the widget stays usable;
* settings out of range are refused on the trait, nothing changes.
"""

from __future__ import annotations

import gc
import io
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import pytest
import torch
import traitlets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnvis_widgets import load_model
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.data import sample_images
from cnnvis_widgets.widgets import deconvnet as D
from cnnvis_widgets.widgets._base import upload_trait
from cnnvis_widgets.widgets.adversarial import Adversarial
from cnnvis_widgets.widgets.attribution import Attribution
from cnnvis_widgets.widgets.deconvnet import DeconvNet
from cnnvis_widgets.widgets.dissection import Dissection
from cnnvis_widgets.widgets.inversion import Inversion
from tests.conftest import make_tiny
from tests.helpers import FakeView, until_no_threads

RSS_MARGIN = 64 * 2**20  # bytes
SAMPLES = sorted(sample_images())


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def handle(seed: int = 0):
    return load_model(make_tiny(seed), device="cpu", input_size=32)


def worker_threads(cls: type) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"cnnvis-{cls.__name__}"]


def png_bytes(img: Image.Image, **save: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


# ---------------------------------------------------------------------------- the five widgets
@dataclass
class Spec:
    cls: type
    make: Callable[..., Any]  # (handle, **overrides) -> widget, smallest settings
    storm: list[tuple[str, Any]]  # (trait, strategy) pairs moved by the storm
    vary: Callable[[Any, int], None]  # changes the i-th run's settings (long use)
    shared: tuple[dict, dict]  # two different settings for the shared-model test
    bad_settings: list[tuple[str, Any]]
    uploads: bool = False
    extra: dict = field(default_factory=dict)


def _deconv(h, **kw):
    args = dict(layer="conv2", unit=3, n_images=12)
    return DeconvNet(h, **{**args, **kw})


def _attr(h, **kw):
    return Attribution(h, **{"image": "cat", **kw})


def _inv(h, **kw):
    return Inversion(h, **{**dict(layer="conv2", steps=6, size=32), **kw})


def _dis(h, **kw):
    args = dict(layers=["conv1", "relu2"], n_images=16, image_size=32, batch_size=8)
    return Dissection(h, **{**args, **kw})


def _adv(h, **kw):
    args = dict(image="cat", size=32, steps=2, layer="conv2", n_units=2, seed=0)
    args.update(show_units=False, am_steps=2, am_size=32)
    return Adversarial(h, **{**args, **kw})


def _set(name: str) -> Callable[[Any, int], None]:
    return lambda w, i: setattr(w, name, i)


SPECS: dict[str, Spec] = {
    "DeconvNet": Spec(
        DeconvNet,
        _deconv,
        [
            ("unit", st.integers(0, 16)),
            ("layer", st.sampled_from(["conv1", "conv2", "relu2"])),
            ("method", st.sampled_from(["deconvnet", "guided_backprop"])),
            ("n_images", st.sampled_from([9, 12])),
            ("opacity", st.floats(0.0, 1.0)),
        ],
        lambda w, i: setattr(w, "unit", i % 16),
        (dict(unit=1), dict(unit=5, method="guided_backprop")),
        [("unit", 16), ("unit", -1), ("n_images", 0), ("opacity", 1.5), ("opacity", float("nan"))]
        + [("layer", "conv9"), ("layer", "fc"), ("method", "lrp"), ("selected", 9)],
    ),
    "Attribution": Spec(
        Attribution,
        _attr,
        [
            ("target", st.integers(-1, 5)),
            ("cam_layer", st.sampled_from(["conv1", "conv2", "relu2"])),
            ("image_name", st.sampled_from(SAMPLES)),
            ("method", st.sampled_from(["saliency", "deconvnet", "guided_backprop", "grad_cam"])),
            ("opacity", st.floats(0.0, 1.0)),
        ],
        lambda w, i: setattr(w, "target", i % 5),
        (dict(target=1), dict(target=3, image_name="dog" if "dog" in SAMPLES else SAMPLES[-1])),
        [("target", 5), ("target", -2), ("opacity", -0.1), ("opacity", float("inf"))]
        + [("cam_layer", "conv9"), ("image_name", "kitten"), ("method", "lime")],
        uploads=True,
    ),
    "Inversion": Spec(
        Inversion,
        _inv,
        [
            ("layer", st.sampled_from(["conv1", "conv2", "relu2"])),
            ("seed", st.integers(0, 1000)),
            ("sample", st.sampled_from(SAMPLES)),
            ("size", st.sampled_from([16, 24, 32])),
            ("lr", st.floats(0.001, 0.1)),
            ("tv_weight", st.floats(0.0, 5.0)),
        ],
        _set("seed"),
        (dict(seed=1), dict(seed=2, layer="conv1")),
        [("steps", 0), ("size", 4), ("lr", -1.0), ("lr", float("nan")), ("seed", -1)]
        + [("tv_weight", float("inf")), ("jitter", -1), ("layer", "conv9"), ("sample", "x")]
        + [("strip_layers", ""), ("train_batch", 0)],
        uploads=True,
    ),
    "Dissection": Spec(
        Dissection,
        _dis,
        [
            ("seed", st.integers(0, 1000)),
            ("n_images", st.sampled_from([8, 16])),
            ("batch_size", st.sampled_from([4, 8])),
            ("quantile", st.floats(0.001, 0.2)),
            ("layers", st.sampled_from([["conv1"], ["relu2"], ["conv1", "relu2"]])),
            ("iou_threshold", st.floats(0.0, 1.0)),
        ],
        _set("seed"),
        (dict(seed=1), dict(seed=2, layers=["conv1"])),
        [("n_images", 0), ("batch_size", 0), ("quantile", 0.0), ("quantile", 0.6), ("seed", -1)]
        + [("iou_threshold", float("nan")), ("layers", ["conv9"]), ("layers", ["fc"])]
        + [("view_model", "compare"), ("unit", 10**6)],
    ),
    "Adversarial": Spec(
        Adversarial,
        _adv,
        [
            ("epsilon", st.floats(0.0, 16 / 255)),
            ("method", st.sampled_from(["fgsm", "pgd-linf", "pgd-l2"])),
            ("seed", st.integers(0, 1000)),
            ("target", st.integers(-1, 5)),
            ("layer", st.sampled_from(["conv1", "conv2"])),
            ("sample", st.sampled_from(SAMPLES)),
            ("steps", st.integers(1, 3)),
        ],
        _set("seed"),
        (dict(seed=1), dict(seed=2, target=2)),
        [("epsilon", -0.1), ("epsilon", float("nan")), ("steps", 0), ("size", 4), ("seed", -1)]
        + [("n_units", 0), ("target", 5), ("step_size", -1.0), ("layer", "conv9")]
        + [("sample", "kitten"), ("method", "cw")],
        uploads=True,
    ),
}
NAMES = list(SPECS)
UPLOADERS = [n for n in NAMES if SPECS[n].uploads]


def run_log(w) -> list[dict]:
    """Wrap ``w._steps``: each run appends the storm settings it started with (on the worker)."""
    log: list[dict] = []
    real = w._steps
    names = [n for n, _ in SPECS[type(w).__name__].storm]

    def logged(stop_event):
        log.append({n: repr(getattr(w, n)) for n in names})
        yield from real(stop_event)

    w._steps = logged
    return log


def paused_at_step(w, at: int = 1):
    """Wrap ``w._steps``: the run waits after step ``at`` until it is stopped (``reached`` is set
    then), so stop/close/interrupt land mid-run whatever the widget's speed."""
    reached = threading.Event()
    real = w._steps

    def paused(stop_event):
        for i, step in enumerate(real(stop_event)):
            yield step
            if i + 1 == at:
                reached.set()
                stop_event.wait(60)

    w._steps = paused
    return reached, real


@pytest.fixture
def w(name):
    """The widget ``name`` (the test's parameter) on a fresh tiny model, closed afterwards."""
    widget = SPECS[name].make(handle())
    yield widget
    widget.close()


# ---------------------------------------------------------------------------- slider storms
@pytest.fixture(scope="module", params=NAMES)
def storm_widget(request):
    """A widget with a view after one warm-up storm; ``w.baseline`` is the RSS then (the
    allocator's first growth is not a leak)."""
    spec = SPECS[request.param]
    D._MEMO.clear()
    w = spec.make(handle())
    FakeView(w)
    rng = random.Random(0)
    assert w.wait(timeout=120)
    values = {
        "unit": lambda: rng.randrange(16),
        "seed": lambda: rng.randrange(1000),
        "target": lambda: rng.randrange(-1, 5),
        "layer": lambda: rng.choice(["conv1", "conv2"]),
    }
    for _ in range(300):
        for name, _strategy in spec.storm:
            if name in values:
                try:
                    setattr(w, name, values[name]())
                except traitlets.TraitError:
                    pass
    assert w.wait(timeout=120)
    w.baseline = rss()
    w.run_starts = run_log(w)
    yield w
    w.close()
    assert w._worker is None or not w._worker.is_alive()


def storm_changes(draw_spec: Spec):
    return st.lists(st.one_of(*[st.tuples(st.just(n), s) for n, s in draw_spec.storm]))


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_slider_storm_ends_with_one_run_for_the_final_settings(storm_widget, data) -> None:
    w = storm_widget
    spec = SPECS[type(w).__name__]
    changes = data.draw(
        st.lists(
            st.one_of(*[st.tuples(st.just(n), s) for n, s in spec.storm]),
            min_size=1000,
            max_size=1000,
        )
    )
    for name, value in changes:
        try:
            setattr(w, name, value)  # a restart trait restarts through the observer (a view)
        except traitlets.TraitError:
            pass  # e.g. unit 16 of conv1 (8 channels): refused, nothing lost
        assert len(worker_threads(spec.cls)) <= 1
    final = {n: repr(getattr(w, n)) for n, _ in spec.storm}
    restart = [n for n in final if n in w._restart_traits]
    assert w.wait(timeout=300)
    # the storm's own restarts end with a run for the final values of the restart traits
    assert {n: w.run_starts[-1][n] for n in restart} == {n: final[n] for n in restart}
    assert w.error == "", w.error
    w.run()  # a last restart, as if the last move was a restart trait
    started = len(w.run_starts)
    assert w.wait(timeout=300)
    runs = w.run_id
    assert not w.wait(timeout=0.5) or w.run_id == runs  # nothing else starts afterwards
    assert len(w.run_starts) == started + 1, "not exactly one run after the last change"
    assert w.run_starts[-1] == final, "the last run did not use the final settings"
    assert w.error == "", w.error
    assert "done" in w.status and not w.running
    assert len(worker_threads(spec.cls)) <= 1
    assert active_hook_count(w.handle.model) == 0
    assert all(p.requires_grad for p in w.handle.model.parameters())
    assert rss() - w.baseline < RSS_MARGIN


# ---------------------------------------------------------------------------- interrupts
@pytest.mark.parametrize("name", NAMES)
def test_stop_mid_run_keeps_the_widget_usable(name, w) -> None:
    reached, real = paused_at_step(w)
    w.run()
    assert reached.wait(60) and w.running
    w.stop()
    assert w.wait(timeout=60)
    assert not w.running and w.error == "" and "stopped" in w.status
    assert active_hook_count(w.handle.model) == 0
    assert all(p.requires_grad for p in w.handle.model.parameters())
    w._steps = real
    w.run()
    assert w.wait(timeout=120) and w.error == "" and "done" in w.status


@pytest.mark.parametrize("name", NAMES)
def test_keyboard_interrupt_in_the_worker_leaves_the_widget_usable(name, w) -> None:
    real = w._steps

    def interrupted(stop_event):
        gen = real(stop_event)
        yield next(gen)
        gen.close()  # like an interrupt between two steps: the core's finally blocks run
        raise KeyboardInterrupt

    def interrupted_inside(stop_event):
        for i, step in enumerate(real(stop_event)):
            if i == 1:
                raise KeyboardInterrupt  # while the core generator is suspended mid-run
            yield step

    for wrapper in (interrupted, interrupted_inside):
        w._steps = wrapper
        w.run()
        assert w.wait(timeout=60)
        if w.run_id and "KeyboardInterrupt" not in w.error:
            # a widget whose run has a single step never reaches the second
            assert wrapper is interrupted_inside and w.error == ""
        assert not w.running
        assert active_hook_count(w.handle.model) == 0
        assert all(p.requires_grad for p in w.handle.model.parameters())
    w._steps = real
    w.run()
    assert w.wait(timeout=120) and w.error == "" and "done" in w.status
    worker = w._worker  # idle again: the worker ends (a new run starts a new one)
    if worker is not None:
        worker.join(30)
        assert not worker.is_alive()


@pytest.mark.parametrize("name", NAMES)
def test_close_while_running_ends_the_threads(name, w) -> None:
    FakeView(w)
    reached, _ = paused_at_step(w)
    w.run()
    assert reached.wait(60)
    threads = [th for th in (w._worker, w._sender) if th is not None]  # the sender: if frames
    assert w._worker is not None
    w.close()
    for th in threads:
        th.join(30)
    assert not any(th.is_alive() for th in threads)
    assert w._worker is None and w._sender is None
    assert active_hook_count(w.handle.model) == 0
    assert all(p.requires_grad for p in w.handle.model.parameters())
    with pytest.raises(RuntimeError, match="closed"):
        w.run()


@pytest.mark.parametrize("name", NAMES)
def test_two_widgets_sharing_one_model_give_the_results_of_separate_runs(name) -> None:
    spec = SPECS[name]
    alone = []
    for kw in spec.shared:
        D._MEMO.clear()
        w = spec.make(handle(), **kw)
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
        alone.append(w._last_pixels.clone())
        w.close()
    D._MEMO.clear()
    h = handle()
    a, b = (spec.make(h, **kw) for kw in spec.shared)
    try:
        for _ in range(2):  # twice: the second time both may reuse caches concurrently
            a.run()
            b.run()
            assert a.wait(timeout=120) and b.wait(timeout=120)
            for w, ref in zip((a, b), alone, strict=True):
                assert w.error == "", w.error
                assert w._last_pixels.shape == ref.shape
                assert torch.allclose(w._last_pixels.float(), ref.float(), atol=2 / 255)
        assert active_hook_count(h.model) == 0
        assert all(p.requires_grad for p in h.model.parameters())
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------- long use
@pytest.mark.parametrize("name", NAMES)
def test_two_hundred_consecutive_runs_without_growth(name, w) -> None:
    spec = SPECS[name]
    FakeView(w)
    w.run()
    assert w.wait(timeout=120)
    for i in range(5):  # warm-up: caches of every setting the loop visits
        spec.vary(w, i)
        w.run()
        assert w.wait(timeout=120)
    until_no_threads()  # the warm-up's threads end first
    threads, mem = threading.active_count(), rss()
    first = w.run_id
    for i in range(200):
        spec.vary(w, i % 5)
        w.run()
        assert w.wait(timeout=60)
        assert w.error == "", w.error
    assert w.run_id >= first + 200
    assert until_no_threads() == [] and threading.active_count() <= threads
    assert active_hook_count(w.handle.model) == 0
    assert rss() - mem < RSS_MARGIN


# ---------------------------------------------------------------------------- bad input
def _pictures() -> dict[str, tuple[bytes, bool]]:
    """name -> (file bytes, usable)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    g16 = (rng.integers(0, 65535, (40, 50), dtype=np.uint16)).astype(np.uint16)
    return {
        "grey.png": (png_bytes(Image.fromarray(rgb).convert("L")), True),
        "rgba.png": (png_bytes(Image.fromarray(rgb).convert("RGBA")), True),
        "16bit.png": (png_bytes(Image.fromarray(g16)), True),
        "palette.png": (png_bytes(Image.fromarray(rgb).convert("P")), True),
        "large.jpg": (_jpeg(Image.new("RGB", (3000, 2200), (10, 200, 30))), True),
        "tiny.png": (png_bytes(Image.fromarray(rgb[:4, :4])), False),
        "bomb.png": (png_bytes(Image.new("1", (12_000, 9_000))), False),
        "notes.txt": (b"these are my notes, not a picture\n" * 10, False),
        "truncated.png": (png_bytes(Image.fromarray(rgb))[:60], False),
        "empty.png": (b"\x89PNG\r\n\x1a\n", False),
    }


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pictures():
    return _pictures()


def _sample_trait(w) -> str:
    return "image_name" if isinstance(w, Attribution) else "sample"


@pytest.mark.parametrize("name", UPLOADERS)
def test_uploads_of_every_kind_through_the_browser_trait(name, w, pictures) -> None:
    # the trait is the shared one: it takes the memoryview the browser sends
    assert w.trait_metadata("upload", "from_json") is upload_trait().metadata["from_json"]
    for fname, (data, usable) in pictures.items():
        w.set_state({"upload_name": fname})
        w.set_state({"upload": memoryview(data)})
        if usable:
            assert w.error == "", f"{fname}: {w.error}"
            assert getattr(w, _sample_trait(w)) == "upload"
            w.run()
            assert w.wait(timeout=120) and w.error == "", f"{fname}: {w.error}"
            assert "done" in w.status
            assert w.original, fname
        else:
            assert w.error, f"{fname} was accepted"
            assert fname in w.error and ("image" in w.error or "pixels" in w.error)
            assert "Traceback" not in w.error
            w.run()  # still usable: the last good picture is used
            assert w.wait(timeout=120) and w.error == "", f"after {fname}: {w.error}"
    assert active_hook_count(w.handle.model) == 0


@pytest.mark.parametrize("name", UPLOADERS)
def test_bad_pictures_through_the_api_have_clear_errors(name, pictures, tmp_path) -> None:
    spec = SPECS[name]
    h = handle()
    for fname, (data, usable) in pictures.items():
        path = tmp_path / fname
        path.write_bytes(data)
        if usable:
            w = spec.make(h, image=str(path))
            w.run()
            assert w.wait(timeout=120) and w.error == "", f"{fname}: {w.error}"
            w.close()
        else:
            with pytest.raises((ValueError, KeyError)) as info:
                spec.make(h, image=str(path))
            assert any(s in str(info.value) for s in ("image", "pixels")), str(info.value)
    for bad in (
        torch.full((3, 32, 32), float("nan")),
        torch.full((1, 3, 32, 32), float("inf")),
        torch.rand(2, 3, 32, 32),
        torch.rand(5, 32, 32),
    ):
        with pytest.raises((ValueError, TypeError)) as info:
            spec.make(h, image=bad)
        msg = str(info.value)
        assert any(s in msg for s in ("NaN", "infinite", "shape", "(C, H, W)", "tensor")), msg
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    w = spec.make(h, image=grey)  # PIL grayscale: converted, not an error
    w.run()
    assert w.wait(timeout=120) and w.error == ""
    w.close()
    assert active_hook_count(h.model) == 0


def test_deconvnet_folder_with_odd_and_bad_files(tmp_path, pictures) -> None:
    """A folder of user pictures: odd modes are read, non-images and tiny ones skipped or
    named in a clear error; the widget stays usable."""
    for fname, (data, _usable) in pictures.items():
        if fname != "bomb.png":
            (tmp_path / fname).write_bytes(data)
    rng = np.random.default_rng(1)
    for i in range(9):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / f"{i:02d}.png"
        )
    D._MEMO.clear()
    w = _deconv(handle(), dataset="folder", folder=str(tmp_path), n_images=100)
    try:
        w.run()
        assert w.wait(timeout=120)
        if w.error:
            assert "Traceback" not in w.error and str(tmp_path.name) in w.error, w.error
        else:
            assert "done" in w.status
        w.dataset = "augmented"
        w.run()
        assert w.wait(timeout=120) and w.error == ""
    finally:
        w.close()


@pytest.mark.parametrize("name", NAMES)
def test_settings_out_of_range_are_refused_on_the_trait(name, w) -> None:
    spec = SPECS[name]
    before = {n: getattr(w, n) for n, _ in spec.bad_settings}
    for trait, value in spec.bad_settings:
        with pytest.raises(traitlets.TraitError) as info:
            setattr(w, trait, value)
        assert str(info.value), trait
    assert {n: getattr(w, n) for n, _ in spec.bad_settings} == before
    w.run()
    assert w.wait(timeout=120) and w.error == ""


@pytest.mark.parametrize("name", NAMES)
def test_nan_model_stops_the_run_with_a_message_and_the_widget_recovers(name) -> None:
    net = make_tiny()
    h = load_model(net, device="cpu", input_size=32)
    w = SPECS[name].make(h)
    try:
        with torch.no_grad():
            saved = net.conv1.weight.clone()
            net.conv1.weight.fill_(float("nan"))
        D._MEMO.clear()
        w.run()
        assert w.wait(timeout=60)
        assert "NaN" in w.error or "nan" in w.error or "finite" in w.error, w.error
        assert not w.running and active_hook_count(net) == 0
        with torch.no_grad():
            net.conv1.weight.copy_(saved)
        D._MEMO.clear()
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
    finally:
        w.close()


LAYER_TRAIT = {
    "DeconvNet": ("layer", "conv3"),
    "Attribution": ("cam_layer", "conv3"),
    "Inversion": ("layer", "conv3"),
    "Dissection": ("layers", ["conv3"]),
    "Adversarial": ("layer", "conv3"),
}


@pytest.mark.parametrize("name", NAMES)
def test_unknown_layer_lists_the_nearest_names(name, w) -> None:
    trait, value = LAYER_TRAIT[name]
    with pytest.raises(traitlets.TraitError, match=r"conv[12]"):
        setattr(w, trait, value)


@pytest.mark.parametrize("name", NAMES)
def test_models_without_conv_layers_and_missing_devices_are_refused(name) -> None:
    from torch import nn

    flat = load_model(
        nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), device="cpu", input_size=8
    )
    with pytest.raises(ValueError, match=r"spatial|conv"):
        SPECS[name].cls(flat)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            SPECS[name].cls(make_tiny(), device="cuda")
