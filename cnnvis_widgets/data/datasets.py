"""Image datasets for dataset passes (top-k patches, decoder training): offline by default.

Every dataset here is an :class:`ImageDataset`: a sequence of ``(name, image)`` pairs, where
``image`` is an RGB PIL image, that can be iterated (``for name, img in ds``), indexed
(``ds[i]``) and measured (``len(ds)``), and that carries a stable ``key`` string describing its
content (used to name cached results). Items are produced lazily, one at a time, so a pass over
a dataset never holds more than the current batch in memory.

* :func:`augmented_samples`: the default. The packaged sample photos
  (:func:`cnnvis_widgets.data.sample_images`) plus deterministic augmentations of them (random
  resized crops, horizontal flips, colour jitter), so that a unit has hundreds of candidate
  images without a download. Item ``i`` depends only on ``(seed, i, size)``: the same call gives
  the same images, on any machine, in any order of access.
* :func:`sample_photos`: the packaged photos themselves, centre-cropped to a square.
* :func:`image_folder`: every image file in a folder of yours (sorted by path).

Examples
--------
>>> ds = augmented_samples(n=300, size=224, seed=0)
>>> len(ds)
300
>>> name, img = ds[42]
>>> img.size
(224, 224)
>>> for name, img in augmented_samples(n=4, size=64):   # (name, PIL image) pairs
...     print(name, img.size)                              # doctest: +SKIP
cat 64x64 ...
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import overload

from PIL import Image, ImageEnhance, ImageOps

from .. import limits
from .samples import sample_images

__all__ = [
    "ImageDataset",
    "augmented_samples",
    "sample_photos",
    "image_folder",
    "as_dataset",
    "IMAGE_EXTENSIONS",
    "file_digest",
]

#: File name endings :func:`image_folder` reads (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageDataset(Sequence[tuple[str, Image.Image]]):
    """A lazily produced, indexable sequence of ``(name, RGB PIL image)`` pairs.

    Parameters
    ----------
    names : sequence of str
        One unique name per item.
    loader : callable
        ``index -> PIL image`` (called each time an item is read: nothing is kept).
    key : str
        Stable description of the content, for cache keys (same key, same images).

    Examples
    --------
    >>> from PIL import Image
    >>> ds = ImageDataset(["a", "b"], lambda i: Image.new("RGB", (8, 8)), key="blank")
    >>> [name for name, _ in ds]
    ['a', 'b']
    """

    def __init__(self, names: Sequence[str], loader: Callable[[int], Image.Image], key: str):
        self._names = list(names)
        self._loader = loader
        self.key = str(key)

    @property
    def names(self) -> list[str]:
        """The item names, in order."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    @overload
    def __getitem__(self, index: int) -> tuple[str, Image.Image]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, Image.Image]]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        n = len(self._names)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"image {index} is out of range: the dataset has {n} images")
        return self._names[i], self._loader(i)

    def __iter__(self) -> Iterator[tuple[str, Image.Image]]:
        for i in range(len(self._names)):
            yield self[i]

    def image(self, index: int) -> Image.Image:
        """Only the image of item ``index``."""
        return self[index][1]

    def __repr__(self) -> str:
        return f"ImageDataset({self.key!r}, {len(self)} images)"


