"""Helpers shared by the test modules (``from tests.helpers import ...``).

- ``run_without(code, blocked)``: run Python code in a fresh interpreter in which importing any of
  ``blocked`` fails, to show that a layer works without the widget packages.
- ``FakeView``: stands in for the browser side of a widget's comm.
- ``assert_refused(widget, trait, {value: message})``: each value is refused with that message.
- ``check_nan_then_recovery(...)``: a run that meets NaN ends with an error; the next one works.
- ``cnnvis_threads()`` / ``until_no_threads()``: the widgets' worker and sender threads alive.
- ``ForwardCounter(model)``: counts the model's forward passes (``.n``; ``.remove()`` the hook).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the packages of the widget layer; core, data and models must work without any of them
WIDGET_PACKAGES = ("anywidget", "ipywidgets", "traitlets", "plotly", "IPython")

_PRELUDE = r"""
import sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import torch
torch.set_num_threads(1)
"""


def run_without(
    code: str, *args: str, blocked: tuple[str, ...] = WIDGET_PACKAGES, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``code`` (with ``args`` as ``sys.argv[1:]``) in a new Python where importing any of
    ``blocked`` raises ``ImportError`` (``BLOCKED`` names them; torch is imported, one thread).

    It runs in the repository root, which comes first on the path (``tests.conftest`` is
    importable). Asserts that the code exited 0 and returns the finished process, whose
    ``stdout`` the test checks.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE.format(blocked=tuple(blocked)) + code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


class FakeView:
    """Stands in for the browser: records every custom message with its buffers, announces itself
    (``ready``, which starts an ``auto_run`` widget) and acknowledges frames unless ``ack=False``.
    """

    def __init__(self, w: Any, *, ack: bool = True, ready: bool = True) -> None:
        self.w, self.ack = w, ack
        self.messages: list[tuple[dict, list]] = []
        w.send = self.send
        if ready:
            w._on_front_msg(w, {"type": "ready"}, [])

    @property
    def frames(self) -> list[tuple[dict, list]]:
        """The ``frame`` messages with their buffers."""
        return [(c, b) for c, b in self.messages if c.get("type") == "frame"]

    def send(self, content: dict, buffers: list | None = None) -> None:
        self.messages.append((content, list(buffers or [])))
        if self.ack and content.get("type") == "frame":
            self.w._on_front_msg(self.w, {"type": "ack", "seq": content["seq"]}, [])


def cnnvis_threads() -> list[threading.Thread]:
    """The widgets' threads alive now (workers ``cnnvis-<class>``, senders ``cnnvis-send-...``)."""
    return [t for t in threading.enumerate() if t.name.startswith("cnnvis-")]


def until_no_threads(limit: float = 30.0) -> list[threading.Thread]:
    """The cnnvis threads still alive once they had ``limit`` seconds to end (a worker returns
    just after ``wait()`` does, a sender half a second after its last frame)."""
    deadline = time.monotonic() + limit
    for th in cnnvis_threads():
        th.join(max(0.0, deadline - time.monotonic()))
    return cnnvis_threads()


def check_nan_then_recovery(
    w: Any, net: Any, weight: Any, *errors: str, start: Any = None, timeout: float = 60
) -> None:
    """Fill ``weight`` (a parameter of ``net``, the model the widget ``w`` runs) with NaN and
    start a run (``start()``, default ``w.run()``): the run ends with an error that names each of
    ``errors``, leaves no worker running and no hook on ``net``. With the weight restored, the
    next ``w.run()`` ends without an error (the widget stayed usable)."""
    import torch

    from cnnvis_widgets.core.hooks import active_hook_count

    with torch.no_grad():
        saved = weight.clone()
        weight.fill_(float("nan"))
    (start or w.run)()
    assert w.wait(timeout=timeout)
    assert w.error and all(e in w.error for e in errors), w.error
    assert not w.running and active_hook_count(net) == 0
    with torch.no_grad():
        weight.copy_(saved)
    w.run()
    assert w.wait(timeout=timeout)
    assert w.error == "", w.error


def assert_refused(widget: Any, trait: str, refusals: dict[Any, str]) -> None:
    """Setting ``widget.<trait>`` to each value of ``refusals`` raises ``traitlets.TraitError``
    whose message matches (:func:`re.search`) the value's pattern, and loses nothing: the trait
    keeps the value it had."""
    import pytest
    import traitlets

    for value, message in refusals.items():
        before = getattr(widget, trait)
        with pytest.raises(traitlets.TraitError, match=message):
            setattr(widget, trait, value)
        assert getattr(widget, trait) == before, f"{trait} changed to a refused {value!r}"


class ForwardCounter:
    """Counts forward passes of a model (a pre-hook on the root module)."""

    def __init__(self, model: Any) -> None:
        self.n = 0
        self._h = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, inputs: Any) -> None:
        self.n += 1

    def remove(self) -> None:
        self._h.remove()
