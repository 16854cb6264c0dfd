"""The base class of every widget: worker thread, cancellation, restarts, frame streaming.

A subclass declares each setting once, with :func:`setting` (the trait with its range and help,
its control in the front end and whether a change restarts the run or is read live by the
running algorithm), and implements :meth:`CnnvisWidget._steps`, a generator of core ``Step`` s.
The controls list, the live and restart sets, ``record()``'s settings and the check of unknown
keyword arguments are derived from the declarations here. Everything else lives here too:

* a worker thread per widget while there is work: started by a run request, ended when no run
  is pending (an idle widget holds no thread); a request while a run goes on cancels it between
  two steps and starts over with the newest settings, so a storm of slider moves ends with
  exactly one run for the final settings;
* frames: at most ~20 per second and at most 4 unacknowledged by the browser; the worker only
  copies a small tensor to the CPU, a sender thread (alive only while frames come) encodes
  (JPEG) and sends it as a binary custom message. The optimization never waits for the browser;
* views are counted by their ``ready`` and ``goodbye`` messages (frames go only to open views);
* a value the front end sets and the kernel refuses is reported in ``error`` and the control is
  sent the kernel's value back;
* the ``image`` (PNG) and ``history`` traits at a low rate and at the end (late views, exports);
* ``error`` shows what went wrong and the widget stays usable;
* ``save()``, ``record()``, and an ``image/png`` in ``_repr_mimebundle_`` for static exports.

See ``js/PROTOCOL.md`` for the messages and traits the front end relies on.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
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
from ..core.imaging import encode, make_grid
from ..models import ModelHandle, load_model

__all__ = [
    "BoundedFloat",
    "BoundedInt",
    "CnnvisWidget",
    "export_paths",
    "get_handle",
    "image_path",
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

FRAME_INTERVAL = 0.05  # seconds between frames (about 20 per second at most)
MAX_IN_FLIGHT = 4  # frames sent but not yet acknowledged by a view
ACK_TIMEOUT = 2.0  # an unacknowledged frame older than this is forgotten (closed view)
TRAIT_INTERVAL = 0.5  # seconds between updates of the `image` and `history` traits
SENDER_IDLE = 0.5  # seconds without a frame after which the sender thread ends

#: file suffixes ``save()`` writes (anything else, e.g. ``"_blocks.8_unit3"``, gets ``.png`` added)
IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".pdf": "PDF",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
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


def _bytes_from_json(js: Any, widget: Any = None) -> bytes:
    """Bytes from what a host delivers for a bytes trait set in the browser: a memoryview
    (Jupyter), ``bytes`` (marimo), a base64 string or data URL, a list of ints, a JSON-ed typed
    array (``{"0": 137, ...}``) or None. Anything else is an empty picture, never an exception
    in the host's message handler."""
    if js is None:
        return b""
    if isinstance(js, (bytes, bytearray, memoryview)):
        return bytes(js)
    if isinstance(js, str):
        data = js.split(",", 1)[1] if js.startswith("data:") and "," in js else js
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            return b""
    try:
        if isinstance(js, dict):
            js = [js[str(i)] for i in range(len(js))]
        if isinstance(js, (list, tuple)):
            return bytes(js)
    except (KeyError, TypeError, ValueError):
        pass
    return b""


def upload_trait(help: str = "Bytes of a file chosen in the browser.") -> t.Bytes:
    """A bytes trait the front end's ``upload`` control can set (the browser sends a memoryview
    in Jupyter, ``bytes`` in marimo; a plain ``Bytes`` trait rejects the first, ipywidgets'
    ``bytes_serialization`` the second)."""
    return t.Bytes(b"", help=help).tag(sync=True, from_json=_bytes_from_json)


