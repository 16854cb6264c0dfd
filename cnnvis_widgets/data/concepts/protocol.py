"""What every probe set gives dissection: its labels (:class:`Concept`), its batches
(:class:`ProbeBatch`), the :class:`Probe` protocol, and :class:`ProbeBase`, the batching both
the generated probe set and a Broden folder share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ... import limits

__all__ = ["Concept", "ProbeBatch", "Probe", "ProbeBase"]


@dataclass(frozen=True)
class Concept:
    """One label of a probe set.

    Attributes
    ----------
    index : int
        Global label number (0 is reserved for "no label").
    name : str
        ``"red"``, ``"striped@12px"``, ``"striped"``, ``"circle"``, or a Broden label name.
    category : str
        ``"color"``, ``"texture"``, ``"shape"`` (generated), or a Broden category.
    parent : str or None
        The coarser concept this one belongs to (``"striped"`` for ``"striped@12px"``).
    """

    index: int
    name: str
    category: str
    parent: str | None = None

    @property
    def root(self) -> str:
        """The scale-merged name (the name itself when there is no parent)."""
        return self.parent or self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "index": self.index,
            "name": self.name,
            "category": self.category,
            "parent": self.parent,
        }


@dataclass
class ProbeBatch:
    """Images of a probe set with their annotations, batch first.

    Attributes
    ----------
    indices : torch.Tensor
        ``(B,)`` int64 positions of the images in the probe set.
    images : torch.Tensor
        ``(B, 3, S, S)`` pixel space, float in [0, 1].
    masks : torch.Tensor or None
        ``(B, K, M, M)`` int64 label maps (global label numbers, 0 = none); None when not asked.
    mask_categories : list of int
        Category index of each of the K mask layers.
    scalars : torch.Tensor or None
        ``(B, L)`` bool image-level labels (Broden's scene labels), None when there are none.
    present : torch.Tensor
        ``(B, n_categories)`` bool: the image is annotated for that category (the IoU of a
        concept is counted over the images annotated for its category only).
    """

    indices: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor | None
    mask_categories: list[int]
    scalars: torch.Tensor | None
    present: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: str | torch.device) -> ProbeBatch:
        """The same batch on ``device``."""
        dev = torch.device(device)
        return ProbeBatch(
            indices=self.indices.to(dev),
            images=self.images.to(dev),
            masks=None if self.masks is None else self.masks.to(dev),
            mask_categories=list(self.mask_categories),
            scalars=None if self.scalars is None else self.scalars.to(dev),
            present=self.present.to(dev),
            extra=dict(self.extra),
        )


class Probe(Protocol):
    """What dissection needs from a probe set (generated or read from a Broden folder)."""

    labels: list[Concept]
    categories: list[str]
    size: int
    mask_size: int

    def __len__(self) -> int: ...

    def batch(
        self,
        indices: Iterable[int],
        *,
        masks: bool = True,
        device: str | torch.device | None = None,
    ) -> ProbeBatch: ...

    def describe(self) -> dict[str, Any]: ...


class ProbeBase:
    """What the probe sets share: :meth:`batch` (the index check), :meth:`batches` over it.

    A subclass has ``size`` and ``__len__`` and implements ``_batch(idx, masks, device)``: the
    batch of the checked indices ``idx`` (a list of ints).
    """

    size: int

    def __len__(self) -> int:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _batch(
        self, idx: list[int], masks: bool, device: str | torch.device | None
    ) -> ProbeBatch:  # pragma: no cover - subclasses
        raise NotImplementedError

    def batch(
        self,
        indices: Iterable[int],
        *,
        masks: bool = True,
        device: str | torch.device | None = None,
    ) -> ProbeBatch:
        """The images at ``indices`` (any order, repeats allowed) with, when ``masks``, their
        annotations, on ``device``; ``IndexError`` for an index out of range."""
        idx = [limits.as_int(i, "probe image index") for i in indices]
        n = len(self)
        for i in idx:
            if not 0 <= i < n:
                raise IndexError(f"probe image {i} is out of range: valid 0..{n - 1}")
        return self._batch(idx, masks, device)

    def batches(
        self,
        batch_size: int = 32,
        start: int = 0,
        stop: int | None = None,
        *,
        masks: bool = True,
        device: str | torch.device | None = None,
    ) -> Iterator[ProbeBatch]:
        """Images ``start..stop`` in batches, made lazily one batch at a time."""
        bs = limits.check_batch(batch_size, self.size, self.size, name="batch_size")
        stop = len(self) if stop is None else min(limits.as_int(stop, "stop"), len(self))
        for lo in range(limits.as_int(start, "start"), stop, bs):
            yield self.batch(range(lo, min(lo + bs, stop)), masks=masks, device=device)
