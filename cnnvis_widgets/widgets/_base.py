"""The base class of every widget, :class:`CnnvisWidget`, assembled from one module per idea.

A subclass declares each setting once, with :func:`setting` (the trait with its range and help,
its control in the front end and whether a change restarts the run or is read live by the
running algorithm), fills in :meth:`CnnvisWidget._initial_traits` and implements
:meth:`CnnvisWidget._steps`, a generator of core ``Step`` s. The rest comes from:

* :mod:`._settings`: ``setting()``, ``seed_setting()``, ``BoundedInt``/``BoundedFloat``, the
  ``button()`` s of ``_buttons`` and ``_downloads``, and what is derived from the declarations
  (controls, live and restart sets, ``record()``'s settings, the one check of unknown keyword
  arguments);
* :mod:`._running`: the worker thread, ``run()``/``stop()``/``wait()``/``close()``, restarts;
* :mod:`._frames`: frames streamed to the views, the ``image`` and ``history`` traits;
* :mod:`._frontend`: the messages of the views (``ready``/``goodbye``...), refused values,
  thread-safe ``hold_sync``, downloads (a ``_downloads`` button sends ``export_bytes``);
* :mod:`._files`: uploads, ``save()``'s file names and pictures.

Here: the model (``get_handle``), construction, the subclass hooks, ``save()``, ``record()``
and an ``image/png`` in ``_repr_mimebundle_`` for static exports. See ``js/PROTOCOL.md`` for the
messages and traits the front end relies on.
"""

from __future__ import annotations

import base64
import json
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anywidget
import torch
import traitlets as t

from ..core.blocks.optimize import Step
from ..models import ModelHandle, load_model
from ._files import export_paths, image_path, upload_trait, write_image
from ._frames import FrameStreaming
from ._frontend import FrontEnd
from ._running import Running
from ._settings import BoundedFloat, BoundedInt, DeclaredSettings, button, seed_setting, setting

# names that modules, tests and notebooks import from here and that now live next door (the
# frame pacing reads its constants in _frames: a test that changes one patches it there)
from ._files import IMAGE_FORMATS as IMAGE_FORMATS  # isort: skip
from ._files import _bytes_from_json as _bytes_from_json  # isort: skip
from ._frames import ACK_TIMEOUT as ACK_TIMEOUT  # isort: skip
from ._frames import FRAME_INTERVAL as FRAME_INTERVAL  # isort: skip
from ._frames import MAX_IN_FLIGHT as MAX_IN_FLIGHT  # isort: skip
from ._frames import SENDER_IDLE as SENDER_IDLE  # isort: skip
from ._frames import TRAIT_INTERVAL as TRAIT_INTERVAL  # isort: skip
from ._settings import _Bounded as _Bounded  # isort: skip

__all__ = [
    "BoundedFloat",
    "BoundedInt",
    "CnnvisWidget",
    "button",
    "export_paths",
    "get_handle",
    "image_path",
    "seed_setting",
    "setting",
    "upload_trait",
    "write_image",
]

_STATIC = Path(__file__).parent / "static"
_MISSING_BUNDLE_ESM = """
export default { render({ el }) {
  const p = document.createElement("pre");
  p.textContent = "cnnvis_widgets: the front-end bundle is not built. Run `make js` " +
    "(or `npm --prefix js run build`) in the source tree, then restart the kernel.";
  el.appendChild(p);
} };
"""

#: status of a widget before its first run
STATUS_AUTO = "starting: the first run begins when the widget is shown"
STATUS_MANUAL = "ready: press Run"
STATUS_CHANGED = "settings changed: press Run"

#: what a widget's ``model`` argument may be
ModelArg = str | torch.nn.Module | ModelHandle
DEFAULT_MODEL = "efficientnet_lite0"

_HANDLES: dict[tuple, ModelHandle] = {}
_HANDLES_LOCK = threading.Lock()


