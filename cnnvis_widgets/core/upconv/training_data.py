"""The images a decoder trains on: the packaged photos augmented by default, or the user's.

:func:`training_images` turns what the user passes (nothing, a folder, an ``ImageDataset``, a
list of PIL images) into a sequence of images; :class:`TrainingImages` draws random batches of
pixel images from it (or from a pixel tensor), with flips, decoding each item once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ...imaging import pil_to_tensor

__all__ = ["TrainingImages", "training_images"]


def _square_tensor(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)
    return (pil_to_tensor(img)[0] * 255).round().to(torch.uint8)


class TrainingImages:
    """Random batches of pixel images ``(B, C, S, S)`` from a dataset, with flips and shifts.

    Items are decoded on first use and kept as uint8 (a few MB for hundreds of images).
    """

    def __init__(self, source: Any, size: int, channels: int, seed: int) -> None:
        self.size, self.channels = int(size), int(channels)
        self.g = torch.Generator().manual_seed(int(seed))
        self.tensor: torch.Tensor | None = None
        self.items: list[Any] = []
        self.key = ""
        if isinstance(source, torch.Tensor):
            t = source if source.dim() == 4 else source.unsqueeze(0)
            if t.shape[1] != channels:
                raise ValueError(
                    f"training images have {t.shape[1]} channels, the model takes {channels}"
                )
            t = t.float()
            if t.shape[-1] != size or t.shape[-2] != size:
                t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
            self.tensor = (t.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            self.key = f"tensor{tuple(t.shape)}"
            self.n = t.shape[0]
        else:
            self.items = list(training_images(source, size))
            self.key = getattr(source, "key", "") or f"{type(source).__name__}:{len(self.items)}"
            self.n = len(self.items)
        if self.n == 0:
            raise ValueError("the training set is empty")
        self.cache: dict[int, torch.Tensor] = {}
        self.perm: list[int] = []

    def get(self, i: int) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[i]
        if i not in self.cache:
            item = self.items[i]
            img = item[1] if isinstance(item, tuple) else item
            if not isinstance(img, Image.Image):
                raise TypeError(
                    f"training item {i} is a {type(img).__name__}; expected a PIL image or "
                    "(name, PIL image)"
                )
            self.cache[i] = _square_tensor(img, self.size, self.channels)
        return self.cache[i]

    def batch(self, n: int) -> torch.Tensor:
        idx = []
        for _ in range(n):
            if not self.perm:
                self.perm = torch.randperm(self.n, generator=self.g).tolist()
            idx.append(self.perm.pop())
        x = torch.stack([self.get(i) for i in idx]).float().div_(255)
        flip = torch.rand(n, generator=self.g) < 0.5
        if flip.any():
            x[flip] = x[flip].flip(-1)
        return x


def training_images(dataset: Any = None, size: int = 128) -> Sequence[Any]:
    """The training set as a sequence of PIL images or ``(name, image)`` pairs.

    ``None`` / ``"default"`` / ``"augmented"``: the packaged photos with heavy augmentation
    (:func:`~cnnvis_widgets.data.datasets.augmented_samples`, 512 images); a folder path, an
    ``ImageDataset`` or ``"photos"``: that dataset; a list of PIL images: as is.
    """
    from ...data import datasets as D

    if dataset is None:
        return D.augmented_samples(n=512, size=int(size), seed=0)
    ds = D.as_dataset(dataset)
    if ds is not None:
        return ds
    if isinstance(dataset, Image.Image):
        return [dataset]
    if isinstance(dataset, Sequence) and not isinstance(dataset, (str, bytes)):
        return dataset
    raise TypeError(
        f"cannot train on a {type(dataset).__name__}: pass None (the packaged photos, augmented), "
        "a folder of images, an ImageDataset, a list of PIL images or a pixel tensor (N, C, H, W)"
    )
