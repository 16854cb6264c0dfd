"""Regularized inversion: the optimization that reconstructs a photo from a layer's features.

After Mahendran & Vedaldi (CVPR 2015): find the image ``x`` whose features ``phi(x)`` at a layer
match those of a photo, ``phi0``, under natural-image priors,

    loss(x) = ||phi(x) - phi0||^2 / ||phi0||^2 + a * alpha_norm(x) + b * TV_beta(x),

minimized with the project's one optimization loop (:func:`~cnnvis_widgets.core.optimize.
optimize_steps`). :func:`invert_steps` / :func:`invert_layers_steps` yield a ``Step`` per update
and return an :class:`InversionResult`; :func:`invert` / :func:`invert_layers` run to the end.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ... import limits
from ...models.handle import ModelHandle
from .. import regularizers as R
from ..blocks.optimize import Step, optimize_steps
from ..blocks.params import ImageParam
from ..blocks.readback import LossLog
from ..blocks.runs import finish
from ..blocks.settings import field_names
from ..blocks.transforms import compose, jitter, pad
from .features import check_layers, layer_features, sq_norm, target_pixels
from .layer_batch import LayerGroups
from .metrics import final_feature_errors, pixel_correlation, pixel_error
from .settings import InversionSettings, Preset, settings_for

__all__ = ["InversionResult", "invert_steps", "invert_layers_steps", "invert", "invert_layers"]

#: what the ``*_steps`` generators return: the result, or None when no step was made
Steps = Generator[Step, None, "InversionResult | None"]


@dataclass
class InversionResult:
    """Result of :func:`invert` or :func:`invert_layers`.

    Attributes
    ----------
    image : torch.Tensor
        Reconstructions, pixel space ``(B, C, H, W)`` on the CPU (one per layer for
        :func:`invert_layers`).
    target : torch.Tensor
        The original, pixel space ``(1, C, H, W)`` on the CPU, as the network saw it.
    layers : list of str
        The layer of each reconstruction.
    feature_error : torch.Tensor
        Normalized feature error ``||phi(x)-phi0||^2 / ||phi0||^2`` of each final image, measured
        without jitter, ``(B,)``.
    pixel_correlation : torch.Tensor
        Pearson correlation of each reconstruction with the original over all pixels, ``(B,)``.
    pixel_error : torch.Tensor
        Mean squared pixel difference with the original over the original's variance, ``(B,)``.
    history : list of float
        Loss per step (mean over the batch).
    feature_history : list of list of float
        Normalized feature error per step, one value per image.
    settings : InversionSettings
    preset : str
    """

    image: torch.Tensor
    target: torch.Tensor
    layers: list[str]
    feature_error: torch.Tensor
    pixel_correlation: torch.Tensor
    pixel_error: torch.Tensor
    history: list[float]
    feature_history: list[list[float]]
    settings: InversionSettings
    preset: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no pixels)."""
        return {
            "layers": list(self.layers),
            "preset": self.preset,
            "feature_error": [round(float(v), 6) for v in self.feature_error],
            "pixel_correlation": [round(float(v), 6) for v in self.pixel_correlation],
            "pixel_error": [round(float(v), 6) for v in self.pixel_error],
            "steps": len(self.history),
            "settings": dataclasses.asdict(self.settings),
        }


def _cosine(i: int, total: int, base: float, end: float) -> float:
    if total <= 1 or end >= base:
        return base
    return end + 0.5 * (base - end) * (1.0 + math.cos(math.pi * i / (total - 1)))


