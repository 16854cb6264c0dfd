"""The DeconvNet widget: a unit's top-9 dataset patches and their projections to pixel space.

Zeiler & Fergus (2014): for a unit of a conv layer, show the dataset patches that excite it most
(each image once, at its strongest position, cropped to the unit's receptive field) and, beside
them, the DeconvNet projection of that activation back to the pixels (or guided backprop).
One pass over the dataset ranks every unit of the layer at once and is cached per (model, layer,
dataset), so moving the unit slider afterwards only projects nine images.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
import traitlets as t

from ..core import attribution as A
from ..core import imaging as I
from ..core import projections as P
from ..core import topk as T
from ..core import unit_grids as G
from ..core.blocks.optimize import Step
from ..data.datasets import ImageDataset, augmented_samples, image_folder, sample_photos
from ..models import ModelHandle
from ..models.layers import default_deconv_layer
from ._base import BoundedFloat, BoundedInt, CnnvisWidget, get_handle, setting

__all__ = ["DeconvNet", "default_deconv_layer"]

K, CELL, GAP = G.K, G.CELL, G.GAP
_MEMO: OrderedDict[tuple, T.TopK] = OrderedDict()  # recent passes of every widget in the kernel
_MEMO_LOCK = threading.Lock()
_MEMO_SIZE = 12


def has_max_pooling(handle: ModelHandle) -> bool:
    """True when the model has a max-pooling module: DeconvNet's switches (where each maximum
    was) are what make its projections depend on the image."""
    pools = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d, torch.nn.AdaptiveMaxPool2d)
    return any(isinstance(m, pools) for m in handle.model.modules())


NO_POOL_NOTE = (
    "This model has no max-pooling, so DeconvNet has no switches: its projections are nearly the "
    "same pattern for every image (correct, not a bug). Guided backprop, shown by default here, "
    "depends on the image."
)


class DeconvNet(CnnvisWidget):
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
            ["deconvnet", "guided_backprop", "guided"],  # "guided": old spelling, deprecated
            "deconvnet",
            help="Projection: deconvnet (Zeiler & Fergus) or guided_backprop "
            "(Springenberg et al.).",
        ),
        "toggle", "Projection", "Unit", restart=True,
        options=[["DeconvNet", "deconvnet"], ["guided backprop", "guided_backprop"]],
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

    def __init__(
        self,
        model: str | torch.nn.Module | ModelHandle = "efficientnet_lite0",
        *,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._check_arguments(kwargs, settings_only=True)
        self.handle = get_handle(model, **({"device": device} if device else {}))
        h = self.handle
        self._lock = threading.RLock()
        self._current: dict[str, Any] | None = None
        self._top: T.TopK | None = None
        self._pass_settings: tuple | None = None  # dataset settings of the last completed pass
        layer = kwargs.pop("layer", None) or default_deconv_layer(h)
        info = h.layer(layer)  # KeyError listing the nearest names
        if not info.spatial:
            raise ValueError(f"layer {layer!r} has no spatial output; choose a conv-like layer")
        super().__init__(
            title="DeconvNet: top-9 patches and projections",
            model_name=h.name,
            layer_options=[[li.label(), li.name] for li in h.conv_layers()],
            layer=layer,
            unit_max=info.channels - 1,
        )
        if not has_max_pooling(h):
            self.note = NO_POOL_NOTE
            self.method = "guided_backprop"  # an explicit method= below still wins
        with self.hold_trait_notifications():
            for k, v in kwargs.items():
                setattr(self, k, v)
        self.observe(self._on_layer, names=["layer"])
        self.observe(self._on_selected, names=["selected", "opacity"])
        note = [{"kind": "text", "trait": "note", "label": "Note"}] if self.note else []
        self.panels = note + [
            {"kind": "image", "trait": "patches", "label": "Top-9 dataset patches", "grid": [3, 3]},
            {
                "kind": "image",
                "trait": "projections",
                "label": "Projections to pixel space",
                "grid": [3, 3],
            },
            {"kind": "image", "trait": "detail", "label": "Clicked image, projection overlaid"},
            {"kind": "text", "trait": "details", "label": "Top images"},
            {"kind": "progress"},
        ]

    # ------------------------------------------------------------------ validation
    @t.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        info = self._layer_info(name)
        if not info.spatial:
            raise t.TraitError(f"layer {name!r} has no spatial output; choose a conv-like layer")
        return name

    @t.validate("unit")
    def _valid_unit(self, proposal: dict) -> int:
        return self._unit_in_range(int(proposal["value"]), self.layer)

    @t.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        return A.canonical_method(proposal["value"])

    # ------------------------------------------------------------------ observers
    def _on_layer(self, change: dict) -> None:
        n = self.handle.layer(change["new"]).channels
        with self.hold_sync():
            if self.unit >= n:
                self.set_trait("unit", n - 1)
            self.unit_max = n - 1

    def _on_selected(self, change: dict) -> None:
        self._compose_detail()

    def _on_click(self, content: dict) -> None:
        trait = content.get("trait")
        if trait not in ("patches", "projections"):
            return
        try:
            fx, fy = float(content.get("x", -1)), float(content.get("y", -1))
        except (TypeError, ValueError):
            return
        if not (0 <= fx < 1 and 0 <= fy < 1):
            return
        rank = int(fy * 3) * 3 + int(fx * 3)
        cur = self._current
        if cur is None or rank >= len(cur["entries"]):
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
        h = self.handle
        layer, unit, method = self.layer, self.unit, self.method
        settings = self._data_settings()
        ds = self.make_dataset()
        fingerprint = h.fingerprint()
        key = (fingerprint, layer, ds.key)
        with _MEMO_LOCK:
            top = _MEMO.get(key)
            if top is not None:
                _MEMO.move_to_end(key)
        index = 0
        if top is None:  # a damaged entry or an unusable cache folder: a pass (warned once)
            top = T.load_cached_topk(h, layer, ds.key, K, None)
        if top is None:
            self._pass_total = len(ds)
            for step in T.top_k_steps(h, layer, ds, k=K, stop_event=stop_event):
                if "topk" in step.metrics:
                    top = step.metrics["topk"]
                    break
                index = step.index + 1
                yield step
            if top is None:
                return  # cancelled: the widget stays as it was
            T.save_cached_topk(h, layer, ds.key, K, None, top)
        with _MEMO_LOCK:
            _MEMO[key] = top
            while len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
        self._top = top
        self._pass_settings = settings
        if stop_event.is_set():
            return
        rule = "deconvnet" if method == "deconvnet" else "guided_backprop"
        up = P.unit_projections(h, top, unit, ds, rule, project=False)
        entries, imgs, size = up.entries, up.images, top.input_size
        grid_p = G.patch_grid(entries, up.patches, size)
        self.patches = I.encode(grid_p, "png")
        self.details = G.details_text(top, unit, entries)
        if stop_event.is_set():
            return
        proj = P.project_unit(h, layer, unit, imgs, entries, rule)
        grid_q = G.projection_grid(entries, proj, size)
        with self._lock:
            self._current = {
                "entries": entries,
                "images": imgs,
                "projections": proj,
                "layer": layer,
                "unit": unit,
                "method": method,
                "dataset": ds.key,
                "count": top.count,
            }
        with self.hold_sync():
            self.projections = I.encode(grid_q, "png")
            if self.selected >= len(entries):
                self.set_trait("selected", -1)
        self._compose_detail()
        gap = torch.full((3, grid_p.shape[1], 8), 1.0)
        composite = torch.cat([grid_p, gap, grid_q], dim=2).unsqueeze(0)
        yield Step(index, None, composite, {"images": top.count}, index + 1)

    def _compose_detail(self) -> None:
        with self._lock:
            cur = self._current
            rank = self.selected
            opacity = self.opacity
        if cur is None or rank < 0 or rank >= len(cur["entries"]):
            if self.detail:
                self.detail = b""
            return
        e = cur["entries"][rank]
        photo = cur["images"][rank]
        proj = cur["projections"][rank : rank + 1]
        pic = G.detail_picture(photo, proj, e.box, opacity)
        self.detail = I.encode(pic, "png")

    def _finish_run(self, step: Step | None, history: list[float]) -> None:
        cur = self._current
        if cur is None or cur["unit"] != self.unit or cur["layer"] != self.layer:
            self._last_record = {}
            return
        self._last_record = {
            "layer": cur["layer"],
            "unit": cur["unit"],
            "method": cur["method"],
            "dataset": cur["dataset"],
            "images_ranked": cur["count"],
            "top": G.entry_records(cur["entries"]),
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