def image_path(path: str | Path) -> tuple[Path, str]:
    """``(path, PIL format)`` for :meth:`CnnvisWidget.save`: ``~`` expanded; a known image
    suffix (:data:`IMAGE_FORMATS`) is kept, anything else gets ``.png`` appended (so that
    ``"_blocks.8_unit3"`` becomes ``_blocks.8_unit3.png``, not ``_blocks.png``)."""
    path = Path(path).expanduser()
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        path = path.with_name(path.name + ".png")
        fmt = "PNG"
    return path, fmt


def export_paths(path: str | Path, *suffixes: str) -> list[Path]:
    """``<path><suffix>`` for each suffix, for exports of several files: ``~`` expanded, a
    trailing ``.png``/``.json`` dropped, other dots kept (``"out/_blocks.8"`` ->
    ``out/_blocks.8.png``, ``out/_blocks.8.json``)."""
    stem = Path(path).expanduser()
    if stem.suffix.lower() in (".png", ".json"):
        stem = stem.with_suffix("")
    return [stem.with_name(stem.name + s) for s in suffixes]


def write_image(picture: torch.Tensor | Any, path: str | Path) -> Path:
    """Write a pixel tensor ``(C, H, W)`` in [0, 1] or a PIL image to ``path`` (format from the
    suffix, see :func:`image_path`); creates the folder; returns the path written."""
    from ..core.imaging import to_pil

    path, fmt = image_path(path)
    img = to_pil(picture) if isinstance(picture, torch.Tensor) else picture
    if fmt in ("JPEG", "PDF") and img.mode != "RGB":
        img = img.convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


class _Bounded:
    """Mixin of :class:`BoundedInt` / :class:`BoundedFloat`: the range lives in the trait
    declaration, the validator names it, and the front end's control takes it from there."""

    low: float
    high: float

    def _check(self, obj: Any, value: Any) -> Any:
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (finite and self.low <= value <= self.high):  # NaN fails every comparison
            name = self.name  # type: ignore[attr-defined]
            raise t.TraitError(
                f"{name} must be between {self.low:g} and {self.high:g}, got {value}"
            )
        return value


class BoundedInt(_Bounded, t.Int):
    """An ``Int`` trait with a range: ``BoundedInt(12, 0, 64, help=...)``."""

    def __init__(self, default_value: int, low: int, high: int, **kwargs: Any) -> None:
        self.low, self.high = low, high
        super().__init__(default_value, **kwargs)

    def validate(self, obj: Any, value: Any) -> int:
        if hasattr(value, "item") and not isinstance(value, (int, float)):
            value = value.item()  # numpy / torch scalars
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(obj, value)
        return self._check(obj, int(value))


class BoundedFloat(_Bounded, t.Float):
    """A ``Float`` trait with a range (NaN and infinities refused): ``BoundedFloat(0.1, 0, 1)``."""

    def __init__(self, default_value: float, low: float, high: float, **kwargs: Any) -> None:
        self.low, self.high = float(low), float(high)
        super().__init__(default_value, **kwargs)

    def validate(self, obj: Any, value: Any) -> float:
        if hasattr(value, "item") and not isinstance(value, (int, float)):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(obj, value)
        return self._check(obj, float(value))


_ORDER = itertools.count()  # declaration order of settings: the order of the controls


