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
from PIL import Image

from .. import limits
from ..models.handle import ModelHandle
from . import activation_max_presets as _presets
from . import regularizers as R
from .activation_max_accent import AlphaMap, accent_weights, default_accent_layer, start_pixels
from .activation_max_presets import (
    FED_SIZES,  # noqa: F401 (re-exported: __all__)
    PARAMS,  # noqa: F401
    PRESETS,
    AMSettings,
    ParamBuilder,
    Preset,
    _build_param,
    _fed_size,
    preset_settings,
    settings_transform,
)
from .blocks.hooks import capture, forward_to
from .blocks.objectives import LOGITS, Objective, as_objective, diversity
from .blocks.optimize import Step, optimize_steps
from .blocks.params import ImageParam
from .blocks.readback import LossLog
from .blocks.runs import finish
from .blocks.settings import pick_preset
from .blocks.transforms import Transform, compose

__all__ = [
    *_presets.__all__,  # the settings and presets, re-exported
    "maximize_steps",
    "maximize",
    "evaluate",
    "AMResult",
]


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
    metrics : list of dict
        Per step: ``"activation"`` (mean over the batch), and ``"feature_distance"`` when the
        run accentuated a photo. (Each ``Step.metrics`` also holds ``"alpha"``, the run's
        :class:`~.activation_max_accent.AlphaMap` so far, for a caller that stops early.)
    alpha : torch.Tensor or None
        MaCo's importance map ``(B, 1, H, W)`` in ``[0, 1]``: the absolute input gradients
        accumulated over the run (:class:`~.activation_max_accent.AlphaMap`).
    accent_layer : str or None
        The layer kept close to the start photo (feature accentuation), None without one.
    """

    image: torch.Tensor
    activation: torch.Tensor
    history: list[float]
    objective: str
    settings: AMSettings
    metrics: list[dict[str, Any]] = field(default_factory=list)
    alpha: torch.Tensor | None = None
    accent_layer: str | None = None


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
    start: Image.Image | torch.Tensor | None = None,
    accentuate: Sequence[bool] | None = None,
    accent_layer: str | None = None,
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
    start : PIL image or tensor, optional
        Feature accentuation (Hamblin et al. 2023): start from this photo instead of noise
        (:func:`~.activation_max_accent.start_pixels`; a ``"maco"`` image takes its phase) and
        add ``settings.accentuation`` times the normalized distance between the image's features
        at ``accent_layer`` and the photo's (:func:`~.blocks.regularizers.feature_distance`;
        the photo goes through the same random transforms at every step, so the user's
        transforms must draw from the generator they are given).
    accentuate : sequence of bool, optional
        Per image of the batch, whether the feature term applies (default: all). ``False``
        images are plain AM from the same photo, for comparison.
    accent_layer : str, optional
        The layer kept close to the photo; default
        :func:`~.activation_max_accent.default_accent_layer` (halfway to the objective's).
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
    accent: _Accent | None = None
    if start is not None:
        accent = _Accent(handle, objective, prm, start, accentuate, accent_layer)
        layers += [] if accent.layer in layers else [accent.layer]
    elif accentuate is not None or accent_layer is not None:
        raise ValueError("accentuate= and accent_layer= need a start photo (start=)")
    alpha = AlphaMap()

    _fed_size(handle, settings)  # a bad fed_size fails before the first step

    def fed(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = transform(x, g)
        size = _fed_size(handle, settings)
        if size is not None and tuple(x.shape[-2:]) != size:  # after the user's transforms
            x = torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)
        return x

    def loss_fn(img: torch.Tensor, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        s = settings
        ref = None
        if accent is not None and s.accentuation > 0:  # the photo, through the same warp
            ref = accent.reference(fed, tgen)
        x = fed(img, tgen)
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
        metrics: dict[str, Any] = {"activation": score.detach(), "alpha": alpha}
        if accent is not None and ref is not None:
            dist = R.feature_distance(acts[accent.layer], ref)
            loss = loss + s.accentuation * (accent.weights * dist).mean()
            metrics["feature_distance"] = dist.detach()
        return loss, metrics

    def post_step(prm: ImageParam, i: int, img: torch.Tensor) -> None:
        alpha.add(img.grad)
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
    dists: list[torch.Tensor] = []
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
            if "feature_distance" in last.metrics:
                dists.append(last.metrics["feature_distance"].float().mean())
            yield last
    if last is None or last.image is None:
        return None
    history = losses.floats()
    image = last.image.clone().clamp(0, 1)
    activation = evaluate(handle, objective, image, fed_size=settings.fed_size)
    metrics = [{"activation": v} for v in torch.stack(means).cpu().tolist()]
    if len(dists) == len(metrics):
        for m, d in zip(metrics, torch.stack(dists).cpu().tolist()):
            m["feature_distance"] = d
    return AMResult(
        image.cpu(),
        activation,
        history,
        objective.name,
        settings,
        metrics,
        alpha=alpha.map(),
        accent_layer=accent.layer if accent is not None else None,
    )


class _Accent:
    """Feature accentuation of one run: the start photo, its layer and the per-image weights."""

    def __init__(
        self,
        handle: ModelHandle,
        objective: Objective,
        prm: ImageParam,
        start: Image.Image | torch.Tensor,
        accentuate: Sequence[bool] | None,
        layer: str | None,
    ) -> None:
        b, _, side, _ = prm.shape
        self.handle = handle
        self.layer = default_accent_layer(handle, objective) if layer is None else layer
        handle.layer(self.layer)  # KeyError naming the nearest layers
        self.weights = accent_weights(accentuate, b, handle.device)
        self.photo = start_pixels(handle, start, side, b)
        prm.set_image(self.photo)

    @torch.no_grad()
    def reference(self, fed: Callable, g: torch.Generator) -> torch.Tensor:
        """The photo's features at :attr:`layer`, warped as the image will be by ``g``'s next
        draws (``g`` itself is left as it was)."""
        twin = torch.Generator().set_state(g.get_state())
        x = fed(self.photo, twin)
        with capture(self.handle, [self.layer], stop_early=True) as acts:
            forward_to(self.handle, self.handle.normalize(x), acts, needs_logits=False)
            return acts[self.layer].detach()


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
