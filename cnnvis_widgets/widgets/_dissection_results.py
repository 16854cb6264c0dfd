"""The finished results of a :class:`~.dissection.Dissection` widget and what is made of them:
``result`` / ``compare_result`` (judged with the widget's ``iou_threshold``), the record of a run,
the exports (files, bytes for the browser's download buttons, CSV) and the plotly figures.

The widget's live side (settings, runs, the units table and the unit view) is in
:mod:`.dissection`; this mixin only reads the widget's job (a core ``DissectionJob``), its
model names and its static picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cache import atomic_write_bytes
from ..core import dissection as nd
from ..core.blocks.optimize import Step
from ..figures import comparison_figure, summary_figure

__all__ = ["DissectionResults"]


class DissectionResults:
    """Mixin of the :class:`~.dissection.Dissection` widget: its results, record and exports."""

    # what the widget provides
    _job: nd.DissectionJob | None
    _names: list[str]
    _last_pixels: Any
    _last_record: dict[str, Any]
    iou_threshold: float
    layers: list[str]

    #: the export buttons: the browser saves what export_bytes(kinds) makes
    _downloads = {f"export_{k}": (f"Export {k.upper()}", (k,)) for k in nd.EXPORT_KINDS} | {
        "export_zip": ("Export all (zip)", nd.EXPORT_KINDS)
    }

    @property
    def result(self) -> nd.Dissection | None:
        """The dissection of the model (None until a run finished), judged with the current
        ``iou_threshold``."""
        return None if self._job is None else self._job.result(0, self.iou_threshold)

    @property
    def compare_result(self) -> nd.Dissection | None:
        """The dissection of the comparison model (None without one or before a run)."""
        return None if self._job is None else self._job.result(1, self.iou_threshold)

    def _result_text(self) -> str:
        return "" if self.result is None else f"; {nd.interpretable_text(self.result)}"

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        found = self._job.record(self.iou_threshold) if self._job is not None else {}
        self._last_record = {"layers": list(self.layers), **found}

    def export_bytes(self, kinds: Sequence[str] = nd.EXPORT_KINDS) -> tuple[str, str, bytes]:
        """``(file name, mime type, bytes)`` of an export: one file as it is (``dissection.csv``,
        ``dissection.png``), several (JSON + arrays, or every kind) as one zip. What the export
        buttons send to the browser; nothing stays on disk."""
        return nd.export_bytes(self._require(), self._names, self._last_pixels, kinds)

    def _require(self) -> list[nd.Dissection]:
        done = [] if self._job is None else self._job.judged(self.iou_threshold)
        if not done:
            raise RuntimeError("nothing to export yet: run() the widget (and wait()) first")
        return done

    def to_csv(self, path: str | Path | None = None) -> str:
        """All units of all dissected layers as CSV (of both models, with a ``model`` column,
        when comparing); written to ``path`` when given."""
        text = nd.combined_csv(self._require(), self._names)
        if path is not None:
            atomic_write_bytes(path, text.encode())
        return text

    def export(self, folder: str | Path, kinds: Sequence[str] = nd.EXPORT_KINDS) -> dict[str, Path]:
        """Write ``dissection.csv``, ``dissection.json`` + ``.npz`` (and ``compare.json`` + npz)
        and ``dissection.png`` (the static picture) into ``folder``; returns the paths."""
        return nd.export_files(folder, self._require(), self._names, self._last_pixels, kinds)

    def figure(self) -> Any:
        """A plotly figure of unique detectors per category per layer (needs plotly)."""
        return summary_figure(self._require()[0])

    def comparison_figure(self) -> Any:
        """A plotly figure of interpretable units per layer of both models (needs plotly)."""
        if self.compare_result is None:
            raise RuntimeError("no comparison: create the widget with compare=... and run it")
        return comparison_figure(self._require(), self._names)
