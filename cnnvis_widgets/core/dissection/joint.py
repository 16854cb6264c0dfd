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
from .compare import layers_per_model
from .results import Dissection
from .run import Dissector, check_layers
from .views import progress_text, shown_traits, summary_bars, table_rows


def check_layers_of(handles: Sequence[ModelHandle], layers: str | Sequence[str]) -> list[str]:
    """:func:`~.run.check_layers` of ``layers`` for every model of a job (the second one called
    the comparison model in the messages), each at its own layers (another architecture at
    :func:`~.compare.matching_layers`); the first model's names, repeats dropped.

    Examples
    --------
    >>> check_layers_of([h, load_model(h, weights=None)], ["_blocks.4"])   # doctest: +SKIP
    ['_blocks.4']
    """
    names = check_layers(handles[0], layers)
    for h, mapped in zip(handles[1:], layers_per_model(handles, names)[1:]):
        check_layers(h, mapped, which="comparison model")
    return names


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
    names : sequence of str, optional
        What the models are called in views (default: their names).
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
        names: Sequence[str] | None = None,
        **settings: Any,
    ) -> None:
        self.handles = list(handles)
        self.probe = probe
        self.names = list(names) if names is not None else [h.name for h in self.handles]
        self.settings = dict(settings)
        # another architecture is dissected at its matching layers (compare.layers_per_model)
        per_model = layers_per_model(self.handles, layers) if self.handles else []
        self.dissectors = [
            Dissector(h, ls, probe, **settings) for h, ls in zip(self.handles, per_model)
        ]
        self.layers = self.dissectors[0].layers if self.dissectors else []
        self.layers_of = [d.layers for d in self.dissectors]
        self.results: list[Dissection | None] = [None] * len(self.dissectors)

    @classmethod
    def resumed(
        cls,
        job: DissectionJob | None,
        handles: Sequence[ModelHandle],
        layers: str | Sequence[str],
        probe: Probe,
        names: Sequence[str] | None = None,
        **settings: Any,
    ) -> DissectionJob:
        """``job`` when it stopped part way and computes what these arguments ask (its
        :meth:`steps` resume it), else a new job of these arguments."""
        if job is not None and not job.done and job.matches(handles, layers, probe, **settings):
            return job
        return cls(handles, layers, probe, names, **settings)

    def matches(
        self,
        handles: Sequence[ModelHandle],
        layers: str | Sequence[str],
        probe: Probe,
        **settings: Any,
    ) -> bool:
        """True when a job of these arguments would compute what this one computes (the same
        models, layers, probe images and settings; ``iou_threshold`` only judges the result)."""

        def tallied(s: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in s.items() if k != "iou_threshold"}

        same_models = len(handles) == len(self.handles) and all(
            a is b for a, b in zip(handles, self.handles)
        )
        names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        return (
            same_models
            and names == self.layers
            and probe.describe() == self.probe.describe()
            and tallied(settings) == tallied(self.settings)
        )

    def layer_in(self, model: int, layer: str) -> str:
        """The layer of model ``model`` paired with the first model's ``layer`` (the same name
        for one architecture)."""
        if 0 <= model < len(self.layers_of) and layer in self.layers:
            return self.layers_of[model][self.layers.index(layer)]
        return layer

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

    def judged(self, iou_threshold: float | None = None) -> list[Dissection]:
        """The complete results, judged with ``iou_threshold`` when given: every model's once
        the job is done, empty until the first model's result is complete."""
        results = [self.result(i, iou_threshold) for i in range(len(self.dissectors))]
        return [] if not results or results[0] is None else [r for r in results if r is not None]

    def record(self, iou_threshold: float) -> dict[str, Any]:
        """What the job found, for a record: the first model's ``summary`` and the ``probe``
        set, and with a second model its ``compare`` summary and ``compare_model``; empty until
        the first model's result is complete."""
        done = self.judged(iou_threshold)
        rec: dict[str, Any] = {}
        if done:
            rec = {"summary": done[0].summary(), "probe": self.probe.describe()}
        if len(done) > 1:
            rec |= {"compare": done[1].summary(), "compare_model": self.handles[1].describe()}
        return rec

    def progress(self, step: Step, shown: int, layer: str, iou_threshold: float) -> dict[str, Any]:
        """What a front end shows of ``step`` of this job: the ``stage`` (with the model's name
        when there are several) and the ``status`` line and, while model ``shown`` is being
        tallied, the ``rows`` of ``layer`` and the ``summary_bars`` of its partial result."""
        which = step.metrics.get("model", 0)
        name = self.names[which]
        several = f" ({name})" if len(self.handles) > 1 else ""
        out = {
            "stage": step.metrics.get("stage", "") + several,
            "status": progress_text(step, name),
        }
        partial = self.result(which, iou_threshold, partial=True) if which == shown else None
        if partial is not None:
            rows = table_rows(partial, self.layer_in(which, layer))
            out |= {"rows": rows, "summary_bars": summary_bars(partial)}
        return out

    def shown(
        self, model: int, layer: str, unit: int, iou_threshold: float, **options: Any
    ) -> dict[str, Any]:
        """:func:`~.views.shown_traits` of model ``model``'s result judged with
        ``iou_threshold`` (``options``: ``top_k``, ``table``, ``bars``)."""
        results = [self.result(i, iou_threshold) for i in range(len(self.dissectors))]
        args = (self.handles, self.names, self.probe, model, self.layer_in(model, layer), unit)
        return shown_traits(results, *args, **options)

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
