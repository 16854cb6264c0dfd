"""Top-k dataset patches per unit (Zeiler & Fergus 2014) and exact receptive fields.

:func:`top_k_patches` makes one streaming pass over a dataset and keeps, for every unit (channel)
of a layer, the ``k`` images whose spatial maximum is highest; each image counts once per unit,
at its argmax. Memory holds ``k`` entries per unit whatever the dataset size. The patch of an
entry is the part of the image inside the unit's receptive field at that position
(:func:`receptive_field`).

Receptive fields are computed exactly by :mod:`cnnvis_widgets.core.blocks.receptive`.
:func:`cached_top_k_steps` reuses a pass (kept in memory and in the results cache).

Examples
--------
>>> from cnnvis_widgets import load_model                                     # doctest: +SKIP
>>> from cnnvis_widgets.data.datasets import augmented_samples               # doctest: +SKIP
>>> h = load_model()                                                          # doctest: +SKIP
>>> top = top_k_patches(h, "_blocks.4", augmented_samples(n=256), k=9)        # doctest: +SKIP
>>> top.entries(7)[0]                                                         # doctest: +SKIP
Entry(rank=0, value=9.81, image=113, name='cat~aug0113', y=12, x=9, box=(...))
>>> patches = top.patches(7, augmented_samples(n=256))  # 9 pixel tensors     # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .. import cache, limits
from ..data.datasets import as_dataset
from ..models.handle import ModelHandle
from .blocks.hooks import StopForward, capture
from .blocks.optimize import Step
from .blocks.receptive import ReceptiveField, Selection, receptive_field  # noqa: F401
from .blocks.runs import finish
from .imaging import pil_to_tensor

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "TopK",
    "Entry",
    "top_k_steps",
    "cached_top_k_steps",
    "top_k_patches",
    "model_fingerprint",
    "load_cached_topk",
    "save_cached_topk",
    "to_pixels",
]


# ------------------------------------------------------------------------------------------------
# Top-k


@dataclass(frozen=True)
class Entry:
    """One of a unit's top images.

    Attributes
    ----------
    rank : int
        0 for the highest.
    value : float
        The unit's spatial maximum on this image.
    image : int
        Index of the image in the dataset (order of the pass).
    name : str
        The image's name.
    y, x : int
        Position of the maximum in the layer's output.
    box : (int, int, int, int)
        ``(top, left, bottom, right)`` of the receptive field at ``(y, x)`` in input pixels.
    """

    rank: int
    value: float
    image: int
    name: str
    y: int
    x: int
    box: tuple[int, int, int, int]


@dataclass
class TopK:
    """Result of :func:`top_k_patches`: per unit, its ``k`` best images and where.

    Attributes
    ----------
    layer : str
        The layer.
    units : list of int
        The units (channels) kept, in the order of the rows below.
    k : int
        Entries per unit (fewer when the dataset had fewer images).
    values : torch.Tensor
        ``(U, k)`` spatial maxima, descending per unit.
    images : torch.Tensor
        ``(U, k)`` dataset indices.
    ys, xs : torch.Tensor
        ``(U, k)`` positions of the maxima in the layer's output.
    names : dict
        Dataset index -> image name, for every referenced image.
    field : ReceptiveField
        The layer's receptive fields at ``input_size``.
    count : int
        Images seen by the pass.
    dataset_key : str or None
        The dataset's key (None for a plain iterable).
    model : dict
        ``handle.describe()`` of the model.
    pixels : dict
        Dataset index -> uint8 ``(C, H, W)`` image, kept only for datasets that cannot be
        re-read (plain iterables); indexable datasets are re-read by :meth:`images_for`.
    """

    layer: str
    units: list[int]
    k: int
    values: torch.Tensor
    images: torch.Tensor
    ys: torch.Tensor
    xs: torch.Tensor
    names: dict[int, str]
    field: ReceptiveField
    count: int
    dataset_key: str | None = None
    model: dict[str, Any] = dc_field(default_factory=dict)
    pixels: dict[int, torch.Tensor] = dc_field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.field.input_size

    def _row(self, unit: int) -> int:
        try:
            return self.units.index(int(unit))
        except ValueError:
            lo, hi = (min(self.units), max(self.units)) if self.units else (0, -1)
            raise IndexError(
                f"unit {unit} was not part of this top-k pass of {self.layer!r} (units {lo}..{hi}"
                f"{'' if len(self.units) == hi - lo + 1 else ', not all'})"
            ) from None

    def entries(self, unit: int) -> list[Entry]:
        """The unit's top images, best first."""
        r = self._row(unit)
        out = []
        for rank in range(self.values.shape[1]):
            idx = int(self.images[r, rank])
            if idx < 0:
                break
            y, x = int(self.ys[r, rank]), int(self.xs[r, rank])
            out.append(
                Entry(
                    rank,
                    float(self.values[r, rank]),
                    idx,
                    self.names.get(idx, str(idx)),
                    y,
                    x,
                    self.field.box(y, x),
                )
            )
        return out

    def images_for(self, unit: int, dataset: Any = None, handle: ModelHandle | None = None):
        """The unit's top images as one pixel batch ``(n, C, H, W)`` (CPU, [0, 1]).

        Images kept in :attr:`pixels` are used directly; others are re-read from ``dataset``
        (the same dataset as the pass) and prepared like in the pass (``handle`` is needed when
        they are not already at the input size).
        """
        entries = self.entries(unit)
        ds = as_dataset(dataset) if dataset is not None else None
        out = []
        for e in entries:
            if e.image in self.pixels:
                out.append(self.pixels[e.image].float().div(255))
                continue
            if ds is None:
                raise ValueError(
                    "this result does not keep its images: pass the dataset of the pass "
                    "(images_for(unit, dataset))"
                )
            if ds.key != self.dataset_key and self.dataset_key is not None:
                raise ValueError(
                    f"dataset {ds.key!r} is not the one of the pass ({self.dataset_key!r})"
                )
            name, img = ds[e.image]
            out.append(to_pixels(img, self.input_size, handle)[0].cpu())
        if not out:
            return torch.zeros(0, 3, *self.input_size)
        return torch.stack(out)

    def patches(
        self, unit: int, dataset: Any = None, handle: ModelHandle | None = None
    ) -> list[torch.Tensor]:
        """The unit's top patches: each image cropped to the receptive field of its maximum
        (smaller at the image borders), pixel space ``(C, h, w)``, best first."""
        imgs = self.images_for(unit, dataset, handle)
        out = []
        for e, img in zip(self.entries(unit), imgs):
            top, left, bottom, right = e.box
            out.append(img[:, top:bottom, left:right])
        return out

    def save(self, path: str | Path) -> Path:
        """Write the result (atomically; tensors and plain values only)."""
        return cache.save_tensors(
            path,
            {
                "format": "cnnvis-topk-1",
                "layer": self.layer,
                "units": torch.tensor(self.units, dtype=torch.long),
                "k": self.k,
                "values": self.values.cpu(),
                "images": self.images.cpu(),
                "ys": self.ys.cpu(),
                "xs": self.xs.cpu(),
                "name_index": torch.tensor(list(self.names), dtype=torch.long),
                "name_list": [self.names[i] for i in self.names],
                "field": self.field.to_dict(),
                "count": self.count,
                "dataset_key": self.dataset_key or "",
                "model": {k: v for k, v in self.model.items()},
                "pixel_index": torch.tensor(list(self.pixels), dtype=torch.long),
                "pixel_list": [self.pixels[i] for i in self.pixels],
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> TopK:
        """Read a result written by :meth:`save` (``weights_only=True``: no code runs)."""
        d = cache.load_tensors(path)
        if not isinstance(d, dict) or d.get("format") != "cnnvis-topk-1":
            raise ValueError(f"{str(path)!r} is not a saved top-k result")
        names = dict(zip(d["name_index"].tolist(), d["name_list"]))
        pixels = dict(zip(d["pixel_index"].tolist(), d["pixel_list"]))
        return cls(
            layer=d["layer"],
            units=d["units"].tolist(),
            k=int(d["k"]),
            values=d["values"],
            images=d["images"],
            ys=d["ys"],
            xs=d["xs"],
            names=names,
            field=ReceptiveField.from_dict(d["field"]),
            count=int(d["count"]),
            dataset_key=d["dataset_key"] or None,
            model=dict(d["model"]),
            pixels=pixels,
        )


def to_pixels(image: Any, size: tuple[int, int], handle: ModelHandle | None = None) -> torch.Tensor:
    """One dataset item -> pixel batch ``(1, C, H, W)`` at ``size``.

    A PIL image already of that size is used as is; other photos go through
    ``handle.to_pixels`` (resize + centre crop); tensors are pixel space ``(C, H, W)`` or
    ``(1, C, H, W)`` and must have that size.
    """
    if isinstance(image, torch.Tensor):
        t = image if image.dim() == 4 else image.unsqueeze(0)
        if tuple(t.shape[-2:]) != tuple(size):
            raise ValueError(
                f"image tensors must be {size[0]}x{size[1]} pixel-space images, got shape "
                f"{tuple(image.shape)}"
            )
        limits.check_pixel_range(t, "image tensor")
        return t.float()
    if isinstance(image, Image.Image):
        channels = handle.in_channels if handle is not None else 3
        if image.size == (size[1], size[0]) and channels == 3:
            return pil_to_tensor(image.convert("RGB"))
        if handle is None:
            raise ValueError("pass handle= to resize photos to the model's input")
        return handle.to_pixels(image, None if tuple(size) == handle.input_size else size[0])
    raise TypeError(
        f"dataset items must be PIL images, (name, image) pairs or pixel tensors, got "
        f"{type(image).__name__}"
    )


def _items(dataset: Any) -> tuple[Iterable[tuple[str, Any]], int | None, str | None, bool]:
    """``(iterable of (name, image), length or None, key or None, re-readable)``."""
    ds = as_dataset(dataset)
    if ds is not None:
        return iter(ds), len(ds), ds.key, True
    if isinstance(dataset, torch.Tensor):
        batch = dataset if dataset.dim() == 4 else dataset.unsqueeze(0)
        return ((str(i), t) for i, t in enumerate(batch)), batch.shape[0], None, False
    try:
        length = len(dataset)
    except TypeError:
        length = None

    def named() -> Iterator[tuple[str, Any]]:
        for i, item in enumerate(dataset):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                yield item
            else:
                yield str(i), item

    return named(), length, None, False


def model_fingerprint(handle: ModelHandle) -> str:
    """The model's content fingerprint for caches: :meth:`ModelHandle.fingerprint` (kept under
    this name for old code)."""
    return handle.fingerprint()


def top_k_steps(
    handle: ModelHandle,
    layer: str,
    dataset: Any,
    k: int = 9,
    units: Sequence[int] | int | None = None,
    *,
    batch_size: int = 16,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, TopK | None]:
    """:func:`top_k_patches` as a generator: yields a progress :class:`Step` per batch
    (``image`` and ``loss`` None, ``metrics["images"]`` the number seen) and *returns* the
    :class:`TopK` (``top = yield from top_k_steps(...)``, see :mod:`.blocks.runs`). A set
    ``stop_event`` ends it between two batches; it then returns None."""
    info = handle.layer(layer)
    if not info.spatial:
        raise ValueError(
            f"layer {layer!r} has no spatial output; top-k patches need a conv-like layer"
        )
    k = limits.check_int(k, "k", minimum=1, limit="MAX_TOP_K")
    if units is None:
        unit_list = list(range(info.channels))
    elif limits.is_scalar(units):
        unit_list = [limits.as_int(units, "unit")]
    else:
        unit_list = [limits.as_int(u, "unit") for u in units]  # type: ignore[union-attr]
    for u in unit_list:
        handle.check_unit(layer, u)
    if not unit_list:
        raise ValueError("units is empty")
    items, length, key, rereadable = _items(dataset)
    size = handle.input_size
    batch_size = limits.check_batch(batch_size, size[0], size[1], name="batch_size")
    field_ = receptive_field(handle, layer, size)
    dev = handle.device
    nu = len(unit_list)
    unit_idx = torch.tensor(unit_list, device=dev)
    best_v = torch.full((nu, k), float("-inf"), device=dev)
    best_i = torch.full((nu, k), -1, dtype=torch.long, device=dev)
    best_p = torch.zeros((nu, k), dtype=torch.long, device=dev)
    names: dict[int, str] = {}
    pixels: dict[int, torch.Tensor] = {}
    seen = 0
    total = math.ceil(length / batch_size) if length is not None else 0
    batch_names: list[str] = []
    batch_pix: list[torch.Tensor] = []
    w = field_.output_size[1]
    step_i = 0

    def flush() -> None:
        nonlocal seen, best_v, best_i, best_p
        x = handle.normalize(torch.cat(batch_pix).to(dev))
        with torch.no_grad(), capture(handle, [layer], stop_early=True) as acts:
            try:
                handle.net(x)
            except StopForward:
                pass
            a = acts[layer]
        if a.shape[-2:] != field_.output_size:
            raise RuntimeError(f"layer {layer!r} output {tuple(a.shape)} != field size")
        a = a.index_select(1, unit_idx).flatten(2)  # (B, U, h*w)
        finite = torch.isfinite(a).all()  # read with the kept images: one transfer per batch
        vals, pos = a.max(dim=2)  # each image once per unit, at its argmax
        b = vals.shape[0]
        idx = torch.arange(seen, seen + b, device=dev).expand(nu, b)
        cand_v = torch.cat([best_v, vals.T], dim=1)
        cand_i = torch.cat([best_i, idx], dim=1)
        cand_p = torch.cat([best_p, pos.T], dim=1)
        best_v, order = cand_v.topk(k, dim=1)
        best_i = cand_i.gather(1, order)
        best_p = cand_p.gather(1, order)
        got = torch.cat([finite.view(1).long(), best_i.flatten()]).tolist()
        if not got[0]:
            raise FloatingPointError(
                f"the activations of {layer!r} are NaN or infinite on image(s) "
                f"{seen}..{seen + len(batch_pix) - 1}; check the model's weights and the images"
            )
        kept = set(got[1:])
        for j, name in enumerate(batch_names):
            if seen + j in kept:
                names[seen + j] = name
                if not rereadable:
                    pixels[seen + j] = batch_pix[j][0].mul(255).round().to(torch.uint8).cpu()
        for gone in [i for i in names if i not in kept]:
            names.pop(gone)
            pixels.pop(gone, None)
        seen += b
        batch_names.clear()
        batch_pix.clear()

    for name, img in items:
        if stop_event is not None and stop_event.is_set():
            return None
        batch_names.append(name)
        batch_pix.append(to_pixels(img, size, handle).cpu())
        if len(batch_pix) == batch_size:
            flush()
            yield Step(step_i, None, None, {"images": seen}, max(total, step_i + 1))
            step_i += 1
    if stop_event is not None and stop_event.is_set():
        return None
    if batch_pix:
        flush()
    if seen == 0:
        raise ValueError("the dataset is empty: no image to rank")
    n = min(k, seen)
    result = TopK(
        layer=layer,
        units=unit_list,
        k=k,
        values=best_v[:, :n].cpu(),
        images=best_i[:, :n].cpu(),
        ys=(best_p[:, :n] // w).cpu(),
        xs=(best_p[:, :n] % w).cpu(),
        names=names,
        field=field_,
        count=seen,
        dataset_key=key,
        model=handle.describe(),
        pixels=pixels,
    )
    yield Step(step_i, None, None, {"images": seen}, max(total, step_i + 1))
    return result


def topk_cache_key(
    handle: ModelHandle, layer: str, dataset_key: str, k: int, units: Sequence[int] | None
) -> str:
    """The results-cache key of a pass: model weights, layer, dataset content, k, units, size."""
    return cache.cache_key(
        "topk",
        model=handle.fingerprint(),
        layer=layer,
        dataset=dataset_key,
        k=int(k),
        units=None if units is None else [int(u) for u in units],
        size=list(handle.input_size),
    )


def topk_cache_path(
    handle: ModelHandle, layer: str, dataset_key: str, k: int, units: Sequence[int] | None
) -> Path:
    """Where :func:`top_k_patches` with ``cache=True`` keeps the result of these arguments."""
    return cache.cache_path("topk", topk_cache_key(handle, layer, dataset_key, k, units), ".pt")


def load_cached_topk(
    handle: ModelHandle, layer: str, dataset_key: str, k: int, units: Sequence[int] | None = None
) -> TopK | None:
    """The cached :class:`TopK` of these arguments, or None (no entry, a damaged one: warned
    once, or no usable cache folder)."""
    key = topk_cache_key(handle, layer, dataset_key, k, units)
    return cache.read_entry(cache.entry_path("topk", key, ".pt"), TopK.load)


def save_cached_topk(
    handle: ModelHandle,
    layer: str,
    dataset_key: str,
    k: int,
    units: Sequence[int] | None,
    top: TopK,
) -> bool:
    """Keep ``top`` in the results cache; False (warned once) when it cannot be written."""
    key = topk_cache_key(handle, layer, dataset_key, k, units)
    return cache.write_entry(cache.entry_path("topk", key, ".pt"), top.save)


#: the kernel's recent passes of :func:`cached_top_k_steps`, by cache key (newest last)
RECENT: OrderedDict[str, TopK] = OrderedDict()
RECENT_SIZE = 12
_RECENT_LOCK = threading.Lock()


def cached_top_k_steps(
    handle: ModelHandle,
    layer: str,
    dataset: Any,
    k: int = 9,
    *,
    use_cache: bool = True,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, TopK | None]:
    """:func:`top_k_steps` of every unit of ``layer``, reused when it was already made: from
    the kernel's recent passes (:data:`RECENT`, in memory), else from the results cache on disk;
    a new pass is kept in both. Yields the pass's progress Steps (none when reused) and returns
    the :class:`TopK`, or None when ``stop_event`` ended the pass.

    ``dataset`` must have a key (an :class:`~cnnvis_widgets.data.datasets.ImageDataset` or a
    folder); ``use_cache=False`` always makes the pass and keeps nothing.

    Examples
    --------
    >>> top = finish(cached_top_k_steps(h, "_blocks.4", augmented_samples(64)))  # doctest: +SKIP
    """
    ds = as_dataset(dataset)
    if ds is None:
        raise TypeError("cached_top_k_steps needs a dataset with a key (an ImageDataset, a folder)")
    key = topk_cache_key(handle, layer, ds.key, k, None)
    with _RECENT_LOCK:
        top = RECENT.get(key) if use_cache else None
    if top is None and use_cache:  # a damaged entry or an unusable cache folder: a pass
        top = load_cached_topk(handle, layer, ds.key, k, None)
    if top is None:
        top = yield from top_k_steps(handle, layer, ds, k=k, stop_event=stop_event)
        if top is None or not use_cache:
            return top  # cancelled, or nothing to keep
        save_cached_topk(handle, layer, ds.key, k, None, top)
    with _RECENT_LOCK:
        RECENT[key] = top
        RECENT.move_to_end(key)
        while len(RECENT) > RECENT_SIZE:
            RECENT.popitem(last=False)
    return top


def top_k_patches(
    handle: ModelHandle,
    layer: str,
    dataset: Any = "augmented",
    k: int = 9,
    units: Sequence[int] | int | None = None,
    *,
    batch_size: int = 16,
    cache_results: bool = False,
) -> TopK:
    """One streaming pass over ``dataset``: each unit's ``k`` images with the highest maximum.

    Parameters
    ----------
    handle : ModelHandle
        The network.
    layer : str
        A layer with a spatial output.
    dataset : ImageDataset, folder path, "augmented", "photos", or an iterable
        Images as PIL images, ``(name, image)`` pairs or pixel tensors ``(C, H, W)`` at the
        model's input size. Photos of another size are resized and centre-cropped like
        ``handle.preprocess``. Default: :func:`~cnnvis_widgets.data.datasets.augmented_samples`.
    k : int
        Images kept per unit (9 in Zeiler & Fergus).
    units : int or sequence of int, optional
        Channels to rank (default: all of the layer, in one pass).
    batch_size : int
        Images per forward pass.
    cache_results : bool
        Keep the result in the results cache (per model weights, layer, dataset, k, units) and
        reuse it (datasets with a key only: ImageDataset, folders).

    Returns
    -------
    TopK
        Values, dataset indices and positions per unit, the receptive field; ``.patches(unit,
        dataset)`` gives the cropped patches, ``.save(path)`` / ``TopK.load(path)`` persist it.

    Examples
    --------
    >>> top = top_k_patches(handle, "_blocks.4", augmented_samples(n=256))   # doctest: +SKIP
    >>> [e.name for e in top.entries(7)][:3]                                # doctest: +SKIP
    """
    ds = as_dataset(dataset) if cache_results else None

    def run_pass() -> TopK:
        top = finish(top_k_steps(handle, layer, dataset if ds is None else ds, k, units,
                                 batch_size=batch_size))  # fmt: skip
        assert top is not None  # without a stop event the pass always completes
        return top

    if ds is None:  # no cache, or a plain iterable (no key to cache it under)
        return run_pass()
    unit_arg: Sequence[int] | None = (
        [units] if limits.is_scalar(units) else units  # type: ignore[list-item,assignment]
    )
    key = topk_cache_key(handle, layer, ds.key, k, unit_arg)
    return cache.cached("topk", key, run_pass, load=TopK.load, save=lambda p, top: top.save(p))
