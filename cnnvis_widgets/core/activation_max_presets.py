"""The recipes of activation maximization: :class:`AMSettings` (read at every step), the
literature's :data:`PRESETS` and the transforms they apply (:func:`settings_transform`).

Re-exported by :mod:`cnnvis_widgets.core.activation_max`, where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..models.handle import ModelHandle
from .blocks.params import ImageParam, fft_image, maco_image, pixel_image
from .blocks.settings import Settings, from_preset, knob, pick_preset
from .blocks.transforms import Transform, random_affine

__all__ = [
    "AMSettings",
    "FED_SIZES",
    "Preset",
    "PRESETS",
    "PARAMS",
    "ParamBuilder",
    "preset_settings",
    "settings_transform",
]


@dataclass
class AMSettings(Settings):
    """Settings read at every step: change them while a run goes on and the next step uses them.

    Attributes
    ----------
    steps : int
        Number of steps of the run.
    lr : float
        Learning rate (Adam), or the mean pixel change per step (``"sgd"``, normalized gradient).
    pad, jitter, scale, rotate, jitter2 : transformation robustness (Lucid's standard transforms:
        pad 12, jitter 8, scale +-0.1, rotate +-10 deg, jitter 4; 0 turns a stage off).
    l2_decay : float
        Shrink towards the neutral pixel by this fraction every step (Yosinski's theta_decay).
    blur_sigma, blur_every : Gaussian blur of this width every that many steps.
    clip_norm_pct : float
        Reset pixels whose colour norm is below this percentile.
    clip_contrib_pct : float
        Reset pixels whose contribution to the objective is below this percentile.
    tv_weight : float
        Weight of the total-variation loss term.
    l2_weight : float
        Weight of the L2 penalty loss term (Simonyan et al.).
    diversity : float
        Weight of the diversity term across the batch (on the objective's layer).
    accentuation : float
        Feature accentuation (Hamblin et al. 2023): when the run starts from a photo, weight of
        the normalized feature distance to the photo at an earlier layer
        (:func:`~.blocks.regularizers.feature_distance`); no effect without a photo. The
        default 30 keeps the photo recognizable while the unit rises several-fold (measured on
        Lite0, ``_blocks.8`` unit 12 from the cat: 8x the photo's activation at a quarter of
        plain AM's feature distance); 0 is plain AM from the photo.
    fed_size : str
        Which size the network sees. ``"model"`` (default, as Lucid/Lucent): after the
        transforms the image is resampled to the model's input size (224 x 224 for Lite0), in
        the same single bilinear warp as the transforms, so objects are painted at the scale the
        network was trained on and the image stays that class when shown to the model as a
        photo. ``"param"``: the network sees the optimized image at its own size (plus the
        transforms' padding), nothing is resampled (the earlier default). Either way the
        returned image is at the parameterization's size.
    """

    steps: int = 512
    lr: float = 0.05
    # the widget's sliders: range, help, label, step (knob); transforms first, then regularizers
    pad: int = knob(12, 0, 64, "Padding before the random transforms (pixels).", "Pad", 1)
    jitter: int = knob(8, 0, 64, "Random shift (pixels).", "Jitter", 1)
    scale: float = knob(0.1, 0.0, 0.9, "Random scale range, +-.", "Scale +-", 0.01)
    rotate: float = knob(10.0, 0.0, 180.0, "Random rotation range, +- degrees.", "Rotate +- deg", 1)
    jitter2: int = 4
    l2_decay: float = knob(0.0, 0.0, 0.1, "L2 decay towards grey per step.", "L2 decay", 0.0001)
    blur_sigma: float = knob(0.0, 0.0, 8.0, "Gaussian blur width (pixels).", "Blur sigma", 0.05)
    blur_every: int = knob(4, 1, 64, "Blur every this many steps.", "Blur every", 1)
    clip_norm_pct: float = knob(
        0.0, 0.0, 99.0, "Reset pixels of small norm (percentile).", "Clip small norm %", 1
    )
    clip_contrib_pct: float = knob(
        0.0, 0.0, 99.0, "Reset pixels of small contribution (percentile).",
        "Clip small contribution %", 1,
    )  # fmt: skip
    tv_weight: float = knob(0.0, 0.0, 10.0, "Total-variation weight.", "Total variation", 0.01)
    l2_weight: float = knob(0.0, 0.0, 0.1, "L2 penalty weight (Simonyan).", "L2 penalty", 0.0001)
    diversity: float = knob(
        0.0, 0.0, 100.0, "Diversity weight across the grid's images.", "Diversity", 0.1
    )
    fed_size: str = "model"
    accentuation: float = knob(
        30.0, 0.0, 300.0,
        "Feature accentuation: weight of the term keeping an earlier layer's features close to "
        "the start photo's (only when the run starts from a photo).",
        "Stay close to the photo", 0.5,
    )  # fmt: skip

    def check(self, name: str, value: Any) -> Any:
        if name == "fed_size" and value not in FED_SIZES:
            raise ValueError(f"fed_size must be one of {', '.join(FED_SIZES)}, got {value!r}")
        return value

    def update(self, **kwargs: Any) -> AMSettings:
        """Set fields by name (``TypeError`` for unknown names); returns self.

        The second jitter follows the first (Lucid's 4 px when ``jitter > 1``, else off) when
        ``jitter`` is set without ``jitter2``; an explicit ``jitter2`` wins.

        >>> AMSettings().update(jitter=0).jitter2, AMSettings().update(jitter=0, jitter2=2).jitter2
        (0, 2)
        """
        super().update(**kwargs)
        if "jitter" in kwargs and "jitter2" not in kwargs:
            self.jitter2 = 4 if self.jitter > 1 else 0
        return self


FED_SIZES = ("model", "param")


def _fed_size(handle: ModelHandle, settings: AMSettings) -> tuple[int, int] | None:
    """The ``(H, W)`` the network sees, or None for the image's own size (``fed_size="param"``)."""
    if settings.check("fed_size", settings.fed_size) == "param":
        return None
    return (int(handle.input_size[0]), int(handle.input_size[1]))


@dataclass(frozen=True)
class Preset:
    """A recipe from the literature: parameterization, optimizer, size and settings.

    ``size`` is the side of the optimized (and returned) image; the network sees it resampled
    to the model's input size unless ``settings.fed_size == "param"``.
    """

    name: str
    param: str  # a key of PARAMS: "fft", "pixel" or "maco"
    optimizer: str  # "adam" or "sgd" (normalized gradient ascent)
    size: int
    settings: AMSettings
    description: str
    sd: float = 0.01

    def make_param(
        self, handle: ModelHandle, batch: int, size: int, seed: int = 0, sd: float | None = None
    ) -> ImageParam:
        """The preset's parameterization of a ``(batch, C, size, size)`` batch for ``handle``,
        initialized from ``seed`` (what :func:`maximize_steps` optimizes when no ``param`` is
        given)."""
        build = pick_preset(PARAMS, self.param)
        return _build_param(build, handle, batch, size, seed, self.sd if sd is None else sd)


ParamBuilder = Callable[..., ImageParam]

#: The parameterizations of the presets: FFT + decorrelated colour + sigmoid (Lucid), raw pixels
#: (Simonyan, Yosinski), the natural Fourier magnitude with the phase optimized (MaCo).
PARAMS: dict[str, ParamBuilder] = {"fft": fft_image, "pixel": pixel_image, "maco": maco_image}


def _build_param(
    build: ParamBuilder, handle: ModelHandle, batch: int, size: int, seed: int, sd: float
) -> ImageParam:
    """``build(shape, sd=, generator=, device=, mean=)`` for ``handle``, seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    shape = (batch, handle.in_channels, size, size)
    return build(shape, sd=sd, generator=g, device=handle.device, mean=handle.mean)


_NO_TRANSFORMS: dict[str, Any] = dict(pad=0, jitter=0, scale=0.0, rotate=0.0, jitter2=0)

PRESETS: dict[str, Preset] = {
    "lucid": Preset(
        "lucid",
        "fft",
        "adam",
        128,
        AMSettings(steps=512, lr=0.05),
        "Olah et al. 2017 (Lucid): FFT + decorrelated colour, Adam lr 0.05, standard transforms, "
        "512 steps; a 128 px image, fed to the network at the model's input size.",
    ),
    "yosinski": Preset(
        "yosinski",
        "pixel",
        "sgd",
        224,
        AMSettings(
            steps=1000, lr=0.01, l2_decay=1e-4, blur_sigma=1.0, blur_every=4, **_NO_TRANSFORMS
        ),
        "Yosinski et al. 2015, Table 1 preset 3: L2 decay 1e-4, Gaussian blur sigma 1.0 every 4 "
        "steps, 1000 steps of gradient ascent on pixels; 224 px, the model's input size.",
    ),
    "yosinski_clip": Preset(
        "yosinski_clip",
        "pixel",
        "sgd",
        224,
        AMSettings(
            steps=1000,
            lr=0.01,
            blur_sigma=0.5,
            blur_every=4,
            clip_contrib_pct=90.0,
            **_NO_TRANSFORMS,
        ),
        "Yosinski et al. 2015, Table 1 preset 4: blur sigma 0.5 every 4 steps and clipping of the "
        "90% of pixels with the smallest contribution; 224 px, the model's input size.",
    ),
    "simonyan": Preset(
        "simonyan",
        "pixel",
        "sgd",
        224,
        AMSettings(steps=200, lr=0.01, l2_weight=1e-4, **_NO_TRANSFORMS),
        "Simonyan et al. 2013: L2-regularized gradient ascent on the pixels (class models); "
        "224 px, the model's input size.",
        sd=0.0,
    ),
    "maco": Preset(
        "maco",
        "maco",
        "adam",
        128,
        AMSettings(steps=512, lr=0.2),
        "Fel et al. 2023 (MaCo): the Fourier magnitude fixed to the mean spectrum of natural "
        "photos (the packaged ones), only the phase optimized; Adam lr 0.2, Lucid's "
        "transforms, 512 steps; a 128 px image, fed at the model's input size. The importance "
        "(alpha) map comes from the accumulated input gradients.",
        sd=1.0,
    ),
}


def preset_settings(
    preset: str = "lucid", steps: int | None = None, lr: float | None = None, **explicit: Any
) -> AMSettings:
    """A copy of ``preset``'s :class:`AMSettings` with the ``explicit`` fields set on top.

    The one way settings are built from a preset (the functions, the widget and the atlas): an
    explicit value always wins, ``None`` leaves the preset's, and the second jitter follows the
    first unless ``jitter2`` is given (:meth:`AMSettings.update`).

    >>> s = preset_settings("lucid", steps=64, jitter=0)
    >>> s.steps, s.lr, s.jitter, s.jitter2
    (64, 0.05, 0, 0)
    """
    p = pick_preset(PRESETS, preset)
    return from_preset(p.settings, steps=steps, lr=lr, **explicit)


def settings_transform(handle: ModelHandle, settings: AMSettings) -> Transform:
    """The transforms of the presets, read from ``settings`` at every call.

    Lucid's standard transforms (``pad``, ``jitter``, ``scale``, ``rotate``, ``jitter2``) and
    the resampling to the fed size (``fed_size``) as one bilinear warp
    (:func:`~.blocks.transforms.random_affine`): what :func:`maximize_steps` applies when no
    ``transforms`` are given. Moving a setting mid-run changes the next call.
    """

    def apply(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        s = settings
        fed = _fed_size(handle, s)
        if s.pad or s.jitter > 1 or s.scale or s.rotate or s.jitter2 > 1 or fed is not None:
            t = random_affine(
                s.pad, s.jitter, s.scale, s.rotate, s.jitter2, value=0.5, out_size=fed
            )
            x = t(x, g)
        return x

    return apply
