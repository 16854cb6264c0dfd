"""Frames: the pictures of a run streamed to the open views while it goes on.

At most ~20 frames per second and at most 4 unacknowledged by the browser; the worker only
copies a small tensor to the CPU, a sender thread (alive only while frames come) encodes it
(JPEG) and sends it as a binary custom message, so the optimization never waits for the browser.
The ``image`` (PNG) and ``history`` traits follow at a low rate (late views, exports).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.blocks.optimize import Step
from ..core.blocks.readback import LazyLoss
from ..core.imaging import encode, make_grid

__all__ = ["ACK_TIMEOUT", "FRAME_INTERVAL", "MAX_IN_FLIGHT", "SENDER_IDLE", "TRAIT_INTERVAL"]
__all__ += ["FrameStreaming", "LossHistory", "Pace"]


FRAME_INTERVAL = 0.05  # seconds between frames (about 20 per second at most)
MAX_IN_FLIGHT = 4  # frames sent but not yet acknowledged by a view
ACK_TIMEOUT = 2.0  # an unacknowledged frame older than this is forgotten (closed view)
TRAIT_INTERVAL = 0.5  # seconds between updates of the `image` and `history` traits
SENDER_IDLE = 0.5  # seconds without a frame after which the sender thread ends


@dataclass
class Pace:
    """Where the stream of one run stands: when the last frame and the last trait update went
    out, and how much of the loss history the frames already carried."""

    run_id: int
    last_frame: float = 0.0
    last_traits: float = 0.0
    cursor: int = 0  # history[:cursor] was already sent in frames


@dataclass
class LossHistory:
    """The finite losses of a run, read from the device only when they are shown (at the frame
    rate and at the end), never once per step: on CUDA a read waits for the queued steps.

    :meth:`add` keeps a step's loss as stored (:attr:`Step.loss_ref`); :meth:`read` turns the
    pending ones into floats in one transfer per device and returns every finite loss so far.
    A non-finite loss from the loop's check raises there (the loop's NonFiniteLossError)."""

    values: list[float] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.pending.append(step.loss_ref)

    def read(self) -> list[float]:
        if self.pending:
            pending, self.pending = self.pending, []
            out: list[float | None] = [None] * len(pending)
            tensors = [(i, v) for i, v in enumerate(pending) if isinstance(v, torch.Tensor)]
            if tensors:
                stacked = torch.stack([v.detach().reshape(()).float().cpu() for _, v in tensors])
                for (i, _), f in zip(tensors, stacked.tolist()):
                    out[i] = f
            for i, v in enumerate(pending):
                if isinstance(v, LazyLoss):
                    out[i] = v.value()
                elif isinstance(v, (int, float)):
                    out[i] = float(v)
            self.values.extend(v for v in out if v is not None and math.isfinite(v))
        return self.values


class FrameStreaming:
    """Mixin of the widget base: frames out of the worker, through the sender thread."""

    def _init_frames(self) -> None:
        self._sender: threading.Thread | None = None
        self._last_sender: threading.Thread | None = None  # the last one started (may be done)
        self._frame_slot: dict[str, Any] | None = None
        self._frame_ready = threading.Event()
        self._in_flight: dict[int, float] = {}
        self._seq = 0
        self._last_pixels: torch.Tensor | None = None

    def _frame_pixels(self, step: Step) -> torch.Tensor | None:
        """The picture of a step, pixel space ``(C, H, W)``: a grid for a batch (None: no
        picture at this step, e.g. a dataset pass)."""
        img = step.image
        if img is None:
            return None
        return img[0] if img.shape[0] == 1 else make_grid(img.clamp(0, 1))

    def _stream_step(self, pace: Pace, step: Step, losses: LossHistory) -> None:
        """After a step: a frame to the views and the progress traits, when they are due (the
        losses are read from the device only then)."""
        now = time.monotonic()
        if self._views and now - pace.last_frame >= FRAME_INTERVAL and self._can_send(now):
            pace.last_frame = now
            history = losses.read()
            losses = [[i, v] for i, v in enumerate(history[pace.cursor :], start=pace.cursor)]
            pace.cursor = len(history)
            traits_due = now - pace.last_traits >= TRAIT_INTERVAL
            self._queue_frame(step, pace.run_id, losses, png=traits_due)
            if traits_due:
                pace.last_traits = now
                self._sync_progress(step, history)
        elif now - pace.last_traits >= TRAIT_INTERVAL:
            pace.last_traits = now
            self._queue_frame(step, pace.run_id, None, png=True)
            self._sync_progress(step, losses.read())

    def _ensure_sender(self) -> None:
        """Start the sender unless one is on duty (call with ``self._cond`` held)."""
        if self._sender is None and not self._closed:
            self._retire(self._last_sender)
            self._sender = self._last_sender = threading.Thread(
                target=self._sender_loop, name=f"cnnvis-send-{type(self).__name__}", daemon=True
            )
            self._sender.start()

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