def _run(
    handle: ModelHandle,
    target: torch.Tensor,
    layers: list[str],
    preset: Preset,
    settings: InversionSettings,
    seed: int,
    sd: float | None,
    stop_event: threading.Event | None,
    init: torch.Tensor | None,
) -> Steps:
    """One reconstruction per entry of ``layers`` as one batch (row ``i`` matches ``layers[i]``);
    returns the :class:`InversionResult` of the last step (None when no step was made)."""
    b = len(layers)
    _, c, hgt, wid = target.shape
    limits.check_batch(b, hgt, wid, name="number of layers")
    seed = limits.as_int(seed, "seed")
    groups = LayerGroups(handle, layers)
    phi0 = layer_features(handle, target, groups.names)
    norms = {n: sq_norm(t).clamp_min(1e-12) for n, t in phi0.items()}
    for n, v in norms.items():
        if float(v) <= 1e-12:
            raise ValueError(
                f"the features of layer {n!r} are all zero for this image: nothing to invert; "
                "pick another layer or image"
            )
    fft = preset.param == "fft"
    g = torch.Generator().manual_seed(int(seed))
    param = ImageParam(
        (b, c, hgt, wid),
        fft=fft,
        decorrelate=fft,
        sigmoid=fft,
        sd=preset.sd if sd is None else float(sd),
        generator=g,
        device=handle.device,
        mean=handle.mean,
    )
    if init is not None:
        param.set_image(init.to(handle.device).expand(b, c, hgt, wid))
    tgen = torch.Generator().manual_seed(int(seed) + 1)
    if len(groups.groups) > 1:
        noise = torch.rand((b, c, hgt, wid), generator=g).to(handle.device)
        groups.try_shrink((0.8 * target + 0.2 * noise).clamp(0, 1))

    def loss_fn(img: torch.Tensor, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        s = settings
        x = img
        j = int(s.jitter)
        if j > 0 and i < s.jitter_until * int(s.steps):
            x = compose([pad(j), jitter(2 * j)])(x, tgen)
        feats = groups.forward(x)
        parts = [sq_norm(feats[n] - phi0[n]) / norms[n] for n in groups.names]
        errs = parts[0] if len(parts) == 1 else torch.cat(parts)
        loss_per = errs
        # the priors act on the image mapped to [-1, 1]: |2x - 1|^a = 2^a |x - 0.5|^a, and the
        # differences of the TV term double
        if s.alpha_weight:
            a = float(s.alpha)
            loss_per = loss_per + s.alpha_weight * 2.0**a * R.alpha_norm(img, a, center=0.5)
        if s.tv_weight:
            beta = float(s.tv_beta)
            loss_per = loss_per + s.tv_weight * 2.0**beta * R.total_variation(img, beta)
        # images are independent: the mean gives each the gradient of its own loss (over b)
        return loss_per.sum() / b, {"feature_error": errs.detach()}

    def post_step(prm: ImageParam, i: int, img: torch.Tensor) -> None:
        with torch.no_grad():
            prm.tensor.clamp_(0.0, 1.0)

    def schedule(i: int, total: int, base: float) -> float:
        return _cosine(i, total, base, float(settings.lr_end))

    losses = LossLog()  # recorded before the consumer sees the step (a widget may rewrite it)
    feature_errors: list[torch.Tensor] = []  # on the device, read once at the end
    last: torch.Tensor | None = None
    with handle.pinned(ttl=1.0):  # the twin checked once per second of the run, not per step
        for step in optimize_steps(
            param,
            loss_fn,
            settings,
            optimizer="adam",
            lr_schedule=schedule,
            post_step=post_step if not fft else None,
            stop_event=stop_event,
            losses=losses,
        ):
            if not groups.identity and step.image is not None:
                step.image = step.image[groups.inverse]
                step.metrics["feature_error"] = step.metrics["feature_error"][groups.inverse]
            feature_errors.append(step.metrics["feature_error"])
            last = step.image
            yield step
    if last is None:
        return None
    history = losses.floats()
    feature_history: list[list[float]] = torch.stack(feature_errors).tolist()
    image = last.detach().clone().clamp(0, 1)
    return InversionResult(
        image=image.cpu(),
        target=target.detach().cpu(),
        layers=list(layers),
        feature_error=final_feature_errors(handle, target, image, layers),
        pixel_correlation=pixel_correlation(image, target),
        pixel_error=pixel_error(image, target),
        history=history,
        feature_history=feature_history,
        settings=settings,
        preset=preset.name,
    )


def invert_steps(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layer: str | Sequence[str],
    *,
    preset: str = "mahendran",
    steps: int | None = None,
    lr: float | None = None,
    alpha: float | None = None,
    alpha_weight: float | None = None,
    tv_beta: float | None = None,
    tv_weight: float | None = None,
    jitter: int | None = None,
    seed: int = 0,
    size: int | None = None,
    settings: InversionSettings | None = None,
    stop_event: threading.Event | None = None,
    sd: float | None = None,
    init: torch.Tensor | None = None,
    **overrides: Any,
) -> Steps:
    """Reconstruct ``image`` from the features of ``layer``; yield a ``Step`` after each update.

    Each step's ``loss`` is the total loss and ``metrics["feature_error"]`` the normalized feature
    error ``||phi(x)-phi0||^2 / ||phi0||^2`` of the image evaluated at that step (jittered while
    jitter is on), per image ``(B,)``. ``Step.image`` is the pixel-space reconstruction. The
    generator returns the :class:`InversionResult` of its last step (``result = yield from
    invert_steps(...)``, or :class:`~cnnvis_widgets.core.blocks.runs.Run`), or None when it
    made no step.

    Parameters
    ----------
    handle : ModelHandle
    image : PIL image or tensor
        The photo to reconstruct (a pixel-space tensor ``(C, H, W)`` / ``(1, C, H, W)`` is used
        as is, a PIL image resized and centre-cropped to ``size``).
    layer : str or sequence of str
        Dotted layer name (``KeyError`` lists the nearest names); several names make one
        reconstruction each, as one batch (see :func:`invert_layers_steps`).
    preset : str
        A key of :data:`PRESETS`: ``"mahendran"`` (default), ``"olah"``, ``"unregularized"``.
    steps, lr, alpha, alpha_weight, tv_beta, tv_weight, jitter : optional
        Override the preset's (see :class:`InversionSettings`).
    seed : int
        Seeds the initialization and the jitter: the same seed repeats the run.
    size : int, optional
        Side of the image (default: the model's input size).
    settings : InversionSettings, optional
        A live settings object, read at every step (change its fields mid-run).
    stop_event : threading.Event, optional
        Set it to end the run between steps.
    init : tensor, optional
        Start from this pixel-space image instead of noise.
    **overrides
        Other fields of :class:`InversionSettings` (``lr_end=``, ``jitter_until=``).

    Raises
    ------
    KeyError
        Unknown layer or preset.
    ValueError
        Bad image, or a layer whose features of the image are all zero.
    NonFiniteLossError
        The loss became NaN/inf (lower the learning rate).

    Examples
    --------
    >>> for step in invert_steps(h, sample_image("cat"), "_blocks.2", steps=50):  # doctest: +SKIP
    ...     print(step.index, float(step.metrics["feature_error"][0]))
    """
    named = dict(alpha=alpha, alpha_weight=alpha_weight, tv_beta=tv_beta, tv_weight=tv_weight)
    named.update(steps=steps, lr=lr, jitter=jitter)
    p, settings = settings_for(preset, settings, **overrides, **named)
    names = check_layers(handle, [layer] if isinstance(layer, str) else layer)
    target = target_pixels(handle, image, size)
    return (yield from _run(handle, target, names, p, settings, seed, sd, stop_event, init))


def invert_layers_steps(
    handle: ModelHandle, image: Image.Image | torch.Tensor, layers: Sequence[str], **kwargs: Any
) -> Steps:
    """Like :func:`invert_steps` (same keyword arguments), with one reconstruction per entry of
    ``layers``, as one batch.

    ``Step.image`` is ``(len(layers), C, H, W)`` in the order of ``layers`` and
    ``metrics["feature_error"]`` has one value per layer. Every step runs one forward pass: the
    batch's rows leave it right after their own layer where the network allows (see
    :func:`invert_layers`). Returns the :class:`InversionResult` of the last step.

    Examples
    --------
    >>> layers = ["_blocks.1", "_blocks.8"]
    >>> for s in invert_layers_steps(h, img, layers, steps=50):  # doctest: +SKIP
    ...     print(s.index, s.metrics["feature_error"].tolist())
    """
    return (yield from invert_steps(handle, image, list(layers), **kwargs))


def _result(steps: Steps) -> InversionResult:
    result = finish(steps)
    if result is None:
        raise RuntimeError("the run made no step (steps=0 or stopped before the first step)")
    return result


def invert(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layer: str,
    **kwargs: Any,
) -> InversionResult:
    """Run :func:`invert_steps` to the end and return an :class:`InversionResult`.

    Takes the same arguments as :func:`invert_steps`. ``result.feature_error`` is measured on the
    final image without jitter.

    Examples
    --------
    >>> r = invert(h, sample_image("cat"), "_blocks.1", size=96, steps=100)  # doctest: +SKIP
    >>> r.image.shape                                                      # doctest: +SKIP
    torch.Size([1, 3, 96, 96])
    """
    return _result(invert_steps(handle, image, layer, **kwargs))


def invert_layers(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layers: Sequence[str],
    *,
    batched: bool = True,
    **kwargs: Any,
) -> InversionResult:
    """Reconstruct ``image`` once per layer: the classic "what each layer keeps" figure.

    With ``batched`` (default) all reconstructions are one batch: every step runs one forward
    pass and image ``i`` is matched at ``layers[i]`` only. The rows of a layer leave the batch
    right after it where shapes allow (checked once on a probe batch: not where a skip
    connection crosses the cut), so the strip costs about what separate runs cost, with fewer and
    larger kernel launches. With ``batched=False`` each layer runs on its own.

    Takes the keyword arguments of :func:`invert_steps`; returns one result whose ``image``,
    ``feature_error``, ``pixel_correlation``... have one entry per layer, in order.

    Examples
    --------
    >>> r = invert_layers(h, sample_image("cat"), ["_blocks.1", "_blocks.5", "_blocks.12"],
    ...                   size=96, steps=100)                          # doctest: +SKIP
    >>> r.feature_error.shape                                          # doctest: +SKIP
    torch.Size([3])
    """
    names = check_layers(handle, layers)
    preset = kwargs.pop("preset", "mahendran")
    explicit = {k: kwargs.pop(k) for k in field_names(InversionSettings) & set(kwargs)}
    p, settings = settings_for(preset, kwargs.pop("settings", None), **explicit)
    target = target_pixels(handle, image, kwargs.pop("size", None))
    if batched:
        run = {k: kwargs.pop(k) for k in ("seed", "sd", "stop_event", "init") if k in kwargs}
        if kwargs:
            raise TypeError(f"invert_layers() got unknown argument(s) {', '.join(kwargs)}")
        steps = _run(
            handle,
            target,
            names,
            p,
            settings,
            run.get("seed", 0),
            run.get("sd"),
            run.get("stop_event"),
            run.get("init"),
        )
        return _result(steps)
    parts = [
        invert(
            handle, target, name, preset=preset, settings=dataclasses.replace(settings), **kwargs
        )
        for name in names
    ]
    n = len(parts[0].history)
    return InversionResult(
        image=torch.cat([r.image for r in parts]),
        target=target.detach().cpu(),
        layers=names,
        feature_error=torch.cat([r.feature_error for r in parts]),
        pixel_correlation=torch.cat([r.pixel_correlation for r in parts]),
        pixel_error=torch.cat([r.pixel_error for r in parts]),
        history=[sum(r.history[i] for r in parts) / len(parts) for i in range(n)],
        feature_history=[[v for r in parts for v in r.feature_history[i]] for i in range(n)],
        settings=settings,
        preset=preset,
    )
