"""Labelled image batches for dataset passes that measure a network (ablation, dead units).

:func:`dataset_batches` reads a dataset in any of the forms the project knows and yields
``(model-input batch, labels or None)`` pairs, so a method that needs labels (accuracy) and one
that does not (peak activations) read their data the same way.

Examples
--------
>>> import torch
>>> from cnnvis_widgets.models.handle import ModelHandle
>>> h = ModelHandle(torch.nn.Conv2d(1, 2, 3), name="tiny", input_size=8, mean=(0.5,), std=(0.5,))
>>> [(tuple(x.shape), y.tolist()) for x, y in dataset_batches(
...     h, (torch.zeros(3, 1, 8, 8), [0, 1, 1]), batch=2)]
[((2, 1, 8, 8), [0, 1]), ((1, 1, 8, 8), [1])]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .. import limits
from ..models.handle import ModelHandle

__all__ = ["dataset_batches"]


def dataset_batches(
    handle: ModelHandle, dataset: Any, batch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(model-input batch, labels or None)`` pairs from ``dataset``, ``batch`` images at a time.

    ``dataset`` is a pair ``(pixels, labels)`` (a pixel-space tensor ``(N, C, H, W)`` in
    ``[0, 1]`` at the model's input size and ``N`` integer labels, or None), an object with a
    ``tensors()`` method giving that pair (:class:`cnnvis_widgets.data.digits.Digits`) or with
    ``pixels`` (or ``images``) tensor and ``labels`` attributes, a pixel tensor alone, or anything
    :func:`cnnvis_widgets.core.topk.top_k_patches` reads (an image dataset, a folder, a list of
    photos), which has no labels.
    """
    pixels, labels = _split(dataset)
    if isinstance(pixels, torch.Tensor):
        if pixels.dim() != 4 or pixels.shape[1] != handle.in_channels:
            raise ValueError(
                f"pixels must be (N, {handle.in_channels}, H, W) pixel-space images, got shape "
                f"{tuple(pixels.shape)}"
            )
        limits.check_pixel_range(pixels, "pixels")
        if labels is not None and len(labels) != pixels.shape[0]:
            raise ValueError(f"{len(labels)} labels for {pixels.shape[0]} images")
        for i in range(0, pixels.shape[0], batch):
            x = handle.normalize(pixels[i : i + batch].float().to(handle.device))
            yield x, None if labels is None else labels[i : i + batch].to(handle.device)
        return
    from .topk import _items, to_pixels

    items, _, _, _ = _items(pixels)
    chunk: list[torch.Tensor] = []
    for _, image in items:
        chunk.append(to_pixels(image, handle.input_size, handle))
        if len(chunk) == batch:
            yield handle.normalize(torch.cat(chunk).to(handle.device)), None
            chunk = []
    if chunk:
        yield handle.normalize(torch.cat(chunk).to(handle.device)), None


def _split(dataset: Any) -> tuple[Any, torch.Tensor | None]:
    if isinstance(dataset, tuple) and len(dataset) == 2 and isinstance(dataset[0], torch.Tensor):
        return dataset[0], None if dataset[1] is None else torch.as_tensor(dataset[1]).long()
    tensors = getattr(dataset, "tensors", None)  # data.digits.Digits: (pixels, labels)
    if callable(tensors):
        pixels, labels = tensors()
        return pixels, None if labels is None else torch.as_tensor(labels).long()
    for name in ("pixels", "images"):
        value = getattr(dataset, name, None)
        if isinstance(value, torch.Tensor):
            labels = getattr(dataset, "labels", None)
            return value, None if labels is None else torch.as_tensor(labels).long()
    return dataset, None
