"""ImageNet-1k facts: the class names (read from torchvision's weight metadata, no network
needed) and the input spec of a model trained on it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_SPEC", "imagenet_class_names", "input_spec"]

#: The usual ImageNet normalization (per RGB channel, on [0, 1] pixels).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_spec(
    size: int = 224,
    resize: int = 256,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> dict:
    """A model's input spec, as :func:`cnnvis_widgets.load_model` reads it: resize the short
    side to ``resize`` (``interpolation``), centre-crop ``size``, then ``(x - mean) / std``.

    Examples
    --------
    >>> input_spec(interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)["mean"]
    (0.5, 0.5, 0.5)
    """
    return {
        "size": int(size),
        "resize": int(resize),
        "interpolation": str(interpolation),
        "mean": tuple(float(v) for v in mean),
        "std": tuple(float(v) for v in std),
    }


#: Input spec used when torchvision publishes no weights (and so no transforms) for an arch.
IMAGENET_SPEC: dict = input_spec()


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def imagenet_class_names() -> list[str]:
    """Return the 1000 ImageNet-1k class names, in class-index order.

    The list is a fresh copy of a cached tuple, so callers may modify it.

    Returns
    -------
    list of str
        ``names[i]`` is the human-readable name of logit ``i`` (e.g. 281 is ``"tabby"``).

    Examples
    --------
    >>> names = imagenet_class_names()
    >>> len(names), names[281]
    (1000, 'tabby')
    """
    return list(_names())
