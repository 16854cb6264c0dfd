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
from .integrated_gradients import integrated_gradients
from .occlusion import occlusion
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


def _occlusion_map(handle: ModelHandle, x: torch.Tensor, target: int) -> torch.Tensor:
    return occlusion(handle, x, target).score  # the logit's drop, 32 px patch, 8 px stride


def _ig_map(handle: ModelHandle, x: torch.Tensor, target: int) -> torch.Tensor:
    return integrated_gradients(handle, x, target).attributions  # 32 steps from black


#: Methods computed only when asked for (many passes each): name -> (label, map of
#: ``(handle, x, class)`` ``(1, C, H, W)``), with their papers' defaults.
SLOW_METHODS: dict[str, tuple[str, Any]] = {
    "occlusion": ("Occlusion (Zeiler & Fergus 2014)", _occlusion_map),
    "integrated_gradients": ("Integrated gradients (Sundararajan et al. 2017)", _ig_map),
}


class MapCache:
    """Least-recently-used maps, bounded by count and by bytes (dict-like: ``get``, ``in``,
    ``[]=``, ``len``); the newest entry is always kept. Safe to use from several threads (a
    run writes while the display reads).

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
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
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

    def __setitem__(self, key: tuple, value: torch.Tensor) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old.nelement() * old.element_size()
            self._items[key] = value
            self.nbytes += value.nelement() * value.element_size()
            while len(self._items) > 1 and (
                len(self._items) > self.max_items or self.nbytes > self.max_bytes
            ):
                _, dropped = self._items.popitem(last=False)
                self.nbytes -= dropped.nelement() * dropped.element_size()


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
    """

    cache: MapCache
    key: str
    target: int
    layer: str
    pixels: torch.Tensor
    unsupported: dict[str, str] = field(default_factory=dict)

    def map_key(self, method: str) -> tuple:
        """The cache key of ``method``'s map (the layer counts for the Grad-CAM methods only)."""
        cam = method in A.METHODS and A.METHODS[method][2]
        return (self.key, self.target, method, self.layer if cam else "")

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
                if m in SLOW_METHODS:
                    attr = SLOW_METHODS[m][1](handle, x, maps.target)
                else:
                    attr = A.attribute(handle, x, maps.target, m, layer=maps.layer or None)
            except A.UnsupportedActivationError as exc:
                if m == method:
                    raise  # the map asked for cannot be made: say why
                maps.unsupported[m] = str(exc)
                continue  # the other maps still can
            maps.cache[key] = attr[0].detach().cpu()
        yield Step(i, None, None, {"method": m}, len(order))
    return maps
