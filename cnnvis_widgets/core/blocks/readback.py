"""Numbers read back from the device in batches, not one host-device sync per step.

On CUDA, ``float(loss)`` waits for every queued kernel: a loop that reads its loss at every step
cannot queue the next step while the current one runs. A :class:`LossLog` keeps the losses of a
run on the device and reads them back in **one** transfer, every ``every`` steps or as soon as
someone asks for one of them (a :class:`~.optimize.Step`'s ``loss`` is read lazily through it).
:func:`host_read` is the one place where this happens, so a test can count the reads.

>>> log = LossLog(every=4)
>>> refs = [log.add(torch.tensor(float(i))) for i in range(3)]
>>> log.pending, log.due()
(3, False)
>>> refs[1].value(), log.pending  # one read resolves every pending loss
(1.0, 0)
>>> log.first_bad is None
True
"""

from __future__ import annotations

import math
import os
import threading

import torch

__all__ = ["LossLog", "LazyLoss", "host_read", "read_every", "READ_EVERY"]

READ_EVERY = 16
"""Default number of steps between two reads of the losses (``CNNVIS_READ_EVERY`` overrides)."""


def read_every(every: int | None = None) -> int:
    """The number of steps between reads: ``every``, else ``$CNNVIS_READ_EVERY``, else
    :data:`READ_EVERY` (at least 1)."""
    if every is None:
        env = os.environ.get("CNNVIS_READ_EVERY", "").strip()
        try:
            every = int(env) if env else READ_EVERY
        except ValueError:
            raise ValueError(f"CNNVIS_READ_EVERY must be an integer, got {env!r}") from None
    return max(1, int(every))


def host_read(values: torch.Tensor) -> list[float]:
    """Copy a 1-d tensor to the host as Python floats: one device sync (counted by tests)."""
    return [float(v) for v in values.tolist()]


class LazyLoss:
    """One loss of a :class:`LossLog`, read from the device when :meth:`value` is first called."""

    __slots__ = ("log", "index")

    def __init__(self, log: LossLog, index: int) -> None:
        self.log = log
        self.index = index

    def value(self) -> float:
        """The loss as a float (reads every pending loss of the log in one transfer if needed)."""
        return self.log.value(self.index)

    def __repr__(self) -> str:
        return f"LazyLoss({self.index})"


class LossLog:
    """The scalar losses of one run: kept on the device, read back in one transfer.

    Parameters
    ----------
    every : int, optional
        :meth:`due` is True once this many losses wait (default :func:`read_every`).

    Attributes
    ----------
    values : list of float
        The losses read so far, in the order they were added.
    first_bad : int or None
        Position (0-based, order of :meth:`add`) of the first non-finite loss read, if any.
    """

    def __init__(self, every: int | None = None) -> None:
        self.every = read_every(every)
        self.values: list[float] = []
        self.first_bad: int | None = None
        self._pending: list[torch.Tensor] = []
        self._lock = threading.Lock()  # a consumer may read a loss from another thread

    def __len__(self) -> int:
        return len(self.values) + len(self._pending)

    @property
    def pending(self) -> int:
        """How many losses wait on the device."""
        return len(self._pending)

    def add(self, loss: torch.Tensor) -> LazyLoss:
        """Keep a scalar loss (detached; no sync) and return its lazy handle."""
        t = loss.detach().reshape(())
        with self._lock:
            self._pending.append(t)
            return LazyLoss(self, len(self) - 1)

    def due(self) -> bool:
        """Whether ``every`` losses wait (time to :meth:`read`)."""
        return len(self._pending) >= self.every

    def read(self) -> None:
        """Read every pending loss back in one transfer and note the first non-finite one."""
        with self._lock:
            if not self._pending:
                return
            first = len(self.values)
            dev = self._pending[0].device
            both = [t.to(device=dev, dtype=torch.float64) for t in self._pending]
            got = host_read(torch.stack(both))
            self._pending = []
            self.values.extend(got)
            if self.first_bad is None:
                for j, v in enumerate(got):
                    if not math.isfinite(v):
                        self.first_bad = first + j
                        break

    def value(self, index: int) -> float:
        """The loss at ``index`` (reads the pending ones first when it is one of them)."""
        if index >= len(self.values):
            self.read()
        return self.values[index]

    def floats(self) -> list[float]:
        """Every loss as a float (one read for the pending ones)."""
        self.read()
        return list(self.values)
