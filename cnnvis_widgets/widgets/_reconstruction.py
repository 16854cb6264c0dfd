"""What the Inversion widget shows and saves after a reconstruction.

:class:`ReconstructionResult` recomputes the numbers of the final image without jitter (feature
error and pixel correlation per layer, :func:`~cnnvis_widgets.core.inversion_results.
reconstruction_metrics`), puts them in the record, the ``details`` text and the status line, and
keeps the picture of the photo beside its reconstruction(s) for :meth:`export` and the notebook's
static output.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import torch
import traitlets as t

from ..core import inversion_results as R
from ..core.blocks.optimize import Step
from ..imaging import encode, make_grid
from ._base import export_paths

__all__ = ["ReconstructionResult"]


class ReconstructionResult(t.HasTraits):
    """Mixin for the Inversion widget (``method``, ``target()``, ``_layers_run``, ``_missing``,
    ``_last_record``): the result traits, the composite picture and the export."""

    feature_error = t.Float(
        -1.0,
        help="Normalized feature error ||phi(x)-phi0||^2/||phi0||^2 of the final reconstruction, "
        "without jitter (first layer of a strip; -1 before a run) (read-only).",
    ).tag(sync=True)
    pixel_correlation = t.Float(
        0.0, help="Pixel correlation of the final reconstruction with the original (read-only)."
    ).tag(sync=True)
    details = t.Unicode("", help="The result in words and numbers (read-only).").tag(sync=True)

    _composite: bytes = b""

    def _record_reconstruction(self, step: Step, rec: dict[str, Any]) -> bytes:
        """Put the numbers of the run that ended with ``step`` in ``rec``, the traits and
        ``details``; returns the PNG of the photo beside the reconstruction(s)."""
        w: Any = self
        assert step.image is not None
        target, image = w.target(), step.image.detach().clamp(0, 1)
        decoded = w.method == "decoder"
        m = R.reconstruction_metrics(
            w.handle,
            target,
            image,
            w._layers_run,
            step.metrics["feature_error"] if decoded else None,
        )
        fe, corr = m["feature_error"], m["pixel_correlation"]
        rec.update({k: [round(v, 6) for v in vals] for k, vals in m.items()})
        self.feature_error = fe[0] if fe[0] == fe[0] else -1.0
        self.pixel_correlation = corr[0]
        stopped = (step.index + 1, step.total) if w._stop_event.is_set() else None
        lines = R.metric_lines(w._layers_run, m, w._missing if decoded else (), stopped)
        self.details = "\n".join(lines)
        both = torch.cat([target.detach(), image])
        return encode(make_grid(both.cpu(), ncol=both.shape[0]))

    def _result_text(self) -> str:
        rec = self._last_record  # type: ignore[attr-defined]
        if rec.get("job") == "train":
            return f", decoder trained {rec.get('trained_steps', 0)} steps"
        fe = rec.get("feature_error")
        if not fe:
            return ""
        corr = rec["pixel_correlation"]
        if len(fe) == 1:
            return f", feature error {fe[0]:.4f}, pixel correlation {corr[0]:.3f}"
        return ", feature errors " + " ".join(f"{v:.3f}" for v in fe)

    def composite_png(self) -> bytes:
        """PNG of the original beside the reconstruction(s) of the last run (empty before)."""
        return self._composite

    def export(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.png`` (original beside the reconstruction(s)) and ``<path>.json``
        (:meth:`record`: every setting, the seed, the model, versions and the result)."""
        if not self._composite:
            raise RuntimeError("nothing to export yet: run() the widget first")
        png, js = export_paths(path, ".png", ".json")
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(self._composite)
        js.write_text(json.dumps(self.record(), indent=1))  # type: ignore[attr-defined]
        return png, js

    def _repr_mimebundle_(self, **kwargs: Any):
        data = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        picture = self._composite or (b"" if "image/png" in data else self.original)  # type: ignore[attr-defined]
        if picture:
            data["image/png"] = base64.b64encode(picture).decode("ascii")
        return data
