"""Judge feature-visualization pictures with networks that did not make them.

A class image made by activation maximization on one network can be judged three ways:

- **self-recognition**: the network that made it classifies it (top-1 and the target's
  probability). Nearly every method scores high here: it is what was optimized.
- **transferability** (Fel et al. 2023, MaCo, the benchmark's "transferability" score): another
  network classifies it (e.g. images made on EfficientNet-Lite0 classified by Lite2 and back). An
  image that only fools its maker (adversarial high-frequency patterns) does not transfer; one
  that shows the class's features does.
- **plausibility** (after MaCo's "plausibility" score): how close the image is to real photos of
  its class, measured as a cosine distance ``1 - cos`` in a network's penultimate features (the
  input of its last linear layer: the pooled features a classifier reads). The references are the
  packaged photos labelled with the class (:data:`PHOTO_CLASSES`: cat, coffee, ...); for a class
  no packaged photo shows, the nearest packaged photo (then the distance says how far the image is
  from *any* natural photo here).

The class images come from the activation-maximization core
(:func:`~.activation_max.maximize_steps` with a class-logit objective and a preset), all classes
in one batch. Every judge sees a pixel image the way :func:`~.activation_max.evaluate` feeds it:
resized (bilinear) to the judge's input size, then normalized with the judge's statistics.

Examples
--------
>>> from cnnvis_widgets import load_model                          # doctest: +SKIP
>>> lite0, lite2 = load_model(), load_model("efficientnet_lite2")  # doctest: +SKIP
>>> made = class_images(lite0, [281, 967], preset="lucid", steps=64)  # doctest: +SKIP
>>> recognition(lite2, made.images, made.classes).accuracy        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..data.samples import sample_images
from ..models.handle import ModelHandle
from . import activation_max as am
from .blocks.objectives import class_logit
from .blocks.optimize import Step
from .blocks.runs import finish

__all__ = [
    "PHOTO_CLASSES",
    "ClassImages",
    "Recognition",
    "Plausibility",
    "class_images_steps",
    "class_images",
    "recognition",
    "transferability",
    "penultimate_layer",
    "penultimate_features",
    "photo_features",
    "plausibility",
]

#: The ImageNet-1k classes each packaged photo shows (a person's labels, not a network's guess):
#: photo name -> class indices. Photos of no ImageNet class (astronaut, coins, grace_hopper's
#: portrait) are left out; they still serve as "nearest packaged photo" references.
PHOTO_CLASSES: dict[str, tuple[int, ...]] = {
    "cat": (281, 282, 285),  # tabby, tiger cat, Egyptian cat (Chelsea is a tabby-like cat)
    "coffee": (967, 968),  # espresso, cup
    "motorcycle": (665, 670),  # moped, motor scooter
    "rocket": (657, 812),  # missile, space shuttle
    "china": (698,),  # palace
    "flower": (985,),  # daisy
    "camera": (872,),  # tripod
}


@dataclass
class ClassImages:
    """Class images made by one network: what :func:`class_images_steps` returns.

    Attributes
    ----------
    images : torch.Tensor
        ``(B, C, S, S)`` pixels in [0, 1] on the CPU, image ``i`` made for ``classes[i]``.
    classes : list of int
    preset : str
    model : str
        The maker's name.
    fingerprint : str
        The maker's content fingerprint.
    steps : int
        Steps made.
    activation : torch.Tensor
        The maker's target logit of each final image ``(B,)``.
    """

    images: torch.Tensor
    classes: list[int]
    preset: str
    model: str
    fingerprint: str
    steps: int
    activation: torch.Tensor


@dataclass
class Recognition:
    """How a network classifies images made for known classes.

    Attributes
    ----------
    judge : str
        The classifying network's name.
    classes : list of int
        The target class of each image.
    top1 : list of int
        The judge's most probable class for each image.
    target_prob : list of float
        The judge's softmax probability of the target class, per image.
    """

    judge: str
    classes: list[int]
    top1: list[int]
    target_prob: list[float]

    @property
    def accuracy(self) -> float:
        """Fraction of images whose top-1 class is their target."""
        hits = [a == b for a, b in zip(self.top1, self.classes)]
        return sum(hits) / len(hits) if hits else 0.0

    @property
    def mean_target_prob(self) -> float:
        """Mean probability of the target class."""
        return sum(self.target_prob) / len(self.target_prob) if self.target_prob else 0.0


@dataclass
class Plausibility:
    """Cosine distances, in a network's penultimate features, from images to real photos.

    Attributes
    ----------
    judge : str
    classes : list of int
    distance : list of float
        Per image, ``1 - cos`` to its nearest reference photo (0: same direction; 1:
        orthogonal features).
    reference : list of str
        The photo each distance was measured to.
    of_class : list of bool
        True when that photo shows the image's class, False when no packaged photo does and the
        nearest packaged photo was used.
    """

    judge: str
    classes: list[int]
    distance: list[float]
    reference: list[str]
    of_class: list[bool] = field(default_factory=list)

    @property
    def mean_distance(self) -> float:
        """Mean distance over the images."""
        return sum(self.distance) / len(self.distance) if self.distance else 0.0


def _classes(handle: ModelHandle, classes: Sequence[int]) -> list[int]:
    out = [int(c) for c in classes]
    if not out:
        raise ValueError("give at least one class")
    for c in out:
        handle.check_class(c)
    return out


def class_images_steps(
    handle: ModelHandle,
    classes: Sequence[int],
    *,
    preset: str = "lucid",
    steps: int | None = None,
    size: int | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Generator[Step, None, ClassImages | None]:
    """Make one class image per class on ``handle`` (one batch), yielding every step.

    Activation maximization of the class logits with ``preset`` (:data:`~.activation_max.PRESETS`;
    ``steps``, ``size`` and ``overrides`` replace the preset's), through
    :func:`~.activation_max.maximize_steps`. Returns the :class:`ClassImages` (None when no step
    was made).

    Raises
    ------
    IndexError
        A class out of the model's range.
    ValueError, KeyError
        No class, or an unknown preset.
    """
    cls = _classes(handle, classes)
    result = yield from am.maximize_steps(
        handle,
        class_logit(cls),
        preset=preset,
        batch=len(cls),
        steps=steps,
        size=size,
        seed=seed,
        **overrides,
    )
    if result is None:
        return None
    return ClassImages(
        result.image,
        cls,
        preset,
        handle.name,
        handle.fingerprint(),
        len(result.history),
        result.activation,
    )


def class_images(handle: ModelHandle, classes: Sequence[int], **kwargs: Any) -> ClassImages:
    """:func:`class_images_steps` run to the end (same arguments).

    Raises
    ------
    RuntimeError
        No step was made.
    """
    made = finish(class_images_steps(handle, classes, **kwargs))
    if made is None:
        raise RuntimeError("no class image was made (steps=0?)")
    return made


def _fed(handle: ModelHandle, pixels: torch.Tensor) -> torch.Tensor:
    """``pixels`` (B, C, H, W in [0, 1]) as ``handle`` takes them: resized (bilinear) to its
    input size, as :func:`~.activation_max.evaluate` feeds an AM image, then normalized."""
    if pixels.dim() != 4 or pixels.shape[1] != handle.in_channels:
        raise ValueError(
            f"expected pixels (B, {handle.in_channels}, H, W), got {tuple(pixels.shape)}"
        )
    x = pixels.to(handle.device, torch.float32)
    size = (int(handle.input_size[0]), int(handle.input_size[1]))
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return handle.normalize(x)


@torch.no_grad()
def recognition(
    judge: ModelHandle, pixels: torch.Tensor, classes: Sequence[int], batch_size: int = 16
) -> Recognition:
    """How ``judge`` classifies ``pixels`` made for ``classes`` (one class per image).

    ``pixels`` are fed as :func:`~.activation_max.evaluate` feeds them (resized to the judge's
    input size). Works for real photos too (``judge.to_pixels(photo)``).

    Examples
    --------
    >>> r = recognition(lite2, made.images, made.classes)   # doctest: +SKIP
    >>> r.accuracy, r.mean_target_prob                      # doctest: +SKIP
    """
    cls = _classes(judge, classes)
    if len(cls) != pixels.shape[0]:
        raise ValueError(f"{pixels.shape[0]} images but {len(cls)} classes")
    top1: list[int] = []
    target: list[float] = []
    for i in range(0, len(cls), batch_size):
        probs = judge.logits(_fed(judge, pixels[i : i + batch_size])).float().softmax(1)
        top1 += [int(v) for v in probs.argmax(1)]
        idx = torch.tensor(cls[i : i + batch_size], device=probs.device)
        target += [float(v) for v in probs.gather(1, idx[:, None])[:, 0]]
    return Recognition(judge.name, cls, top1, target)


def transferability(made: ClassImages, judge: ModelHandle) -> Recognition:
    """:func:`recognition` of ``made``'s images by ``judge`` (another network: MaCo's
    transferability; the maker itself: self-recognition)."""
    return recognition(judge, made.images, made.classes)


def penultimate_layer(handle: ModelHandle) -> str:
    """Name of ``handle``'s last linear layer, whose *input* are its penultimate features.

    Raises
    ------
    ValueError
        The network has no linear layer.
    """
    linear = [li for li in handle.layers.values() if li.kind == "linear"]
    if not linear:
        raise ValueError(f"model {handle.name!r} has no linear layer: no penultimate features")
    return max(linear, key=lambda li: li.order).name


@torch.no_grad()
def penultimate_features(
    handle: ModelHandle, pixels: torch.Tensor, batch_size: int = 16
) -> torch.Tensor:
    """``(B, D)`` features entering ``handle``'s last linear layer for ``pixels`` (fed as
    :func:`recognition` feeds them), on the CPU."""
    name = penultimate_layer(handle)
    out: list[torch.Tensor] = []
    with handle.pinned():
        module = handle.module(name)
        seen: list[torch.Tensor] = []
        hook = module.register_forward_pre_hook(
            lambda m, args: seen.append(args[0].detach().flatten(1).float().cpu())
        )
        try:
            for i in range(0, pixels.shape[0], batch_size):
                seen.clear()
                handle.net(_fed(handle, pixels[i : i + batch_size]))
                out.append(seen[-1])
        finally:
            hook.remove()
    return torch.cat(out)


def photo_features(handle: ModelHandle) -> dict[str, torch.Tensor]:
    """Penultimate features ``(D,)`` of every packaged photo available, preprocessed as the
    model takes a photo (resize, centre crop)."""
    photos = sample_images()
    if not photos:
        raise RuntimeError("no packaged photo is available (scikit-image is missing?)")
    pixels = torch.cat([handle.to_pixels(img) for img in photos.values()])
    feats = penultimate_features(handle, pixels)
    return dict(zip(photos, feats))


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between the rows of ``a`` (N, D) and ``b`` (M, D): (N, M), clamped to >= 0."""
    a = F.normalize(a.double(), dim=1)
    b = F.normalize(b.double(), dim=1)
    return (1 - a @ b.T).clamp_min(0)