def setting(
    trait: t.TraitType,
    kind: str | None = None,
    label: str | None = None,
    group: str | None = None,
    *,
    live: bool = False,
    restart: bool = False,
    sync: bool = True,
    record: bool = True,
    **control: Any,
) -> t.TraitType:
    """Declare a widget setting once: the trait (its range and help), its control and its effect.

    Parameters
    ----------
    trait : TraitType
        The trait, with its default, range (:class:`BoundedInt`, :class:`BoundedFloat`) and help.
    kind : str, optional
        The front end's control: ``slider``, ``int``, ``float``, ``select``, ``search``,
        ``toggle``, ``checkbox``, ``text``, ``upload``, ``button``... None: a setting without a
        control (still synced, recorded and checked).
    label, group : str, optional
        The control's label and the group (section) it is drawn in.
    live : bool
        The running algorithm reads the value at every step (no restart).
    restart : bool
        A change cancels the current run and starts a new one.
    sync : bool
        False for a setting the browser must not set (a path on the kernel's machine, rule 8).
    record : bool
        False leaves it out of ``record()["settings"]`` (a widget may add it when it counts).
    **control
        Further keys of the control spec, as the front end reads them: ``step``, ``log``,
        ``format`` (e.g. ``"fraction255"``), ``collapsed``, ``visible_when``, ``options``,
        ``options_trait``, ``max_trait``, ``help``... A numeric control's ``min``/``max`` come
        from the trait's range.

    Returns
    -------
    TraitType
        The trait, tagged ``sync=True`` with the declaration in its metadata.

    Examples
    --------
    >>> steps = setting(BoundedInt(512, 1, 100_000, help="Number of steps."), "slider",
    ...                 "Iterations", "Run", live=True, log=True, step=1)
    >>> steps.metadata["control"]["label"], steps.metadata["live"]
    ('Iterations', True)
    """
    spec: dict[str, Any] | None = None
    if kind is not None:
        spec = {"kind": kind, "label": label}
        if group is not None:
            spec["group"] = group
        spec.update(control)
    meta = {"setting": next(_ORDER), "control": spec, "live": live, "restart": restart}
    return trait.tag(**meta, record=record, **({"sync": True} if sync else {}))


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


