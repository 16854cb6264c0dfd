"""What every widget inherits: refused front-end values, threads only while busy, view goodbyes,
file names of ``save()``, downloads, bounded numeric traits and the status before a first run."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import traitlets
from PIL import Image

from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.widgets import _base
from cnnvis_widgets.widgets.activation_max import ActivationMaximization
from tests.helpers import cnnvis_threads, until_no_threads


class Recorder:
    """Stands in for the comm: records custom messages and state sent to the front end."""

    def __init__(self, w) -> None:
        self.messages: list[tuple[dict, list]] = []
        self.states: list[list[str]] = []
        w.send = self.send  # type: ignore[method-assign]
        original = w.send_state

        def send_state(key=None):
            self.states.append([key] if isinstance(key, str) else list(key or []))
            return original(key=key)

        w.send_state = send_state  # type: ignore[method-assign]

    def send(self, content, buffers=None) -> None:
        self.messages.append((content, list(buffers or [])))


@pytest.fixture
def widget(tiny_handle):
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=6, size=32)
    yield w
    w.close()


# ------------------------------------------------------------------ refused values
def test_a_refused_front_end_value_is_reported_and_sent_back(widget) -> None:
    rec = Recorder(widget)
    widget.set_state({"seed": -5})  # what ipywidgets calls for the front end's update
    assert widget.seed == 0
    assert "Seed" in widget.error and "-5" in widget.error and "between 0" in widget.error
    assert ["seed"] in rec.states  # the control is given the kernel's value back
    assert widget.run_id == 0 and not widget._pending  # nothing else happened


def test_refusals_of_a_cross_check_and_of_a_wrong_type(widget) -> None:
    Recorder(widget)
    widget.grid = 4
    widget.set_state({"unit": 14})  # 14 + 4 units do not fit 16 channels
    assert widget.unit == 0 and "Unit = 14" in widget.error and "grid of 4" in widget.error
    widget.set_state({"layer": "conv9"})
    assert widget.layer == "conv2" and "conv9" in widget.error
    widget.set_state({"lr": "fast"})
    assert widget.lr == pytest.approx(0.05) and "Learning rate" in widget.error
    widget.set_state({"seed": 3})  # an accepted value clears the message
    assert widget.seed == 3 and widget.error == ""


def test_a_refused_value_through_the_comm_message_path(widget) -> None:
    rec = Recorder(widget)
    msg = {
        "content": {"data": {"method": "update", "state": {"seed": -5}, "buffer_paths": []}},
        "buffers": [],
    }
    widget._handle_msg(msg)
    assert widget.seed == 0 and "refused" in widget.error and ["seed"] in rec.states


# ------------------------------------------------------------------ threads and views
def test_idle_widgets_hold_no_thread_and_a_dropped_widget_is_collected(tiny_handle) -> None:
    assert until_no_threads() == []
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=6, size=32)
    assert cnnvis_threads() == []  # nothing before the first run
    w._on_front_msg(w, {"type": "ready"}, [])  # auto_run: a view starts a run
    w.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    assert w.wait(timeout=120) and w.error == ""
    assert until_no_threads() == []  # idle again: no worker, no sender
    w.seed = 1  # a restart with the view open
    assert w.wait(timeout=120)
    assert until_no_threads() == [] and active_hook_count(tiny_handle.model) == 0
    ref = weakref.ref(w)
    w.close()
    del w
    gc.collect()
    assert ref() is None and cnnvis_threads() == []


def test_goodbye_closes_a_view_and_restarts_stop_with_the_last_view(widget) -> None:
    Recorder(widget)
    widget.auto_run = False
    for _ in range(2):
        widget._on_front_msg(widget, {"type": "ready"}, [])
    assert widget._views == 2
    widget._on_front_msg(widget, {"type": "goodbye"}, [])
    assert widget._views == 1
    widget._on_front_msg(widget, {"type": "goodbye"}, [])
    widget._on_front_msg(widget, {"type": "goodbye"}, [])  # one too many: never negative
    assert widget._views == 0
    widget.auto_run = True
    widget.seed = 7  # no view open: no run
    assert widget.run_id == 0 and not widget._pending and cnnvis_threads() == []


def test_status_before_the_first_run_says_what_happens(tiny_handle) -> None:
    a = ActivationMaximization(tiny_handle, layer="conv2", steps=4, size=32)
    b = ActivationMaximization(tiny_handle, layer="conv2", steps=4, size=32, auto_run=False)
    try:
        assert a.status == _base.STATUS_AUTO and "shown" in a.status
        assert b.status == "ready: press Run"
    finally:
        a.close()
        b.close()


def test_a_change_after_a_manual_run_says_press_run(widget) -> None:
    widget.auto_run = False
    widget._on_front_msg(widget, {"type": "ready"}, [])
    widget.send = lambda content, buffers=None: None  # type: ignore[method-assign]
    widget.seed = 3  # before any run: nothing shown yet, nothing to say
    assert widget.status == "ready: press Run"
    widget.run()
    assert widget.wait(timeout=120)
    widget.seed = 4
    assert widget.status == "settings changed: press Run" and widget.run_id == 1


# ------------------------------------------------------------------ save, downloads
def test_save_keeps_dotted_names_and_expands_the_home_folder(widget, tmp_path, monkeypatch) -> None:
    widget.run()
    assert widget.wait(timeout=120)
    a = widget.save(tmp_path / "_blocks.8_unit3")
    b = widget.save(tmp_path / "_blocks.8_unit4")
    assert a.name == "_blocks.8_unit3.png" and b.name == "_blocks.8_unit4.png"
    assert a.is_file() and b.is_file()
    assert Image.open(widget.save(tmp_path / "x.JPG")).format == "JPEG"
    assert widget.save(tmp_path / "x.pdf").read_bytes().startswith(b"%PDF")
    assert widget.save(tmp_path / "x.png").name == "x.png"
    monkeypatch.setenv("HOME", str(tmp_path))
    home = widget.save("~/pictures/unit")
    assert home == tmp_path / "pictures" / "unit.png" and home.is_file()


def test_send_download_is_a_message_with_the_bytes(widget) -> None:
    rec = Recorder(widget)
    widget.send_download("a.csv", b"x,y\n1,2\n", "text/csv")
    content, buffers = rec.messages[-1]
    assert content == {"type": "download", "name": "a.csv", "mime": "text/csv"}
    assert buffers == [b"x,y\n1,2\n"]


# ------------------------------------------------------------------ bounded traits
def test_bounded_traits_name_their_range() -> None:
    class W(traitlets.HasTraits):
        n = _base.BoundedInt(3, 0, 64)
        x = _base.BoundedFloat(0.5, 0, 1)

    w = W()
    with pytest.raises(traitlets.TraitError, match="n must be between 0 and 64, got 65"):
        w.n = 65
    with pytest.raises(traitlets.TraitError, match="x must be between 0 and 1, got nan"):
        w.x = float("nan")
    with pytest.raises(traitlets.TraitError):
        w.n = True
    w.n, w.x = 4.0, 1
    assert (w.n, w.x) == (4, 1.0) and isinstance(w.n, int)


def test_export_paths_keep_dotted_names() -> None:
    png, js = _base.export_paths("out/_blocks.8_unit3", ".png", ".json")
    assert (png.name, js.name) == ("_blocks.8_unit3.png", "_blocks.8_unit3.json")
    png, js = _base.export_paths("out/cat.json", ".png", ".json")
    assert (png.name, js.name) == ("cat.png", "cat.json")
    assert not str(_base.export_paths("~/x", ".png")[0]).startswith("~")


def test_hold_sync_from_two_threads_loses_and_breaks_nothing(tiny_handle, monkeypatch) -> None:
    """The worker and the kernel's thread both batch trait updates (``hold_sync``); ipywidgets'
    own batching is not thread-safe ("Set changed size during iteration", lost updates)."""
    import sys

    import comm

    # a comm that sends: once another test imported ipykernel, new comms have no kernel and
    # ipywidgets would skip sending (and this test would check nothing)
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: comm.DummyComm(*a, **k))
    widget = ActivationMaximization(tiny_handle, layer="conv2", steps=6, size=32)
    assert getattr(widget.comm, "kernel", True) is not None

    sent: list[str] = []
    errors: list[BaseException] = []
    original = widget.send_state

    def send_state(key=None):
        keys = [key] if isinstance(key, str) else list(key or [])
        sent.extend(keys)
        return original(key=key)

    widget.send_state = send_state  # type: ignore[method-assign]

    def hammer(names: tuple[str, str], n: int) -> None:
        try:
            for i in range(n):
                with widget.hold_sync():
                    setattr(widget, names[0], i + 1)
                    setattr(widget, names[1], i + 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=hammer, args=(("step", "total_steps"), 10000)),
            threading.Thread(target=hammer, args=(("run_id", "seed"), 10000)),
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert {"step", "total_steps", "run_id", "seed"} <= set(sent)
    assert widget._states_to_send == set()  # nothing left unsent
    widget.close()


def test_a_fault_after_the_steps_is_shown_and_the_next_run_still_starts(widget) -> None:
    """The final picture is made after the run's steps (outside their error handling): a fault
    there killed the worker, and with threads started on demand no later run would start."""
    real = widget._frame_pixels
    calls = {"n": 0}

    def broken(step):
        calls["n"] += 1
        raise KeyError("layer 'conv1' was not dissected")

    widget._frame_pixels = broken  # type: ignore[method-assign]
    widget.run()
    assert widget.wait(timeout=120)
    assert "KeyError" in widget.error and not widget.running and calls["n"] >= 1
    widget._frame_pixels = real  # type: ignore[method-assign]
    widget._finish_run = lambda step, history: 1 / 0  # type: ignore[method-assign]
    widget.run()
    assert widget.wait(timeout=120)
    assert "ZeroDivisionError" in widget.error and not widget.running
    del widget._finish_run
    widget.run()
    assert widget.wait(timeout=120) and widget.error == "" and "done" in widget.status
    assert until_no_threads() == []


# ------------------------------------------------------------------ losses read at display time
def test_a_widget_run_reads_the_losses_in_batches_not_once_per_step(tiny_handle, monkeypatch):
    """The widget keeps each step's loss as the loop stores it and reads it only to show it:
    with no frame or trait update due mid-run, a 48-step run makes the loop's own reads (every
    16 steps) and no more, and the history still has every loss."""
    from cnnvis_widgets.core.blocks import readback
    from cnnvis_widgets.widgets import _frames

    reads: list[int] = []
    real = readback.host_read
    monkeypatch.setattr(readback, "host_read", lambda t: reads.append(t.numel()) or real(t))
    monkeypatch.setattr(_frames, "TRAIT_INTERVAL", 1e9)
    monkeypatch.setattr(_frames, "FRAME_INTERVAL", 1e9)
    w = ActivationMaximization(tiny_handle, layer="conv2", steps=48, size=32, auto_run=False)
    try:
        w.run()
        assert w.wait(timeout=120) and not w.error
        assert len(w.history) == 48 and all(isinstance(v, float) for v in w.history)
        assert sum(reads) == 48 and len(reads) <= 4, reads
    finally:
        w.close()
