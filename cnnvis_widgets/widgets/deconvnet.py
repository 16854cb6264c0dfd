"""The DeconvNet widget: a unit's top-9 dataset patches and their projections to pixel space.

Zeiler & Fergus (2014): for a unit of a conv layer, show the dataset patches that excite it most
(each image once, at its strongest position, cropped to the unit's receptive field) and, beside
them, the DeconvNet projection of that activation back to the pixels (or guided backprop).
One pass over the dataset ranks every unit of the layer at once and is cached per (model, layer,
dataset), so moving the unit slider afterwards only projects nine images.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import traitlets as t

from ..core import attribution as A
from ..core import imaging as I
from ..core import projections as P
from ..core import topk as T
from ..core import unit_grids as G
from ..core.blocks.optimize import Step
from ..core.blocks.runs import Run
from ..core.projections import NO_POOL_NOTE, has_max_pooling
from ..data.datasets import ImageDataset, augmented_samples, image_folder, sample_photos
from ..models import ModelHandle
from ..models.layers import default_deconv_layer
from ._base import BoundedFloat, BoundedInt, setting
from ._spatial_unit import SpatialUnitWidget, spatial_layer

__all__ = ["DeconvNet", "default_deconv_layer", "has_max_pooling", "NO_POOL_NOTE"]

K = G.K
_MEMO = T.RECENT  # the kernel's recent dataset passes (shared with the atlas's unit card)


class DeconvNet(SpatialUnitWidget):
    """Top-9 dataset patches of a unit and their DeconvNet / guided-backprop projections.

    Parameters
    ----------
    model : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default), ``"torchvision:<arch>"``, your own module, or a handle.
    device : str, optional
        ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
    **traits
        Initial values of any trait below (``layer=``, ``unit=``, ``dataset=``, ``method=``...).

    The first run makes one pass over the dataset (progress shown, Stop cancels it), ranking
    every unit of the layer; later runs for another unit or method reuse it (in memory and in
    the results cache on disk). Click a patch or a projection to see the whole image with the
    projection overlaid and the receptive field outlined.

    Examples
    --------
    >>> w = DeconvNet(layer="_blocks.4", unit=7)                    # doctest: +SKIP
    >>> w                                                            # doctest: +SKIP
    >>> w.run(); w.wait(); w.save("unit7.png"); w.record()          # doctest: +SKIP
    """

    model_name = t.Unicode("", help="Name of the model (read-only).").tag(sync=True)
    layer_options = t.List(help="[label, name] of every layer with a spatial output.").tag(
        sync=True
    )
    unit_max = t.Int(0, help="Largest valid unit of the layer (read-only).").tag(sync=True)

    # the settings, in the order of their controls ------------------------- Unit
    layer = setting(
        t.Unicode("", help="Dotted name of the layer whose units are ranked."),
        "select", "Layer", "Unit", restart=True, options_trait="layer_options",
        help="a pass over the dataset ranks every unit of the layer",
    )  # fmt: skip
    unit = setting(
        t.Int(0, help="Channel of the layer whose top patches are shown."),
        "slider", "Unit", "Unit", restart=True, min=0, max_trait="unit_max", step=1,
    )  # fmt: skip
    method = setting(
        t.Enum(
            [*P.METHODS, "guided"],  # "guided": old spelling, deprecated
            "deconvnet",
            help="Projection: deconvnet (Zeiler & Fergus) or guided_backprop "
            "(Springenberg et al.).",
        ),
        "toggle", "Projection", "Unit", restart=True,
        options=[[label, m] for m, label in P.METHOD_LABELS.items()],
    )  # fmt: skip
    # ---------------------------------------------------------------------- Dataset
    dataset = setting(
        t.Enum(
            ["augmented", "photos", "folder"],
            "augmented",
            help="augmented: the sample photos plus deterministic crops, flips and colour jitter; "
            "photos: the sample photos only; folder: every image under `w.folder` (set in Python).",
        ),
        "select", "Dataset", "Dataset", restart=True, collapsed=True,
        options=[
            ["sample photos + augmentations", "augmented"],
            ["sample photos only", "photos"],
            ["my images (w.folder, set in Python)", "folder"],
        ],
    )  # fmt: skip
    # not synced: the browser never names a location on the kernel's machine (rule 8); recorded
    # only when it is used (see _settings)
    folder = setting(
        t.Unicode("", help="Where your images are (dataset 'folder'); set it in Python."),
        restart=True, sync=False, record=False,
    )  # fmt: skip
    n_images = setting(
        BoundedInt(256, 1, 100_000, help="Number of images of the augmented dataset."),
        "slider", "Images", "Dataset", restart=True, log=True, step=1,
        visible_when={"trait": "dataset", "in": ["augmented"]},
    )  # fmt: skip
    # ---------------------------------------------------------------------- Display
    opacity = setting(
        BoundedFloat(0.7, 0.0, 1.0, help="Opacity of the projection over the selected image."),
        "slider", "Overlay opacity", "Display", step=0.05,
    )  # fmt: skip
    selected = setting(
        BoundedInt(-1, -1, K - 1, help="Rank (0-8) of the patch shown whole, -1 for none.")
    )
    patches = t.Bytes(b"", help="PNG: 3x3 grid of the top patches (read-only).").tag(sync=True)
    projections = t.Bytes(b"", help="PNG: 3x3 grid of their projections (read-only).").tag(
        sync=True
    )
    detail = t.Bytes(b"", help="PNG: the selected image with its projection (read-only).").tag(
        sync=True
    )
    details = t.Unicode("", help="Text: the top images, values and positions (read-only).").tag(
        sync=True
    )
    note = t.Unicode("", help="A remark about this model and method, or empty (read-only).").tag(
        sync=True
    )

    def _initial_traits(self, h: ModelHandle, kwargs: dict[str, Any]) -> dict[str, Any]:
        self._lock = threading.RLock()
        self._current: tuple[P.UnitProjections, str, int] | None = None  # + dataset, count
        self._top: T.TopK | None = None
        self._pass_settings: tuple | None = None  # dataset settings of the last completed pass
        layer = kwargs.pop("layer", None) or default_deconv_layer(h)
        pooled = has_max_pooling(h)
        return dict(
            title="DeconvNet: top-9 patches and projections",
            model_name=h.name,
            layer_options=[[li.label(), li.name] for li in h.conv_layers()],
            layer=layer,
            unit_max=spatial_layer(h, layer).channels - 1,
            # without switches, guided backprop is the default (an explicit method= still wins)
            **({} if pooled else {"note": NO_POOL_NOTE, "method": "guided_backprop"}),
        )

    def _ready(self) -> None:
        self.observe(self._on_layer, names=["layer"])
        self.observe(self._on_selected, names=["selected", "opacity"])
        note = [{"kind": "text", "trait": "note", "label": "Note"}] if self.note else []
        self.panels = note + [
            {"kind": "image", "trait": "patches", "label": "Top-9 dataset patches", "grid": [3, 3]},
            {"kind": "image", "trait": "projections", "label": "Projections to pixel space",
             "grid": [3, 3]},
            {"kind": "image", "trait": "detail", "label": "Clicked image, projection overlaid"},
            {"kind": "text", "trait": "details", "label": "Top images"},
            {"kind": "progress"},
        ]  # fmt: skip

    @t.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        return A.canonical_method(proposal["value"])

    # ------------------------------------------------------------------ observers
    def _on_layer(self, change: dict) -> None:
        with self.hold_sync():
            self.unit_max = self._follow_layer(change["new"]) - 1

    def _on_selected(self, change: dict) -> None:
        self._compose_detail()

    def _on_click(self, content: dict) -> None:
        cell = self._clicked_cell(content, 3, 3)
        if content.get("trait") not in ("patches", "projections") or cell is None:
            return
        rank = cell[0] * 3 + cell[1]
        cur = self._current
        if cur is None or rank >= len(cur[0].entries):
            return
        if self.selected == rank:
            self._compose_detail()
        else:
            self.selected = rank

    def _data_settings(self) -> tuple:
        return (self.layer, self.dataset, self.folder, self.n_images)

    def _applies_at_once(self, name: str) -> bool:
        # unit and projection reuse the cached pass: only nine images are projected
        return name in ("unit", "method") and self._pass_settings == self._data_settings()

    # ------------------------------------------------------------------ the run
    def make_dataset(self) -> ImageDataset:
        """The dataset the current traits name."""
        size = max(self.handle.input_size)
        if self.dataset == "augmented":
            return augmented_samples(n=self.n_images, size=size, seed=0)
        if self.dataset == "photos":
            return sample_photos(size=size)
        if not self.folder.strip():
            raise ValueError(
                "dataset 'folder' needs a folder: set it in Python, e.g. w.folder = 'my_images'"
            )
        return image_folder(self.folder.strip())

    def _describe(self) -> str:
        return f"{self.layer} unit {self.unit}"

    def _steps(self, stop_event: threading.Event) -> Iterator[Step]:
        h, layer, unit, method = self.handle, self.layer, self.unit, self.method
        settings = self._data_settings()
        ds = self.make_dataset()
        self._pass_total = len(ds)
        run = Run(T.cached_top_k_steps(h, layer, ds, K, stop_event=stop_event))
        index = 0
        for step in run:
            index = step.index + 1
            yield step
        top = run.result
        if top is None:
            return  # cancelled: the widget stays as it was
        self._top, self._pass_settings = top, settings
        if stop_event.is_set():
            return
        up = P.unit_projections(h, top, unit, ds, method, project=False)
        grid_p = G.patch_grid(up.entries, up.patches, top.input_size)
        self.patches = I.encode(grid_p, "png")
        self.details = G.details_text(top, unit, up.entries)
        if stop_event.is_set():
            return
        P.add_projections(h, up)
        grid_q = G.patch_grid(up.entries, up.projection_patches, top.input_size)
        with self._lock:
            self._current = (up, ds.key, top.count)
        with self.hold_sync():
            self.projections = I.encode(grid_q, "png")
            if self.selected >= len(up.entries):
                self.set_trait("selected", -1)
        self._compose_detail()
        composite = G.side_by_side(grid_p, grid_q).unsqueeze(0)
        yield Step(index, None, composite, {"images": top.count}, index + 1)

    def _compose_detail(self) -> None:
        with self._lock:
            up = self._current[0] if self._current is not None else None
            rank, opacity = self.selected, self.opacity
        if up is None or up.projections is None or not 0 <= rank < len(up.entries):
            if self.detail:
                self.detail = b""
            return
        proj = up.projections[rank : rank + 1]
        pic = G.detail_picture(up.images[rank], proj, up.entries[rank].box, opacity)
        self.detail = I.encode(pic, "png")

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        cur = self._current
        if cur is None or cur[0].unit != self.unit or cur[0].layer != self.layer:
            self._last_record = {}
            return
        up, dataset, count = cur
        self._last_record = {
            "layer": up.layer,
            "unit": up.unit,
            "method": up.method,
            "dataset": dataset,
            "images_ranked": count,
            "top": G.entry_records(up.entries),
        }

    def _result_text(self) -> str:
        top = self._last_record.get("top")
        if not top:
            return ""
        return f", best {top[0]['image']} ({top[0]['value']:.3g})"

    def _sync_extra(self, step: Step) -> None:
        if self.running and step.image is None and "images" in step.metrics:
            total = getattr(self, "_pass_total", 0)
            self.status = (
                f"{self._describe()}: dataset pass, {step.metrics['images']}"
                f"{f'/{total}' if total else ''} images ranked"
            )

    def _settings(self) -> dict[str, Any]:
        out = super()._settings()
        if self.dataset == "folder":
            out["folder"] = self.folder  # not synced, still part of what was computed
        return out
