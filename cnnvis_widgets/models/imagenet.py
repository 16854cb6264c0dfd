"""ImageNet-1k class names, read from torchvision's weight metadata (no network needed)."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["imagenet_class_names"]


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
