"""What passes between the kernel and the views (see ``js/PROTOCOL.md``).

* views are counted by their ``ready`` and ``goodbye`` messages (frames go only to open views);
  ``ack`` frees a frame slot, ``run``/``stop``/``click``/``action`` reach the widget;
* a value the front end sets and the kernel refuses is reported in ``error`` (naming the
  setting) and the control is sent the kernel's value back;
* ``hold_sync`` batches state updates safely across the worker and the kernel's thread;
* ``send_download`` has the browser save a file; a button declared in ``_downloads`` has it
  save what ``export_bytes`` makes (``_download``: a failure is reported in ``error``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import traitlets as t

__all__ = ["FrontEnd"]


class FrontEnd:
    """Mixin of the widget base: messages and state to and from the front end."""

    def _init_frontend(self) -> None:
        self._sync_guard = threading.Lock()  # ipywidgets' batching of updates, across threads
        self._refusal = ""  # the error text of the last refused front-end value
        self._views = 0  # open views: counted by their `ready` and `goodbye` messages

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

    def _download(self, make: Callable[[], tuple[str, str, bytes]]) -> bool:
        """Have the browser save the file ``make()`` returns as ``(name, mime type, bytes)`` (a
        download button's action): its size in ``status``, or an exception of ``make`` in
        ``error`` (the widget stays usable); True when sent."""
        try:
            name, mime, data = make()
        except Exception as exc:  # noqa: BLE001 - shown in the widget
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self.error = ""
        self.send_download(name, data, mime)  # the browser saves it: no path on the kernel
        self.status = f"exported {name} ({len(data):,} bytes) to your browser's downloads"
        return True

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
            action = str(content.get("action", ""))
            if action in self._downloads:
                what = self._downloads[action][1]
                self._download(lambda: self.export_bytes(what))
            else:
                self._on_action(action, content)