class CnnvisWidget(anywidget.AnyWidget):
    """Base of every cnnvis widget: the shared control surface.

    Methods ``run()``, ``stop()``, ``wait(timeout=None)``, ``save(path)``, ``record()``; traits
    ``running``, ``step``, ``error``; attribute ``handle`` (the :class:`ModelHandle`).
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

    #: traits whose change cancels the current run and starts a new one
    _restart_traits: tuple[str, ...] = ()
    #: traits read by the running algorithm at every step
    _live_traits: tuple[str, ...] = ()
    #: what the per-step value is called in the status line
    _loss_label: str = "loss"
    #: traits that hold results or read-only facts: left out of ``record()["settings"]``
    _result_traits: tuple[str, ...] = ()

    #: names of the settings declared with :func:`setting`, in declaration order (derived)
    _declared: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, t.TraitType] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, t.TraitType) and "setting" in value.metadata:
                    found[name] = value
        cls._declared = tuple(sorted(found, key=lambda n: found[n].metadata["setting"]))
        for attr, key in (("_restart_traits", "restart"), ("_live_traits", "live")):
            names = tuple(n for n in cls._declared if found[n].metadata.get(key))
            if names:
                setattr(cls, attr, names)

    @classmethod
    def _check_arguments(cls, kwargs: dict[str, Any], *, settings_only: bool = False) -> None:
        """A ``TypeError`` naming the keyword arguments that are no trait (and the valid ones).

        ``settings_only`` (a widget checking its user's arguments): a trait of the widget that
        is no declared :func:`setting` (a result or a read-only fact) is refused too."""
        traits = cls.class_traits()
        if settings_only and cls._declared:
            own = set(traits) - set(CnnvisWidget.class_traits())
            traits = {n: v for n, v in traits.items() if n not in own or n in cls._declared}
        unknown = [k for k in kwargs if k not in traits and not k.startswith("_")]
        if unknown:
            valid = sorted(
                n for n, v in traits.items() if v.metadata.get("sync") or n in cls._declared
            )
            valid = [n for n in valid if not n.startswith("_")]
            raise TypeError(
                f"{cls.__name__}() got unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(valid)}"
            )

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
        self._cond = threading.Condition(threading.RLock())
        self._sync_guard = threading.Lock()  # ipywidgets' batching of updates, across threads
        self._pending = False
        self._busy = False
        self._closed = False
        self._stop_event = threading.Event()
        self._worker: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._last_worker: threading.Thread | None = None  # the last one started (may be done)
        self._last_sender: threading.Thread | None = None
        self._frame_slot: dict[str, Any] | None = None
        self._frame_ready = threading.Event()
        self._in_flight: dict[int, float] = {}
        self._seq = 0
        self._views = 0
        self._last_pixels: torch.Tensor | None = None
        self._completed_runs = 0
        self._finished_run_id = -1
        self._last_record: dict[str, Any] = {}
        self._refusal = ""  # the error text of the last refused front-end value
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

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        """The picture of a step, pixel space ``(C, H, W)``: a grid for a batch (None: no
        picture at this step, e.g. a dataset pass)."""
        img = step.image
        if img is None:
            return None
        return img[0] if img.shape[0] == 1 else make_grid(img.clamp(0, 1))

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

    def _control_specs(self) -> list[dict]:
        """The controls, in declaration order, from the :func:`setting` declarations (each
        passed through :meth:`_control_spec` for what only the instance knows)."""
        out = []
        traits = self.traits()
        for name in self._declared:
            control = traits[name].metadata.get("control")
            if control is not None:
                spec = self._control_spec({"trait": name, **control})
                if spec is not None:
                    out.append(spec)
        return out

    def _update_controls(self) -> None:
        """Send the controls again (after what :meth:`_control_spec` reads has changed)."""
        self.controls = self._control_specs()

    def _control_spec(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Hook: a declared control with what only the instance knows (e.g. options from the
        model); None leaves the control out."""
        return spec

    def _settings(self) -> dict[str, Any]:
        """Every setting trait, for :meth:`record` (the declared ones, when declared)."""
        if self._declared:
            traits = self.traits()
            names = sorted(n for n in self._declared if traits[n].metadata.get("record", True))
            values = {n: getattr(self, n) for n in names}
            return {n: v for n, v in values.items() if isinstance(v, (int, float, str, bool))}
        skip = set(CnnvisWidget.class_trait_names()) | set(self._result_traits)
        skip |= {"layer_options", "class_options"}
        out = {}
        for name in self.trait_names(sync=True):
            if name.startswith("_") or name in skip:
                continue
            value = getattr(self, name)
            if isinstance(value, (int, float, str, bool)):
                out[name] = value
        return out

    def _on_live_trait(self, change: dict) -> None:
        """Forward a live setting to the running algorithm (subclasses)."""

    def _applies_at_once(self, name: str) -> bool:
        """True when a change of restart trait ``name`` is cheap now (e.g. computed from a cached
        pass): it then re-runs after a first run even with ``auto_run=False`` (subclasses)."""
        return False

    # ------------------------------------------------------------------ validation helpers
    @t.validate("controls")
    def _controls_from_traits(self, proposal: dict) -> list[dict]:
        """A numeric control's ``min``/``max`` are its trait's declared range (one source)."""
        out = []
        for spec in proposal["value"]:
            trait = self.traits().get(spec.get("trait", "")) if isinstance(spec, dict) else None
            if isinstance(trait, _Bounded) and spec.get("kind") in ("slider", "int", "float"):
                spec = dict(spec, min=trait.low, max=trait.high)
                if spec.get("log") and spec["min"] <= 0:
                    raise ValueError(f"log slider {spec['trait']!r} needs a range above 0")
            out.append(spec)
        return out

    def _layer_info(self, name: str) -> Any:
        """``handle.layer(name)`` for a trait validator: a ``TraitError`` listing the nearest
        valid names instead of a ``KeyError``."""
        try:
            return self.handle.layer(name)
        except KeyError as exc:
            raise t.TraitError(exc.args[0]) from None

    def _unit_in_range(self, unit: int, layer: str) -> int:
        """``unit`` when it is a channel of ``layer``, else a ``TraitError`` naming the range."""
        n = self.handle.layer(layer).channels if layer else 1
        if not 0 <= int(unit) < n:
            raise t.TraitError(f"unit {unit} is out of range for layer {layer!r}: valid 0..{n - 1}")
        return int(unit)

    # ------------------------------------------------------------------ public control surface
    def run(self) -> None:
        """Start a run with the current settings (cancelling the one in progress, if any)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this widget was closed")
            self._pending = True
            self._stop_event.set()
            self._ensure_worker()
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the current run (between two steps) and drop any pending restart."""
        with self._cond:
            self._pending = False
            self._stop_event.set()
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no run is in progress or pending; False when ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the worker and close the widget."""
        if not hasattr(self, "_cond"):  # construction failed before the base was set up
            return super().close()
        with self._cond:
            self._closed = True
            self._pending = False
            self._stop_event.set()
            self._cond.notify_all()
        self._frame_ready.set()
        for thread in (self._worker, self._sender):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)
        super().close()

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

    def set_state(self, sync_data: dict) -> None:
        """Apply a state update from the front end; a value the kernel refuses is reported in
        ``error`` (naming the setting) and the kernel's value is sent back to the control."""
        names = [n for n in sync_data if n in self.keys]
        try:
            super().set_state(sync_data)
        except (t.TraitError, ValueError, TypeError) as exc:
            self._refuse(names, sync_data, exc)
            return
        if self._refusal and self.error == self._refusal and names:
            self.error = ""  # an accepted value replaces the message about a refused one
            self._refusal = ""

    def _refuse(self, names: list[str], sync_data: dict, exc: Exception) -> None:
        labels = {c.get("trait"): c.get("label") for c in self.controls if isinstance(c, dict)}
        shown = []
        for n in names:
            value = sync_data[n]
            value = f"{len(value)} bytes" if isinstance(value, (bytes, memoryview)) else repr(value)
            shown.append(f"{labels.get(n) or n} = {value}")
        text = str(exc) or type(exc).__name__
        self._refusal = f"{', '.join(shown)} refused: {text}"
        self.error = self._refusal
        if names:
            self.send_state(key=names)

    @contextlib.contextmanager
    def hold_sync(self) -> Iterator[None]:
        """ipywidgets' ``hold_sync``, safe across threads: the worker and the kernel's thread
        both batch updates, and ipywidgets' own set of names to send is not guarded (a name
        added while it is sent raised "Set changed size during iteration", or was lost)."""
        guard = self.__dict__.get("_sync_guard")
        if guard is None:  # before __init__ ran
            with super().hold_sync():
                yield
            return
        with guard:
            outer = not getattr(self, "_holding_sync", False)
            self._holding_sync = True
        if not outer:
            yield
            return
        try:
            yield
        finally:
            with guard:
                self._holding_sync = False
                keys = list(self._states_to_send)
                self._states_to_send.clear()
            if keys:
                self.send_state(keys)

    def _should_send_property(self, key: str, value: Any) -> bool:
        guard = self.__dict__.get("_sync_guard")
        if guard is None:
            return super()._should_send_property(key, value)
        with guard:
            return super()._should_send_property(key, value)

    def send_download(self, name: str, data: bytes, mime: str = "application/octet-stream") -> None:
        """Have the browser save ``data`` as file ``name`` (a ``download`` message; nothing is
        written on the kernel's machine)."""
        self.send({"type": "download", "name": name, "mime": mime}, buffers=[bytes(data)])

    def _on_front_msg(self, widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "ack":
            with self._cond:
                self._in_flight.pop(int(content.get("seq", -1)), None)
        elif kind == "ready":
            with self._cond:
                self._views += 1
            if self.auto_run and not self._busy and not self._pending and self._completed_runs == 0:
                self.run()
        elif kind == "goodbye":
            with self._cond:
                self._views = max(0, self._views - 1)
                if self._views == 0:
                    self._in_flight.clear()
        elif kind == "run":
            self.run()
        elif kind == "stop":
            self.stop()
        elif kind == "click":
            self._on_click(content)
        elif kind == "action":
            self._on_action(str(content.get("action", "")), content)

    # ------------------------------------------------------------------ threads
    def _ensure_worker(self) -> None:
        """Start the worker unless one is on duty (call with ``self._cond`` held)."""
        if self._worker is not None and not self._worker.is_alive():
            self._worker = None  # died without saying so: never leave a run request stranded
        if self._worker is None:
            self._retire(self._last_worker)
            self._worker = self._last_worker = threading.Thread(
                target=self._worker_loop, name=f"cnnvis-{type(self).__name__}", daemon=True
            )
            self._worker.start()

    def _ensure_sender(self) -> None:
        """Start the sender unless one is on duty (call with ``self._cond`` held)."""
        if self._sender is None and not self._closed:
            self._retire(self._last_sender)
            self._sender = self._last_sender = threading.Thread(
                target=self._sender_loop, name=f"cnnvis-send-{type(self).__name__}", daemon=True
            )
            self._sender.start()

    @staticmethod
    def _retire(thread: threading.Thread | None) -> None:
        """Wait for a thread that went off duty to return (it already released the lock and
        only returns): never two workers (or senders) of one widget alive at once."""
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _worker_loop(self) -> None:
        off_duty = False
        try:
            while True:
                with self._cond:
                    if not self._pending or self._closed:
                        self._worker = None  # off duty: the next run() starts a new thread
                        self._cond.notify_all()
                        # from here on the thread must not take the lock again: run() may hold
                        # it while it joins this thread (_retire), which would deadlock
                        off_duty = True
                        return
                    self._pending = False
                    stop_event = threading.Event()
                    self._stop_event = stop_event
                    self._busy = True
                try:
                    self._execute(stop_event)
                except Exception as exc:  # noqa: BLE001 - a fault after the run: shown, the loop lives
                    self._report_fault(exc)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            if not off_duty:
                with self._cond:  # however it ends, a later run() must find no worker on duty
                    if self._worker is threading.current_thread():
                        self._worker = None
                self._cond.notify_all()

    def _report_fault(self, exc: Exception) -> None:
        with contextlib.suppress(Exception), self.hold_sync():
            self.error = f"{type(exc).__name__}: {exc}"
            self.running = False
            self.status = f"{self._describe()}: stopped by an error"

    def _execute(self, stop_event: threading.Event) -> None:
        history: list[float] = []
        started = time.monotonic()
        last_frame = last_traits = 0.0
        cursor = 0  # history[:cursor] was already sent in frames
        n_steps = 0
        step: Step | None = None
        error = ""
        self._before_run()
        with self.hold_sync():
            self.run_id += 1
            self.error = ""
            self.history = []
            self.step = 0
            self.running = True
            self.status = f"{self._describe()}: starting"
        run_id = self.run_id
        gen = None
        try:
            gen = self._steps(stop_event)
            for step in gen:
                n_steps += 1
                if step.loss is not None and math.isfinite(step.loss):
                    history.append(step.loss)
                self._on_step(step)
                now = time.monotonic()
                if self._views and now - last_frame >= FRAME_INTERVAL and self._can_send(now):
                    last_frame = now
                    losses = [[i, v] for i, v in enumerate(history[cursor:], start=cursor)]
                    cursor = len(history)
                    self._queue_frame(step, run_id, losses, png=now - last_traits >= TRAIT_INTERVAL)
                    if now - last_traits >= TRAIT_INTERVAL:
                        last_traits = now
                        self._sync_progress(step, history)
                elif now - last_traits >= TRAIT_INTERVAL:
                    last_traits = now
                    self._queue_frame(step, run_id, None, png=True)
                    self._sync_progress(step, history)
                if stop_event.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - shown in the widget, the worker lives on
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if gen is not None:
                gen.close()  # runs the core's finally blocks: hooks removed, grads restored
        elapsed = time.monotonic() - started
        png = None
        try:
            final = self._frame_pixels(step) if step is not None else None
            if final is not None:
                pixels = final.detach().to("cpu", copy=True).float().clamp(0, 1)
                self._last_pixels = pixels
                png = encode(pixels, "png")
        except Exception as exc:  # noqa: BLE001 - e.g. settings moved under the final picture
            error = error or f"{type(exc).__name__}: {exc}"
        stopped = stop_event.is_set() and not error
        self._finish_run(step, history)
        with self._cond, self.hold_sync():
            self._finished_run_id = run_id
            if png is not None:
                self.image = png
            self.history = history
            if step is not None:
                self.step = step.index
                self.total_steps = step.total
                self._sync_extra(step)
            self.error = error
            self.running = False
            if error:
                self.status = f"{self._describe()}: stopped by an error"
            elif stopped:
                self.status = f"{self._describe()}: stopped at step {n_steps}"
            else:
                self.status = (
                    f"{self._describe()}: {self._done_text(n_steps, elapsed)}" + self._result_text()
                )
        if not error and not stopped:
            self._completed_runs += 1
        # no final frame: the views take the lossless `image` and the complete `history` traits
        # once `running` turns false

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        """Hook for subclasses: compute final numbers into ``self._last_record``."""

    def _result_text(self) -> str:
        return ""

    def _done_text(self, n_steps: int, elapsed: float) -> str:
        """The status after a completed run, after the description (subclasses: name the
        phases when a run has several)."""
        return f"done, {n_steps} steps in {elapsed:.1f} s"

    def _progress_text(self, step: Step, history: list[float]) -> str:
        """The status during a run, after the description."""
        loss = "" if not history else f", {self._loss_label} {history[-1]:.4g}"
        return f"step {step.index + 1}/{step.total}{loss}"

    def _sync_progress(self, step: Step, history: list[float]) -> None:
        with self.hold_sync():
            self.step = step.index
            self.total_steps = step.total
            if history:
                self.history = list(history)
            self.status = f"{self._describe()}: {self._progress_text(step, history)}"
            self._sync_extra(step)

    def _can_send(self, now: float) -> bool:
        with self._cond:
            for seq, sent in list(self._in_flight.items()):
                if now - sent > ACK_TIMEOUT:
                    del self._in_flight[seq]
            return len(self._in_flight) < MAX_IN_FLIGHT

    def _queue_frame(self, step: Step, run_id: int, losses: list | None, *, png: bool) -> None:
        """Copy the picture to the CPU and hand it to the sender thread (latest wins)."""
        frame = self._frame_pixels(step)
        if frame is None:
            return
        pixels = frame.detach().to("cpu", copy=True)
        self._last_pixels = pixels
        slot = {
            "pixels": pixels,
            "send": losses is not None,
            "png": png,
            "content": {
                "type": "frame",
                "run_id": run_id,
                "step": step.index,
                "total": step.total,
                "loss": step.loss,
                "losses": losses or [],
            },
        }
        with self._cond:
            old = self._frame_slot
            if old is not None and old["send"] and not slot["send"]:
                slot["send"], slot["content"] = True, old["content"]
            self._frame_slot = slot
            self._ensure_sender()
        self._frame_ready.set()

    def _sender_loop(self) -> None:
        while True:
            self._frame_ready.wait(SENDER_IDLE)
            self._frame_ready.clear()
            with self._cond:
                slot, self._frame_slot = self._frame_slot, None
                if slot is None and (self._closed or not (self._busy or self._pending)):
                    self._sender = None  # idle: the next frame starts a new thread
                    return
            if slot is None:
                continue
            try:
                pixels = slot["pixels"].float().clamp(0, 1)
                if slot["send"]:
                    data = encode(pixels, "jpeg", quality=90)
                    with self._cond:
                        self._seq += 1
                        seq = self._seq
                        self._in_flight[seq] = time.monotonic()
                    content = dict(slot["content"], seq=seq, mime="image/jpeg")
                    content["height"], content["width"] = (
                        int(pixels.shape[-2]),
                        int(pixels.shape[-1]),
                    )
                    self.send(content, buffers=[data])
                if slot["png"]:
                    png = encode(pixels, "png")
                    with self._cond:
                        # never overwrite the final image of a run with an older frame
                        if slot["content"]["run_id"] != self._finished_run_id:
                            self.image = png
            except Exception:  # noqa: BLE001 - a failed frame must not kill the sender
                continue