def get_handle(model: str | torch.nn.Module | ModelHandle, **kwargs: Any) -> ModelHandle:
    """A :class:`ModelHandle` for ``model``; named models are loaded once and shared by widgets."""
    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, str):
        key = (model, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        with _HANDLES_LOCK:
            if key not in _HANDLES:
                _HANDLES[key] = load_model(model, **kwargs)
            return _HANDLES[key]
    return load_model(model, **kwargs)


def _bundle(name: str) -> str:
    """The text of a bundle file. Text, not a ``Path``: anywidget turns a path into a class-wide
    ``FileContents`` whose change signal keeps a reference to every widget ever made (a closed,
    dropped widget could never be collected)."""
    path = _STATIC / name
    if path.exists():
        return path.read_text(encoding="utf-8")
    return _MISSING_BUNDLE_ESM if name.endswith(".js") else ""


def _versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {
        "cnnvis_widgets": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "anywidget": getattr(anywidget, "__version__", "?"),
        "python": platform.python_version(),
    }


class CnnvisWidget(DeclaredSettings, Running, FrameStreaming, FrontEnd, anywidget.AnyWidget):
    """Base of every cnnvis widget: the shared control surface.

    Methods ``run()``, ``stop()``, ``wait(timeout=None)``, ``save(path)``, ``record()``; traits
    ``running``, ``step``, ``error``; attribute ``handle`` (the :class:`ModelHandle`). The
    mixins (settings, running, frames, front end) are private: their methods are this class's.
    """

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    title = t.Unicode("", help="Heading shown at the top of the widget.").tag(sync=True)
    controls = t.List(t.Dict(), help="Control specs drawn by the front end.").tag(sync=True)
    panels = t.List(t.Dict(), help="Panel specs drawn by the front end.").tag(sync=True)
    running = t.Bool(False, help="True while a run is in progress (read-only).").tag(sync=True)
    step = t.Int(0, help="Index of the last completed step of the current run.").tag(sync=True)
    total_steps = t.Int(0, help="Number of steps of the current run.").tag(sync=True)
    error = t.Unicode("", help="Empty when fine, else what went wrong.").tag(sync=True)
    status = t.Unicode(STATUS_AUTO, help="One line of status text.").tag(sync=True)
    image = t.Bytes(b"", help="PNG of the latest image (low rate, for late views).").tag(sync=True)
    history = t.List(t.Float(), help="Loss per step of the current run.").tag(sync=True)
    run_id = t.Int(0, help="Increments each time a run starts.").tag(sync=True)
    auto_run = t.Bool(
        True, help="Run when the view appears and restart when a setting that needs it changes."
    ).tag(sync=True)

    def __init__(
        self, model: ModelArg | None = None, *, device: str | None = None, **kwargs: Any
    ) -> None:
        """Open ``model`` (a name, an ``nn.Module`` or a :class:`ModelHandle`; the default
        model when omitted) on ``device`` and set the settings given as keywords.

        A widget class fills in :meth:`_initial_traits` (the trait values it starts from, given
        the model) and :meth:`_ready` (observers and panels, once every setting is set); a
        subclass with its own ``__init__`` calls ``super().__init__(model, device=device, ...)``.
        """
        later: dict[str, Any] = {}
        opening = model is not None or not hasattr(self, "handle")
        if opening and type(self)._initial_traits is not CnnvisWidget._initial_traits:
            self._check_arguments(kwargs, settings_only=True)
            self.handle = get_handle(
                DEFAULT_MODEL if model is None else model, **({"device": device} if device else {})
            )
            later = dict(kwargs)
            kwargs = self._initial_traits(self.handle, later)  # pops what it used from later
        else:
            opening = False
        self._check_arguments(kwargs)
        self._init_running()
        self._init_frames()
        self._init_frontend()
        super().__init__(**kwargs)
        if self._declared:
            self.controls = self._control_specs()
        self._initial_status()
        self.observe(lambda change: self._initial_status(), names=["auto_run"])
        self.on_msg(self._on_front_msg)
        if self._restart_traits:
            self.observe(self._on_restart_trait, names=list(self._restart_traits))
        if self._live_traits:
            self.observe(self._on_live_trait, names=list(self._live_traits))
        if later:
            with self.hold_trait_notifications():
                for k, v in later.items():
                    setattr(self, k, v)
        if opening:
            self._ready()

    # ------------------------------------------------------------------ subclass interface
    def _initial_traits(self, handle: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The trait values the widget starts from for ``handle`` (title, options, the
        layer...); pop from ``kwargs`` the user's settings that are used here, the others are
        set afterwards, in the order given."""
        raise NotImplementedError  # pragma: no cover

    def _ready(self) -> None:
        """Called once every setting is set: observers between settings, ``panels``."""

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:  # pragma: no cover
        """Yield core steps for the current settings (subclasses)."""
        raise NotImplementedError

    def _describe(self) -> str:
        """Short description of what the current run computes, for the status line."""
        return ""

    def _before_run(self) -> None:
        """Called on the worker thread when a run starts, before anything else (decide here
        what the run computes; :meth:`_describe` is called next)."""

    def _on_step(self, step: Step) -> None:
        """Called on the worker thread after every step (keep it cheap)."""

    def _sync_extra(self, step: Step) -> None:
        """Called at a low rate (about twice a second) and at the end: update result traits."""

    def _on_click(self, content: dict) -> None:
        """A click on an image panel: ``content`` has ``panel`` (its index in ``panels``),
        ``trait`` and ``x``, ``y`` as fractions of the picture's width and height; on a panel
        declared with ``"grid": [rows, cols]`` also ``row`` and ``col``, the cell the front end
        outlined (read them with :meth:`_clicked_cell`)."""

    @staticmethod
    def _clicked_cell(content: dict, rows: int, cols: int) -> tuple[int, int] | None:
        """The ``(row, col)`` a grid-panel click names, or None when it names no cell of a
        ``rows`` x ``cols`` grid (a stale or hand-made message)."""
        r, c = content.get("row"), content.get("col")
        if type(r) is not int or type(c) is not int:
            return None
        if not (0 <= r < rows and 0 <= c < cols):
            return None
        return r, c

    def _on_action(self, name: str, content: dict) -> None:
        """A ``button`` control was pressed (its ``action`` name)."""

    def _on_live_trait(self, change: dict) -> None:
        """Forward a live setting to the running algorithm (subclasses)."""

    def _applies_at_once(self, name: str) -> bool:
        """True when a change of restart trait ``name`` is cheap now (e.g. computed from a cached
        pass): it then re-runs after a first run even with ``auto_run=False`` (subclasses)."""
        return False

    # ------------------------------------------------------------------ validation helpers
    def _layer_info(self, name: str) -> Any:
        """``handle.layer(name)`` for a trait validator: a ``TraitError`` listing the nearest
        valid names instead of a ``KeyError``."""
        try:
            return self.handle.layer(name)
        except KeyError as exc:
            raise t.TraitError(exc.args[0]) from None

    def _layer_list(self, names: list[str], trait: str, most: int, where: str) -> str:
        """``names`` (parsed from trait ``trait``) as ``"a, b"`` for a validator: a
        ``TraitError`` when there are none, more than ``most`` (``where``: "a chart") or one
        that is no layer (:meth:`_layer_info`)."""
        if not names:
            raise t.TraitError(f"{trait} is empty: give comma-separated layer names")
        if len(names) > most:
            raise t.TraitError(f"at most {most} layers in {where}, got {len(names)}")
        for n in names:
            self._layer_info(n)
        return ", ".join(names)

    def _unit_in_range(self, unit: int, layer: str) -> int:
        """``unit`` when it is a channel of ``layer``, else a ``TraitError`` naming the range."""
        n = self.handle.layer(layer).channels if layer else 1
        if not 0 <= int(unit) < n:
            raise t.TraitError(f"unit {unit} is out of range for layer {layer!r}: valid 0..{n - 1}")
        return int(unit)

    # ------------------------------------------------------------------ files and records
    def save(self, path: str | Path) -> Path:
        """Write the current image to ``path``; returns the path written.

        The format follows a known image suffix (``.png``, ``.jpg``, ``.pdf``, ...); any other
        name gets ``.png`` appended (``"_blocks.8_unit3"`` -> ``_blocks.8_unit3.png``). ``~`` is
        expanded.
        """
        if self._last_pixels is None:
            raise RuntimeError("nothing to save yet: run() the widget first")
        return write_image(self._last_pixels.float().clamp(0, 1), path)

    def record(self) -> dict[str, Any]:
        """A JSON-able dict of every setting, the seed, the model and library versions."""
        rec = {
            "widget": type(self).__name__,
            "model": self.handle.describe() if getattr(self, "handle", None) else None,
            "settings": self._settings(),
            "result": dict(self._last_record),
            "steps_done": len(self.history),
            "versions": _versions(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        json.dumps(rec)  # raises here, not in the user's file, if something is not JSON-able
        return rec

    def _repr_mimebundle_(self, **kwargs: Any):
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        if self.image:
            data["image/png"] = base64.b64encode(self.image).decode("ascii")
        return data

    # ------------------------------------------------------------------ observers
    def _initial_status(self) -> None:
        if (
            self.run_id == 0
            and not self._pending
            and self.status in ("", STATUS_AUTO, STATUS_MANUAL)
        ):
            self.status = STATUS_AUTO if self.auto_run else STATUS_MANUAL

    def _on_restart_trait(self, change: dict) -> None:
        if self._closed:
            return
        if self.running or self._pending or (self.auto_run and self._views > 0):
            self.run()
        elif self.run_id > 0:  # the shown result is of other settings now
            if self._views > 0 and self._applies_at_once(change["name"]):
                self.run()
            elif not self.error:
                self.status = STATUS_CHANGED
