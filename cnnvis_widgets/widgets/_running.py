"""Running: a worker thread per widget while there is work, cancellation and restarts.

The worker is started by a run request and ends when no run is pending (an idle widget holds no
thread); a request while a run goes on cancels it between two steps and starts over with the
newest settings, so a storm of slider moves ends with exactly one run for the final settings.
A fault shows in ``error`` and the widget stays usable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from ..core.blocks.optimize import Step
from ..core.imaging import encode
from ._frames import LossHistory, Pace

__all__ = ["Running"]


class Running:
    """Mixin of the widget base: ``run()``, ``stop()``, ``wait()``, ``close()`` and the worker."""

    #: what the per-step value is called in the status line
    _loss_label: str = "loss"

    def _init_running(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._pending = False
        self._busy = False
        self._closed = False
        self._stop_event = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_worker: threading.Thread | None = None  # the last one started (may be done)
        self._completed_runs = 0
        self._finished_run_id = -1
        self._last_record: dict[str, Any] = {}

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
        losses = LossHistory()
        started = time.monotonic()
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
        pace = Pace(self.run_id)
        gen = None
        try:
            gen = self._steps(stop_event)
            for step in gen:
                n_steps += 1
                losses.add(step)
                self._on_step(step)
                self._stream_step(pace, step, losses)
                if stop_event.is_set():
                    break
            history = losses.read()
        except BaseException as exc:  # noqa: BLE001 - shown in the widget, the worker lives on
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if gen is not None:
                gen.close()  # runs the core's finally blocks: hooks removed, grads restored
        if error:  # the losses up to the error (a pending NaN raises again: keep those read)
            with contextlib.suppress(Exception):
                losses.read()
            history = losses.values
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
            self._finished_run_id = pace.run_id
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
