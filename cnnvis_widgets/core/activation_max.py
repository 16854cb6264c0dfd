"""Activation maximization: synthesize the image that drives a unit, channel or class logit.

:func:`maximize_steps` yields :class:`~cnnvis_widgets.core.optimize.Step` s; :func:`maximize`
runs to the end. Presets reproduce the literature (see :data:`PRESETS`). As in Lucid/Lucent, the
network sees the image at the model's input size (``fed_size="model"``, the default of every
preset): the transforms and the upsampling are one bilinear warp. The images returned and shown
stay at the optimized size (``size``, 128 px for ``"lucid"``).

Examples
--------
>>> from cnnvis_widgets import load_model                       # doctest: +SKIP
>>> from cnnvis_widgets.core import objectives, activation_max  # doctest: +SKIP
>>> h = load_model()                                            # doctest: +SKIP
>>> r = activation_max.maximize(h, "_blocks.4:7", steps=64)      # doctest: +SKIP
>>> r.image.shape                                               # doctest: +SKIP
torch.Size([1, 3, 128, 128])
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import limits
from ..models.handle import ModelHandle
from . import regularizers as R
from .blocks.hooks import capture, forward_to
from .blocks.objectives import LOGITS, Objective, as_objective, diversity
from .blocks.optimize import Step, optimize_steps
from .blocks.params import ImageParam, fft_image, pixel_image
from .blocks.readback import LossLog
from .blocks.runs import finish
from .blocks.settings import Settings, from_preset, knob, pick_preset
from .blocks.transforms import Transform, compose, random_affine

__all__ = [
    "AMSettings",
    "FED_SIZES",
    "Preset",
    "PRESETS",
    "preset_settings",
    "settings_transform",
    "maximize_steps",
    "maximize",
    "evaluate",
    "AMResult",
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
    param: str  # "fft" (FFT + decorrelated colour + sigmoid) or "pixel"
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
        build = fft_image if self.param == "fft" else pixel_image
        return _build_param(build, handle, batch, size, seed, self.sd if sd is None else sd)


ParamBuilder = Callable[..., ImageParam]


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


@dataclass
class AMResult:
    """Result of :func:`maximize`.

    Attributes
    ----------
    image : torch.Tensor
        Final pixel-space batch ``(B, C, H, W)`` on the CPU, at the parameterization's size
        (``size``), whatever size the network saw.
    activation : torch.Tensor
        Objective value of the final image, without transforms, per image ``(B,)``, fed at the
        run's ``fed_size``.
    history : list of float
        Loss per step.
    objective : str
    settings : AMSettings
    """

    image: torch.Tensor
    activation: torch.Tensor
    history: list[float]
    objective: str
    settings: AMSettings
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _validate(handle: ModelHandle, objective: Objective) -> None:
    for name in objective.hidden_layers:
        handle.layer(name)
    for layer_name, unit in objective.units:
        handle.check_unit(layer_name, unit)
    for c in objective.classes:
        handle.check_class(c)


def _as_param(
    param: ImageParam | ParamBuilder | None,
    handle: ModelHandle,
    p: Preset,
    batch: int | None,
    size: int | None,
    seed: int,
    sd: float | None,
) -> ImageParam:
    """The parameterization a run optimizes: the user's (an ``ImageParam`` or a builder called
    like :func:`~.blocks.params.fft_image`) or the preset's."""
    if isinstance(param, ImageParam):
        b, c, ph, pw = param.shape
        if ph != pw:
            raise ValueError(f"param must be square, got {ph} x {pw} pixels")
        for name, given, have in (("size", size, ph), ("batch", batch, b)):
            if given is not None and int(given) != have:
                raise ValueError(f"{name}={given} disagrees with the param's shape {param.shape}")
        if c != handle.in_channels:
            raise ValueError(f"param has {c} channels, the model takes {handle.in_channels}")
        if param.device.type != torch.device(handle.device).type:
            raise ValueError(f"param is on {param.device}, the model on {handle.device}")
        limits.check_batch(b, limits.check_side(ph), pw)
        return param
    size = limits.check_side(p.size if size is None else size)
    batch = limits.check_batch(1 if batch is None else batch, size, size)
    if param is None:
        return p.make_param(handle, batch, size, seed, sd)
    if not callable(param):
        raise TypeError(f"param must be an ImageParam or a callable, got {type(param).__name__}")
    return _build_param(param, handle, batch, size, seed, p.sd if sd is None else sd)


def _as_transform(transforms: Transform | Sequence[Transform]) -> Transform:
    if callable(transforms):
        return transforms
    ts = list(transforms)
    if not all(callable(t) for t in ts):
        raise TypeError("transforms must be a transform or a list of transforms (callables)")
    return compose(ts)


