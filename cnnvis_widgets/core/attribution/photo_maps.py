"""One attribution run: every method's map for one photo and class, cached, and its pictures.

:func:`attribution_steps` computes the map of each of :data:`~.attribution.METHODS` for one
photo, class and Grad-CAM layer (the method asked for first), keeps them in a :class:`MapCache`
(least recently used, bounded by count and bytes) and yields a progress ``Step`` after each; it
returns the :class:`PhotoMaps`, from which :meth:`PhotoMaps.pictures` composes the pictures of
any method at any opacity without a new pass. A method the model's activations cannot run
(DeconvNet on SiLU) is left out and named in :attr:`PhotoMaps.unsupported`, unless it is the
one asked for. The slower methods of :data:`SLOW_METHODS` (occlusion, integrated gradients) are
computed only when they are the one asked for.

Examples
--------
>>> from cnnvis_widgets.core.blocks.runs import finish
>>> x = handle.preprocess(sample_image("cat"))                             # doctest: +SKIP
>>> pixels = display_pixels(handle, x)                                     # doctest: +SKIP
>>> maps = PhotoMaps(MapCache(), "cat", 281, "_blocks.15", pixels)         # doctest: +SKIP
>>> maps = finish(attribution_steps(handle, x, maps, "grad_cam"))          # doctest: +SKIP
>>> maps.pictures("saliency", 0.5)["overlay"].shape                        # doctest: +SKIP
torch.Size([3, 224, 224])
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from ...models.handle import ModelHandle
from .. import attribution as A
from ..blocks.optimize import Step
from .methods import PERTURBATION_METHODS, Explanation, MethodOptions, explain
from .pictures import attribution_pictures

__all__ = [
    "MAX_MAPS",
    "MAX_MAP_BYTES",
    "SLOW_METHODS",
    "MapCache",
    "PhotoMaps",
    "display_pixels",
    "attribution_steps",
]

MAX_MAPS = 96  # attribution maps kept per cache (a run makes one per method) ...
MAX_MAP_BYTES = 64 * 2**20  # ... and at most this many bytes of them


#: Methods computed only when asked for (many passes each): name -> (label,), their options in
#: :class:`~.methods.MethodOptions` (the papers' defaults: a 32 px patch moved by 8 px, 32 steps
#: from black).
SLOW_METHODS: dict[str, tuple[str]] = {k: (v,) for k, v in PERTURBATION_METHODS.items()}


def _nbytes(value: torch.Tensor | str) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return value.nelement() * value.element_size()


class MapCache:
    """Least-recently-used maps (and their notes, strings), bounded by count and by bytes
    (dict-like: ``get``, ``in``, ``[]=``, ``len``); the newest entry is always kept. Safe to use
    from several threads (a run writes while the display reads).

    Examples
    --------
    >>> cache = MapCache(max_items=2)
    >>> for i in range(3):
    ...     cache[(i,)] = torch.zeros(4)
    >>> len(cache), (0,) in cache, cache.nbytes
    (2, False, 32)
    """

    def __init__(self, max_items: int = MAX_MAPS, max_bytes: int = MAX_MAP_BYTES) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[tuple, torch.Tensor | str] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: tuple, default: Any = None) -> Any:
        with self._lock:
            value = self._items.get(key, default)
            if key in self._items:
                self._items.move_to_end(key)
            return value

    def __setitem__(self, key: tuple, value: torch.Tensor | str) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= _nbytes(old)
            self._items[key] = value
            self.nbytes += _nbytes(value)
            while len(self._items) > 1 and (
                len(self._items) > self.max_items or self.nbytes > self.max_bytes
            ):
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= _nbytes(dropped)


@dataclass(eq=False)
class PhotoMaps:
    """The maps of one photo, class and Grad-CAM layer, as they stand in a :class:`MapCache`.

    Attributes
    ----------
    cache : MapCache
        Where the maps are (shared by every photo and class of a widget).
    key : str
        The photo's cache key: its content and the model's (see ``ModelHandle.fingerprint``).
    target : int
        The class attributed.
    layer : str
        The Grad-CAM layer (the other methods' maps do not depend on it).
    pixels : torch.Tensor
        The photo as the model sees it, ``(3, H, W)`` in ``[0, 1]`` (:func:`display_pixels`).
    unsupported : dict
        Method -> why the model's activations cannot run it (filled by :func:`attribution_steps`).
    options : MethodOptions
        Occlusion's, integrated gradients' and SmoothGrad's options (part of each map's key).
    """

    cache: MapCache
    key: str
    target: int
    layer: str
    pixels: torch.Tensor
    unsupported: dict[str, str] = field(default_factory=dict)
    options: MethodOptions = field(default_factory=MethodOptions)

    def map_key(self, method: str) -> tuple:
        """The cache key of ``method``'s map: the photo, the class, the method, the layer where
        the map depends on it (Grad-CAM, feature occlusion) and the options it depends on."""
        cam = (method in A.METHODS and A.METHODS[method][2]) or (
            method == "occlusion" and self.options.score == "feature"
        )
        return (self.key, self.target, method, self.layer if cam else "",
                *self.options.key(method))  # fmt: skip

    def summary(self, method: str) -> str:
        """What ``method``'s run took in words (:meth:`~.methods.Explanation.summary`, with
        integrated gradients' completeness check), or '' when it is not computed."""
        return str(self.cache.get((*self.map_key(method), "summary"), ""))

    def completeness(self, method: str) -> dict[str, float] | None:
        """Integrated gradients' check of ``method``'s map: ``{"total", "delta", "gap"}``
        (the attributions' sum, ``f(x) - f(baseline)``, the relative gap), else None."""
        c = self.cache.get((*self.map_key(method), "completeness"))
        if c is None:
            return None
        total, delta = float(c[0]), float(c[1])
        return {"total": total, "delta": delta, "gap": abs(total - delta) / max(abs(delta), 1e-12)}

    def keep(self, method: str, e: Explanation) -> None:
        """Put ``e``'s map (of the first image), its summary and its completeness in the cache."""
        key = self.map_key(method)
        self.cache[key] = e.attributions[0].detach().cpu()
        self.cache[(*key, "summary")] = e.summary()
        if e.completeness is not None:
            c = e.completeness
            check = torch.tensor([float(c.total[0]), float(c.delta[0])], dtype=torch.float64)
            self.cache[(*key, "completeness")] = check

    def map(self, method: str) -> torch.Tensor | None:
        """``method``'s map ``(C, H, W)`` on the CPU, or None when it is not computed (yet)."""
        return self.cache.get(self.map_key(method))

    def pictures(self, method: str, opacity: float) -> dict[str, torch.Tensor] | None:
        """:func:`~.attribution_pictures.attribution_pictures` of ``method``'s map (the strip
        holds every map computed so far), or None when that map is not computed."""
        attr = self.map(method)
        if attr is None:
            return None
        ready = [(m, A.METHODS[m][0], self.map(m)) for m in A.METHODS]
        strip = [(m, label, a) for m, label, a in ready if a is not None]
        return attribution_pictures(self.pixels, attr, method, opacity, strip)


