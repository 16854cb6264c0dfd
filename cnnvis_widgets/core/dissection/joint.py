"""Several models dissected on the same layers and probe set, one after the other, resumable:
:class:`DissectionJob` (the widget's run with ``compare=``: a network and its random twin)."""

from __future__ import annotations

import threading
from collections.abc import Generator, Sequence
from typing import Any

from ...data.concepts import Probe
from ...models.handle import ModelHandle
from ..blocks.optimize import Step
from ..blocks.runs import Run
from .results import Dissection
from .run import Dissector


class DissectionJob:
    """A :class:`Dissector` per model, run one after the other over one probe set.

    :meth:`steps` yields every model's steps (``metrics["model"]`` is the model's position;
    step indices count over the whole job) and returns the list of :class:`Dissection` s, or
    None when ``stop_event`` stopped it: calling :meth:`steps` again resumes where it stopped.

    Parameters
    ----------
    handles : sequence of ModelHandle
    layers : str or sequence of str
    probe : ProbeSet or BrodenProbe
    **settings
        The settings of :class:`Dissector` (``quantile``, ``batch_size``...), for every model.

    Examples
    --------
    >>> job = DissectionJob([h, load_model(h, weights=None)], "_blocks.4", probe)  # doctest: +SKIP
    >>> pretrained, random = finish(job.steps())                                 # doctest: +SKIP
    """

    def __init__(
        self,
        handles: Sequence[ModelHandle],
        layers: str | Sequence[str],
        probe: Probe,
        **settings: Any,
    ) -> None:
        self.probe = probe
        self.dissectors = [Dissector(h, layers, probe, **settings) for h in handles]
        self.results: list[Dissection | None] = [None] * len(self.dissectors)

    @property
    def total_steps(self) -> int:
        """Steps of every model's dissection."""
        return sum(d.total_steps for d in self.dissectors)

    @property
    def done(self) -> bool:
        """True once every model's result is complete."""
        return all(r is not None for r in self.results)

    def result(
        self, model: int, iou_threshold: float | None = None, *, partial: bool = False
    ) -> Dissection | None:
        """Model ``model``'s result (judged with ``iou_threshold`` when given); None before it
        is complete, or with ``partial`` the result from the batches tallied so far (see
        :meth:`Dissector.partial_result`)."""
        if not 0 <= model < len(self.dissectors):
            return None
        r = self.results[model]
        if r is None and partial:
            r = self.dissectors[model].partial_result()
        return r if r is None or iou_threshold is None else r.with_iou_threshold(iou_threshold)

    def steps(
        self, stop_event: threading.Event | None = None
    ) -> Generator[Step, None, list[Dissection] | None]:
        """Run (or resume) every model's dissection; returns the results (None when stopped)."""
        total, offset = self.total_steps, 0
        for i, d in enumerate(self.dissectors):
            if not d.done:
                run = Run(d.steps(stop_event))
                for st in run:
                    yield Step(offset + st.index, None, None, dict(st.metrics, model=i), total)
                if run.result is None:
                    return None
            self.results[i] = d.result
            offset += d.total_steps
        return [r for r in self.results if r is not None]
