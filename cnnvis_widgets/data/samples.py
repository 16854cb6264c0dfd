"""Natural photos that ship inside installed packages: nothing is ever downloaded.

Sources, each read straight from the package's own data directory (located without importing
the package, so the slow ``sklearn`` import and ``skimage``'s pooch fetcher are never touched):

- scikit-image (a dependency), only the files bundled in ``skimage/data`` (many ``skimage.data``
  images are fetched from the network on first use; those are not offered here);
- scikit-learn's ``load_sample_images`` files (``china``, ``flower``), if installed;
- matplotlib's sample data (``grace_hopper``), if installed.

A missing optional package just removes its images. Grayscale photos are converted to RGB.
"""

from __future__ import annotations

import importlib.util
from functools import cache, lru_cache
from pathlib import Path

from PIL import Image

__all__ = ["SAMPLES", "sample_image", "sample_images"]

#: name -> (package, path inside the package, description). ImageNet classes in the description
#: are EfficientNet-Lite0's top-1 predictions, measured.
SAMPLES: dict[str, tuple[str, str, str]] = {
    "cat": ("skimage", "data/chelsea.png", "Chelsea the cat (tiger cat / Egyptian cat / tabby)"),
    "astronaut": ("skimage", "data/astronaut.png", "Eileen Collins in a NASA suit"),
    "coffee": ("skimage", "data/coffee.png", "a cup of coffee (espresso)"),
    "rocket": ("skimage", "data/rocket.jpg", "a rocket on the launch pad (missile)"),
    "motorcycle": ("skimage", "data/motorcycle_left.png", "a red motorcycle (moped)"),
    "camera": ("skimage", "data/camera.png", "the cameraman, grayscale (tripod)"),
    "coins": ("skimage", "data/coins.png", "Greek coins on a table, grayscale"),
    "china": ("sklearn", "datasets/images/china.jpg", "the Summer Palace, Beijing (palace)"),
    "flower": ("sklearn", "datasets/images/flower.jpg", "an orange dahlia (daisy)"),
    "grace_hopper": (
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "Rear Admiral Grace Hopper (academic gown / military uniform)",
    ),
}


def _package_dir(package: str) -> Path | None:
    """Directory of an installed top-level package, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sample_path(name: str) -> Path | None:
    package, relative, _ = SAMPLES[name]
    root = _package_dir(package)
    if root is None:
        return None
    path = root / relative
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def _available() -> dict[str, Path]:
    found = {name: _sample_path(name) for name in SAMPLES}
    return {name: path for name, path in found.items() if path is not None}


@cache
def _load(name: str) -> Image.Image:
    with Image.open(_available()[name]) as im:
        return im.convert("RGB")


def sample_image(name: str) -> Image.Image:
    """Return one bundled photo as an RGB PIL image (a fresh copy, free to modify).

    Parameters
    ----------
    name : str
        One of the keys of :func:`sample_images`, e.g. ``"cat"``, ``"astronaut"``, ``"coffee"``.

    Raises
    ------
    KeyError
        Unknown name (or one whose package is not installed); the message lists valid names.

    Examples
    --------
    >>> img = sample_image("cat")
    >>> img.mode, img.size
    ('RGB', (451, 300))
    """
    available = _available()
    if name not in available:
        missing = name in SAMPLES
        why = f"its package {SAMPLES[name][0]!r} is not installed" if missing else "unknown name"
        raise KeyError(f"sample image {name!r}: {why}; available: {', '.join(available)}")
    return _load(name).copy()


def sample_images() -> dict[str, Image.Image]:
    """Return every bundled photo available here, ``{name: RGB PIL image}``.

    The dict and its images are fresh copies of a cache, so callers may modify them.

    Examples
    --------
    >>> images = sample_images()
    >>> "cat" in images and images["cat"].mode == "RGB"
    True
    """
    return {name: sample_image(name) for name in _available()}