def display_pixels(handle: ModelHandle, x: torch.Tensor) -> torch.Tensor:
    """The photo ``x`` (a model-input batch of one) as the model sees it: pixels ``(3, H, W)``
    in ``[0, 1]`` on the CPU; a grey model's input shown as RGB.

    Examples
    --------
    >>> display_pixels(handle, handle.preprocess(photo)).shape                # doctest: +SKIP
    torch.Size([3, 224, 224])
    """
    pixels = handle.denormalize(x)[0].clamp(0, 1).cpu()
    return pixels.expand(3, -1, -1).contiguous() if pixels.shape[0] == 1 else pixels


def attribution_steps(
    handle: ModelHandle, x: torch.Tensor, maps: PhotoMaps, method: str
) -> Generator[Step, None, PhotoMaps]:
    """Compute every method's map of ``maps``' photo, class and layer that its cache lacks.

    Parameters
    ----------
    handle : ModelHandle
        The network.
    x : torch.Tensor
        The photo, a model-input batch of one (``handle.preprocess(photo)``).
    maps : PhotoMaps
        Which photo, class and layer, and the cache the maps go to.
    method : str
        A key of :data:`~.attribution.METHODS` or :data:`SLOW_METHODS`: computed first.

    Yields
    ------
    Step
        One per method whose map is in the cache (an unsupported one yields none):
        ``metrics["method"]`` names it; no picture (see :meth:`PhotoMaps.pictures`).

    Returns
    -------
    PhotoMaps
        ``maps``, with :attr:`PhotoMaps.unsupported` filled in.

    Raises
    ------
    UnsupportedActivationError
        When ``method`` itself cannot run on this model (the other maps are left out).
    """
    order = [method] + [m for m in A.METHODS if m != method]
    for i, m in enumerate(order):
        key = maps.map_key(m)
        if key not in maps.cache:
            try:
                e = explain(handle, x, maps.target, m, maps.layer or None, options=maps.options)
            except A.UnsupportedActivationError as exc:
                if m == method:
                    raise  # the map asked for cannot be made: say why
                maps.unsupported[m] = str(exc)
                continue  # the other maps still can
            maps.keep(m, e)
        yield Step(i, None, None, {"method": m}, len(order))
    return maps