def plausibility(
    judge: ModelHandle,
    pixels: torch.Tensor,
    classes: Sequence[int],
    references: dict[str, torch.Tensor] | None = None,
) -> Plausibility:
    """Cosine distance in ``judge``'s penultimate features from each image to real photos.

    Parameters
    ----------
    judge : ModelHandle
    pixels : torch.Tensor
        ``(B, C, H, W)`` in [0, 1], image ``i`` made for ``classes[i]``.
    classes : sequence of int
    references : dict, optional
        ``{photo name: features}`` (:func:`photo_features` of ``judge``, computed when not
        given; pass it to judge several batches).

    Returns
    -------
    Plausibility
        Per image, the distance to the nearest photo of its class (:data:`PHOTO_CLASSES`), else
        to the nearest packaged photo.
    """
    cls = _classes(judge, classes)
    if len(cls) != pixels.shape[0]:
        raise ValueError(f"{pixels.shape[0]} images but {len(cls)} classes")
    refs = photo_features(judge) if references is None else references
    names = list(refs)
    dist = _cosine_distance(penultimate_features(judge, pixels), torch.stack(list(refs.values())))
    distance, reference, of_class = [], [], []
    for i, c in enumerate(cls):
        own = [j for j, n in enumerate(names) if c in PHOTO_CLASSES.get(n, ())]
        pool = own or list(range(len(names)))
        j = min(pool, key=lambda k: float(dist[i, k]))
        distance.append(float(dist[i, j]))
        reference.append(names[j])
        of_class.append(bool(own))
    return Plausibility(judge.name, cls, distance, reference, of_class)
