"""The run protocol: a ``*_steps`` generator yields progress and *returns* its result.

Every method's ``*_steps`` function is a generator of :class:`~.optimize.Step` s whose ``return``
value is the method's result (a ``TopK``, a ``Dissection``, a ``LayerGrid``...), so another
generator reads it with ``result = yield from topk_steps(...)``. Code that loops over the steps
(a widget, a progress bar) wraps the generator in :class:`Run` and reads ``run.result`` after the
loop; :func:`finish` runs a generator to its end and returns the result.

>>> def counting(n):
...     for i in range(n):
...         yield i
...     return "done"
>>> run = Run(counting(3))
>>> [i for i in run], run.result, run.finished
([0, 1, 2], 'done', True)
>>> finish(counting(2))
'done'
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Run", "finish"]

S = TypeVar("S")
R = TypeVar("R")


class Run(Generic[S, R]):
    """Iterate a steps generator and keep what it returns.

    ``result`` is None until the generator has returned (``finished`` then becomes True); a
    generator stopped early (a stop event, ``close()``) leaves ``finished`` False.
    """

    def __init__(self, steps: Generator[S, Any, R]) -> None:
        self._steps = steps
        self.result: R | None = None
        self.finished = False

    def __iter__(self) -> Iterator[S]:
        self.result = yield from self._steps
        self.finished = True

    def close(self) -> None:
        """Close the underlying generator (its ``finally`` blocks run)."""
        self._steps.close()


def finish(steps: Generator[Any, Any, R]) -> R:
    """Run a steps generator to its end and return its result."""
    run: Run[Any, R] = Run(steps)
    for _ in run:
        pass
    return run.result  # type: ignore[return-value]