def _square(img: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square and resize to ``size`` (bicubic)."""
    return ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BICUBIC)


def _augment(img: Image.Image, rng: random.Random, size: int) -> Image.Image:
    """Random resized crop (8-100% of the area, aspect 3/4-4/3), flip, colour jitter."""
    w, h = img.size
    area = w * h
    box = (0, 0, w, h)
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = round(math.sqrt(target * aspect))
        ch = round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = rng.randint(0, w - cw)
            y0 = rng.randint(0, h - ch)
            box = (x0, y0, x0 + cw, y0 + ch)
            break
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=box)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    # colour jitter, in a random order of the three enhancements
    ops = [
        (ImageEnhance.Brightness, rng.uniform(0.7, 1.3)),
        (ImageEnhance.Contrast, rng.uniform(0.7, 1.3)),
        (ImageEnhance.Color, rng.uniform(0.6, 1.4)),
    ]
    rng.shuffle(ops)
    for enhance, factor in ops:
        out = enhance(out).enhance(factor)
    hue = rng.uniform(-0.04, 0.04)
    if abs(hue) > 1e-3:
        hsv = out.convert("HSV")
        hch, s, v = hsv.split()
        shift = round(hue * 255)
        hch = hch.point(lambda p: (p + shift) % 256)
        out = Image.merge("HSV", (hch, s, v)).convert("RGB")
    return out


def sample_photos(size: int | None = 224) -> ImageDataset:
    """The packaged sample photos as a dataset (centre-cropped squares of side ``size``).

    ``size=None`` keeps each photo's own size and aspect.

    Examples
    --------
    >>> ds = sample_photos(size=128)
    >>> "cat" in ds.names
    True
    """
    size = None if size is None else limits.check_side(size)
    photos = sample_images()
    names = sorted(photos)

    def load(i: int) -> Image.Image:
        img = photos[names[i]]
        return img.copy() if size is None else _square(img, size)

    return ImageDataset(names, load, key=f"photos(size={size},{'+'.join(names)})")


def augmented_samples(n: int = 256, size: int = 224, seed: int = 0) -> ImageDataset:
    """The default offline dataset: the sample photos plus deterministic augmentations.

    The first items are the photos themselves (centre crop); the others are random resized crops
    (8-100% of the photo's area), horizontal flips and colour jitter (brightness, contrast,
    saturation, a small hue shift) of the photos in turn. Item ``i`` depends only on
    ``(seed, i, size)`` and the installed photos, so the dataset is repeatable and can be read in
    any order.

    Parameters
    ----------
    n : int
        Number of images (at least 1).
    size : int
        Side of the square images in pixels (at least 8).
    seed : int
        Seed of the augmentations.

    Returns
    -------
    ImageDataset
        ``(name, RGB PIL image)`` pairs; names look like ``"cat"`` (the photo) and
        ``"cat~aug0012"`` (augmentation 12).

    Examples
    --------
    >>> ds = augmented_samples(n=64, size=96)
    >>> ds[0][0], ds[12][0], ds[12][1].size                       # doctest: +SKIP
    ('astronaut', 'china~aug0012', (96, 96))
    """
    n = limits.check_int(n, "n", minimum=1, limit="MAX_DATASET_IMAGES")
    size, seed = limits.check_side(size), limits.as_int(seed, "seed")
    photos = sample_images()
    if not photos:
        raise RuntimeError(
            "no sample photo is available (scikit-image is missing?); pass your own images with "
            "image_folder(path)"
        )
    order = sorted(photos)
    p = len(order)
    names = [order[i] if i < p else f"{order[i % p]}~aug{i:04d}" for i in range(n)]

    def load(i: int) -> Image.Image:
        img = photos[order[i % p]]
        if i < p:
            return _square(img, size)
        return _augment(img, random.Random(f"cnnvis-aug:{seed}:{i}"), size)

    return ImageDataset(
        names, load, key=f"augmented(n={n},size={size},seed={seed},{'+'.join(order)})"
    )


def image_folder(path: str | Path, size: int | None = None, recursive: bool = True) -> ImageDataset:
    """Every image file under ``path`` (sorted by relative path), as an :class:`ImageDataset`.

    Parameters
    ----------
    path : str or Path
        A folder. Files ending in one of :data:`IMAGE_EXTENSIONS` are read.
    size : int, optional
        Centre-crop each image to a square of this side; None keeps them as they are (the
        consumer, e.g. ``handle.preprocess``, resizes).
    recursive : bool
        Look into sub-folders too.

    Raises
    ------
    FileNotFoundError
        The folder does not exist, or holds no image file (the message says which endings count).

    Examples
    --------
    >>> ds = image_folder("~/Pictures/dogs")                          # doctest: +SKIP
    >>> for name, img in ds: ...                                     # doctest: +SKIP
    """
    size = None if size is None else limits.check_side(size)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(
        f for f in root.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise FileNotFoundError(
            f"no image file in {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)}"
            f"{' in sub-folders too' if recursive else ''})"
        )
    readable, skipped = [], []
    for f in files:  # headers only: cheap, and a file that is no image is left out up front
        try:
            with Image.open(f):
                readable.append(f)
        except Exception:  # noqa: BLE001 - PIL raises many types for bad files
            skipped.append(f.name)
    if skipped:
        warnings.warn(
            f"{len(skipped)} file(s) in {str(root)!r} are not readable images and are skipped: "
            + ", ".join(skipped[:5])
            + (" ..." if len(skipped) > 5 else ""),
            stacklevel=2,
        )
    if not readable:
        raise FileNotFoundError(
            f"no readable image in {str(root)!r} ({len(files)} file(s) skipped)"
        )
    files = readable
    names = [f.relative_to(root).as_posix() for f in files]

    def load(i: int) -> Image.Image:
        from .images import ImageError, load_image

        try:
            img = load_image(files[i])
        except ImageError as exc:
            msg = str(exc) if str(files[i]) in str(exc) else f"{files[i]}: {exc}"
            raise ImageError(f"{msg} (remove or replace that file in the folder)") from None
        return img if size is None else _square(img, int(size))

    digest = hashlib.blake2b(digest_size=16)
    for name, f in zip(names, files):
        digest.update(f"{name}\0{file_digest(f)}\n".encode())
    key = f"folder(n={len(files)},size={size},content={digest.hexdigest()})"
    return ImageDataset(names, load, key=key)


_FILE_DIGESTS: dict[tuple[str, int, int, int, int, int], str] = {}
_FILE_DIGESTS_LOCK = threading.Lock()


def file_digest(path: str | Path) -> str:
    """BLAKE2b of the bytes of the file ``path``, memoized by ``(path, size, mtime_ns,
    ctime_ns, inode, device)``: an unchanged folder is keyed again without reading its files; a
    file replaced or rewritten is read again, even when its size and modification time were
    kept (any write moves the change time, which no program can set back)."""
    p = Path(path).resolve()
    st = p.stat()
    memo = (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    with _FILE_DIGESTS_LOCK:
        got = _FILE_DIGESTS.get(memo)
    if got is not None:
        return got
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    out = h.hexdigest()
    with _FILE_DIGESTS_LOCK:
        if len(_FILE_DIGESTS) > 100_000:
            _FILE_DIGESTS.clear()
        _FILE_DIGESTS[memo] = out
    return out


def as_dataset(data: object) -> ImageDataset | None:
    """An :class:`ImageDataset` for ``data`` when it names one, else None.

    Understood: an :class:`ImageDataset` (returned as is), a folder path (``str``/``Path``),
    ``"augmented"`` / ``"default"`` (:func:`augmented_samples` with its defaults) and
    ``"photos"`` (:func:`sample_photos`). Anything else (a plain iterable of images) gives None.
    """
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, str) and data in ("augmented", "default"):
        return augmented_samples()
    if isinstance(data, str) and data == "photos":
        return sample_photos()
    if isinstance(data, (str, Path)):
        return image_folder(data)
    return None