def maximize_steps(
    handle: ModelHandle,
    objective: Objective | str,
    *,
    preset: str = "lucid",
    param: ImageParam | ParamBuilder | None = None,
    transforms: Transform | Sequence[Transform] | None = None,
    optimizer: str | None = None,
    steps: int | None = None,
    size: int | None = None,
    lr: float | None = None,
    batch: int | None = None,
    seed: int = 0,
    settings: AMSettings | None = None,
    stop_event: threading.Event | None = None,
    sd: float | None = None,
    **overrides: Any,
) -> Generator[Step, None, AMResult | None]:
    """Optimize an image batch to maximize ``objective``; yield a ``Step`` after each update.

    Returns (``result = yield from maximize_steps(...)``, or
    :func:`~.blocks.runs.finish`) the :class:`AMResult` of the last step, also when
    ``stop_event`` ended the run early; None when no step was made.

    Parameters
    ----------
    handle : ModelHandle
    objective : Objective or str
        E.g. ``objectives.channel("_blocks.4", 7)`` or ``"_blocks.4:7"``.
    preset : str
        A key of :data:`PRESETS`: ``"lucid"``, ``"yosinski"``, ``"yosinski_clip"``, ``"simonyan"``.
        It fills in whatever is not given: the parameterization, the optimizer, the size and the
        settings.
    param : ImageParam or callable, optional
        What is optimized (Lucent's ``param_f``). An :class:`~.blocks.params.ImageParam` on the
        model's device (its shape sets ``batch`` and ``size``), or a builder called as
        ``param(shape, sd=, generator=, device=, mean=)`` like
        :func:`~.blocks.params.fft_image`, :func:`~.blocks.params.pixel_image` or a
        ``functools.partial`` of ``ImageParam``. Default: the preset's
        (:meth:`Preset.make_param`).
    transforms : transform or list of transforms, optional
        Applied to the image before every forward pass, each a callable
        ``(pixels, generator) -> pixels`` (:mod:`~.blocks.transforms`; a list is composed in
        order). The network then sees the result resampled (bilinear) to the fed size. Default:
        :func:`settings_transform`, the settings' ``pad``, ``jitter``, ``scale``, ``rotate`` and
        ``jitter2`` (which user transforms replace) fused with that resampling.
    optimizer : ``"adam"`` or ``"sgd"``, optional
        The preset's by default.
    steps, lr : optional
        Override the preset's.
    size : int, optional
        Side of the optimized image (the preset's by default), which is also the size of every
        ``Step.image``. With ``fed_size="model"`` (the default setting of every preset) the
        network sees the transformed image resampled to the model's input size (224 px for
        Lite0), as Lucid/Lucent do; with ``fed_size="param"`` it sees this size plus the
        transforms' padding and nothing is resampled.
    batch : int, optional
        Number of images optimized together (one batch through the network); 1 by default.
    seed : int
        Seeds the initialization and the random transforms: the same seed repeats the run.
    settings : AMSettings, optional
        A live settings object; the loop reads it every step, so changing its fields mid-run
        takes effect at the next step. Built with :func:`preset_settings` (from the preset and
        ``steps``/``lr``/``overrides``) when not given.
    stop_event : threading.Event, optional
        Set it to end the run between steps.
    sd : float, optional
        Standard deviation of the initialization (the preset's by default).
    **overrides
        Fields of :class:`AMSettings` (``blur_sigma=1.0``, ``tv_weight=0.01``,
        ``fed_size="param"``...). An explicit value always wins over the preset's.

    Raises
    ------
    KeyError
        Unknown layer (the message lists the nearest names).
    IndexError
        Unit or class out of range (the message names the range).
    NonFiniteLossError
        The loss became NaN/inf.
    """
    p = pick_preset(PRESETS, preset)
    objective = as_objective(objective)
    _validate(handle, objective)
    seed = limits.as_int(seed, "seed")
    if settings is None:
        if steps is not None:
            steps = limits.check_steps(steps)
        settings = preset_settings(preset, steps=steps, lr=lr, **overrides)
    elif overrides:
        settings.update(**overrides)
    limits.check_steps(settings.steps)
    limits.check_transforms(
        settings.pad, settings.jitter, settings.scale, settings.rotate, settings.jitter2
    )
    prm = _as_param(param, handle, p, batch, size, seed, sd)
    batch = prm.shape[0]
    transform = (
        settings_transform(handle, settings) if transforms is None else _as_transform(transforms)
    )
    tgen = torch.Generator().manual_seed(int(seed) + 1)
    neutral = torch.tensor(handle.mean, device=handle.device).view(1, -1, 1, 1)
    needs_logits = objective.needs_logits
    div_layer = objective.hidden_layers[-1] if objective.hidden_layers else None
    div_obj = diversity(div_layer) if div_layer else None
    layers = list(objective.hidden_layers)

    _fed_size(handle, settings)  # a bad fed_size fails before the first step

    def loss_fn(img: torch.Tensor, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        s = settings
        x = transform(img, tgen)
        fed = _fed_size(handle, s)
        if fed is not None and tuple(x.shape[-2:]) != fed:  # after the user's transforms
            x = torch.nn.functional.interpolate(x, fed, mode="bilinear", align_corners=False)
        acts: dict[str, torch.Tensor]
        with capture(handle, layers, stop_early=not needs_logits) as acts:
            out = forward_to(handle, handle.normalize(x), acts, needs_logits=needs_logits)
            if needs_logits:
                acts[LOGITS] = out
            score = objective(acts)
            loss = -score.mean()
            if s.diversity and div_obj is not None and batch > 1:
                loss = loss - s.diversity * div_obj(acts).mean()
        if s.tv_weight:
            loss = loss + s.tv_weight * R.total_variation(img).mean()
        if s.l2_weight:
            loss = loss + s.l2_weight * R.l2_penalty(img, neutral).mean()
        return loss, {"activation": score.detach()}

    def post_step(prm: ImageParam, i: int, img: torch.Tensor) -> None:
        s = settings
        ops = (
            s.l2_decay > 0
            or (s.blur_sigma > 0 and s.blur_every > 0 and (i + 1) % s.blur_every == 0)
            or s.clip_norm_pct > 0
            or s.clip_contrib_pct > 0
            or not prm.sigmoid
        )
        if not ops:
            return
        with torch.no_grad():
            x = prm.image()
            x = R.decay(x, s.l2_decay, neutral)
            if s.blur_sigma > 0 and s.blur_every > 0 and (i + 1) % s.blur_every == 0:
                x = R.gaussian_blur(x, s.blur_sigma)
            x = R.clip_small_norm(x, s.clip_norm_pct, neutral)
            x = R.clip_small_contribution(x, img.grad, s.clip_contrib_pct, neutral)
            if not prm.sigmoid:
                x = x.clamp(0, 1)
            prm.set_image(x)

    losses = LossLog()  # the loss per step, kept on the device and read in batches
    means: list[torch.Tensor] = []  # the activation per step, read once at the end
    last: Step | None = None
    with handle.pinned(ttl=1.0):  # the twin checked once per second of the run, not per step
        for last in optimize_steps(
            prm,
            loss_fn,
            settings,
            optimizer=p.optimizer if optimizer is None else optimizer,
            post_step=post_step,
            stop_event=stop_event,
            losses=losses,
        ):
            means.append(last.metrics["activation"].float().mean())
            yield last
    if last is None or last.image is None:
        return None
    history = losses.floats()
    image = last.image.clone().clamp(0, 1)
    activation = evaluate(handle, objective, image, fed_size=settings.fed_size)
    metrics = [{"activation": v} for v in torch.stack(means).cpu().tolist()]
    return AMResult(image.cpu(), activation, history, objective.name, settings, metrics)


@torch.no_grad()
def evaluate(
    handle: ModelHandle,
    objective: Objective | str,
    pixels: torch.Tensor,
    *,
    fed_size: str = "model",
) -> torch.Tensor:
    """Objective value per image ``(B,)`` of a pixel-space batch, without transforms.

    ``fed_size="model"`` (default) resizes the batch to the model's input size first (bilinear),
    as :func:`maximize_steps` feeds it; ``"param"`` feeds it at its own size.
    """
    objective = as_objective(objective)
    _validate(handle, objective)
    needs_logits = objective.needs_logits
    fed = _fed_size(handle, AMSettings(fed_size=fed_size))
    x = pixels.to(handle.device)
    if fed is not None and tuple(x.shape[-2:]) != fed:
        x = torch.nn.functional.interpolate(x, size=fed, mode="bilinear", align_corners=False)
    with capture(handle, objective.hidden_layers, stop_early=not needs_logits) as acts:
        out = forward_to(handle, handle.normalize(x), acts, needs_logits=needs_logits)
        if needs_logits:
            acts[LOGITS] = out
        return objective(acts).float().cpu()


def maximize(handle: ModelHandle, objective: Objective | str, **kwargs: Any) -> AMResult:
    """Run :func:`maximize_steps` to the end and return its :class:`AMResult`.

    Takes the same arguments as :func:`maximize_steps`.

    Raises
    ------
    RuntimeError
        The run made no step (stopped before the first one).
    """
    result = finish(maximize_steps(handle, objective, **kwargs))
    if result is None:
        raise RuntimeError("the run made no step (steps=0 or stopped before the first step)")
    return result
