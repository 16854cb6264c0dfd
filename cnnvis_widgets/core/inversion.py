"""Network inversion: reconstruct an image from what one layer keeps of it.

Regularized reconstruction after Mahendran & Vedaldi (*Understanding deep image representations
by inverting them*, CVPR 2015): find the image ``x`` whose features ``phi(x)`` at a layer match
those of a photo, ``phi0``, under natural-image priors,

    loss(x) = ||phi(x) - phi0||^2 / ||phi0||^2 + a * alpha_norm(x) + b * TV_beta(x),

minimized with the project's one optimization loop (:func:`~cnnvis_widgets.core.optimize.
optimize_steps`), its image parameterizations (:class:`~cnnvis_widgets.core.params.ImageParam`)
and regularizers (:mod:`~cnnvis_widgets.core.regularizers`). Random jitter helps early on and
stops for the last quarter of the steps; the learning rate decays (cosine); the reported
*normalized feature error* is the one of the final image without jitter.

:func:`invert_steps` yields :class:`~cnnvis_widgets.core.optimize.Step` s, :func:`invert` runs
to the end, :func:`invert_layers` reconstructs from several layers as one batch (the classic
"what each layer keeps" figure). The learned decoders of Dosovitskiy & Brox live in
:mod:`cnnvis_widgets.core.upconv`.

Examples
--------
>>> from cnnvis_widgets import load_model                        # doctest: +SKIP
>>> from cnnvis_widgets.data import sample_image                 # doctest: +SKIP
>>> from cnnvis_widgets.core import inversion                    # doctest: +SKIP
>>> h = load_model()                                             # doctest: +SKIP
>>> r = inversion.invert(h, sample_image("cat"), "_blocks.3", size=128)  # doctest: +SKIP
>>> r.image.shape, float(r.feature_error[0]) < 0.05              # doctest: +SKIP
(torch.Size([1, 3, 128, 128]), True)
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from .. import limits
from ..models.handle import ModelHandle
from . import regularizers as R
from .blocks.hooks import capture, forward_to
from .blocks.optimize import Step, optimize_steps
from .blocks.params import ImageParam
from .blocks.transforms import compose, jitter, pad

__all__ = [
    "InversionSettings",
    "Preset",
    "PRESETS",
    "InversionResult",
    "invert_steps",
    "invert",
    "invert_layers",
    "invert_layers_steps",
    "target_pixels",
    "layer_features",
    "feature_error",
    "pixel_correlation",
    "pixel_error",
]


@dataclass
class InversionSettings:
    """Settings read at every step: change them while a run goes on and the next step uses them.

    Attributes
    ----------
    steps : int
        Number of steps of the run.
    lr : float
        Initial learning rate (Adam), decayed along a cosine to ``lr_end``.
    lr_end : float
        Learning rate at the last step.
    alpha : float
        Exponent of the alpha-norm prior (Mahendran & Vedaldi use 6).
    alpha_weight : float
        Weight of the alpha-norm term (on the image mapped to ``[-1, 1]``).
    tv_beta : float
        Exponent of the total-variation prior (2 in the paper).
    tv_weight : float
        Weight of the total-variation term (on the image mapped to ``[-1, 1]``).
    jitter : int
        Random shift of up to this many pixels before each forward pass (0: off).
    jitter_until : float
        Jitter only during this fraction of the steps (0.75: it stops for the last quarter, which
        the final feature error needs).
    """

    steps: int = 200
    lr: float = 0.02
    lr_end: float = 0.001
    alpha: float = 6.0
    alpha_weight: float = 1e-3
    tv_beta: float = 2.0
    tv_weight: float = 3.0
    jitter: int = 2
    jitter_until: float = 0.75

    def update(self, **kwargs: Any) -> InversionSettings:
        """Set fields by name (``TypeError`` for unknown names); returns self."""
        names = {f.name for f in dataclasses.fields(self)}
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"unknown setting {k!r}; valid: {', '.join(sorted(names))}")
            setattr(self, k, limits.setting_value(getattr(self, k), v, k))
        return self


@dataclass(frozen=True)
class Preset:
    """A recipe from the literature: parameterization, settings and a description."""

    name: str
    param: str  # "pixel" (raw pixels, clamped) or "fft" (FFT + decorrelated colour + sigmoid)
    settings: InversionSettings
    description: str
    sd: float = 0.01


PRESETS: dict[str, Preset] = {
    "mahendran": Preset(
        "mahendran",
        "pixel",
        InversionSettings(),
        "Mahendran & Vedaldi 2015: pixels, alpha-norm (alpha 6, weight 1e-3) and TV (beta 2, "
        "weight 3) priors, jitter 2 for the first three quarters, Adam lr 0.02 cosine-decayed to "
        "0.001, 200 steps.",
    ),
    "olah": Preset(
        "olah",
        "fft",
        InversionSettings(alpha_weight=0.0, tv_weight=1e-3, lr=0.05, lr_end=0.005),
        "Olah et al. 2017 (Feature Visualization) applied to inversion: FFT parameterization "
        "with decorrelated colour as the prior, a little TV (1e-3), jitter 2 for three quarters, "
        "Adam lr 0.05 cosine-decayed to 0.005, 200 steps.",
    ),
    "unregularized": Preset(
        "unregularized",
        "pixel",
        InversionSettings(alpha_weight=0.0, tv_weight=0.0, jitter=0),
        "The baseline of Mahendran & Vedaldi's ablation: feature matching alone, no prior, no "
        "jitter (deep layers give high-frequency patterns no photo contains), Adam lr 0.02 "
        "cosine-decayed to 0.001, 200 steps.",
    ),
}


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


# ------------------------------------------------------------------------------------ helpers
def target_pixels(
    handle: ModelHandle, image: Image.Image | torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """The photo as the network will see it: pixel space ``(1, C, H, W)`` on the device.

    A PIL image is resized and centre-cropped like :meth:`ModelHandle.to_pixels` (to ``size``
    when given); a tensor is taken as pixel space (``(C, H, W)`` or a batch of one) and resized
    to ``size`` when given.
    """
    if size is not None:
        size = limits.check_side(size)
    if isinstance(image, torch.Tensor):
        t = handle.to_pixels(image)  # batched, on the device, float32
        if t.dim() != 4 or t.shape[0] != 1:
            raise ValueError(
                f"image must be one pixel-space image (C, H, W) or (1, C, H, W), got shape "
                f"{tuple(image.shape)}"
            )
        if t.shape[1] != handle.in_channels:
            raise ValueError(
                f"image has {t.shape[1]} channels but model {handle.name!r} takes "
                f"{handle.in_channels}"
            )
        if not torch.isfinite(t).all():
            raise ValueError(
                "image contains NaN or infinite values; clean it first (pixels in [0, 1], e.g. "
                "torch.nan_to_num(x).clamp(0, 1))"
            )
        limits.check_pixel_range(t, "image")
        if size is None:
            limits.check_int(max(t.shape[-2:]), "image side", limit="MAX_IMAGE_SIDE")
        elif tuple(t.shape[-2:]) != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
        return t.clamp(0, 1)  # the resampling may overshoot by a hair
    if isinstance(image, Image.Image):
        return handle.to_pixels(image, size)
    raise TypeError(
        f"image must be a PIL image or a pixel-space tensor, got {type(image).__name__}; "
        "e.g. cnnvis_widgets.data.sample_image('cat')"
    )


def _check_layers(handle: ModelHandle, layers: Sequence[str]) -> list[str]:
    names = list(layers)
    if not names:
        raise ValueError("no layer given: pass at least one layer name (see handle.layers)")
    for name in names:
        handle.layer(name)  # KeyError listing the nearest names
    return names


def layer_features(
    handle: ModelHandle, pixels: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Features of a pixel-space batch at ``layers`` (the forward pass stops at the deepest one).

    Returns ``{layer: tensor}``, detached, on the device.
    """
    names = _check_layers(handle, [layers] if isinstance(layers, str) else layers)
    with torch.no_grad(), capture(handle, names, stop_early=True) as acts:
        forward_to(handle, handle.normalize(pixels.to(handle.device)), acts, needs_logits=False)
        return {n: acts[n].detach() for n in names}


def _sq_norm(t: torch.Tensor) -> torch.Tensor:
    return t.float().pow(2).flatten(1).sum(dim=1)


def feature_error(
    handle: ModelHandle, pixels: torch.Tensor, layer: str, target: torch.Tensor
) -> torch.Tensor:
    """Normalized feature error ``||phi(x) - phi0||^2 / ||phi0||^2`` per image ``(B,)``.

    ``pixels``: pixel-space batch; ``target``: ``phi0``, the layer's features of the original
    (a batch of one broadcasts).
    """
    phi = layer_features(handle, pixels, layer)[layer]
    return (_sq_norm(phi - target) / _sq_norm(target).clamp_min(1e-12)).cpu()


def pixel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over all pixels of each image of ``a`` with ``b``, ``(B,)``."""
    a = a.detach().float().flatten(1)
    b = b.detach().float().to(a.device).flatten(1).expand_as(a)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).cpu()


def pixel_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel difference of each image of ``a`` with ``b``, over ``b``'s variance."""
    a = a.detach().float().flatten(1)
    b = b.detach().float().to(a.device).flatten(1).expand_as(a)
    return ((a - b).pow(2).mean(1) / b.var(dim=1).clamp_min(1e-12)).cpu()


def _settings_for(
    preset: str,
    settings: InversionSettings | None,
    steps: int | None,
    lr: float | None,
    overrides: dict[str, Any],
) -> tuple[Preset, InversionSettings]:
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if settings is None:
        settings = dataclasses.replace(p.settings)
    settings.update(**overrides)
    if steps is not None:
        settings.steps = limits.check_steps(steps)
    if lr is not None:
        settings.lr = float(lr)
    limits.check_steps(settings.steps)
    limits.check_transforms(jitter=settings.jitter)
    return p, settings


def _cosine(i: int, total: int, base: float, end: float) -> float:
    if total <= 1 or end >= base:
        return base
    return end + 0.5 * (base - end) * (1.0 + math.cos(math.pi * i / (total - 1)))


class _Groups:
    """Rows of a batch sorted by layer depth, and the forward pass that drops finished rows.

    Row ``i`` of the (sorted) batch is matched at ``layers[i]``. With ``shrink``, the rows of a
    layer are cut from the batch right after that layer has run, so the deeper part of the
    network only sees the rows that still need it: a strip of layers costs about what separate
    runs cost, in one pass.
    """

    def __init__(self, handle: ModelHandle, layers: list[str]) -> None:
        self.handle = handle
        self.order = sorted(range(len(layers)), key=lambda i: handle.layer(layers[i]).order)
        self.layers = [layers[i] for i in self.order]
        self.groups: list[tuple[str, int, int]] = []  # (layer, start, stop) in sorted rows
        for i, name in enumerate(self.layers):
            if self.groups and self.groups[-1][0] == name:
                self.groups[-1] = (name, self.groups[-1][1], i + 1)
            else:
                self.groups.append((name, i, i + 1))
        self.names = [g[0] for g in self.groups]
        self.shrink = False
        self.identity = self.order == list(range(len(layers)))
        self.inverse = torch.tensor(
            sorted(range(len(layers)), key=lambda i: self.order[i]), device=handle.device
        )
        # handle.normalize as one fused multiply-add, its constants built once (not every step)
        ones = torch.ones(1, handle.in_channels, 1, 1, device=handle.device)
        self._scale = 1.0 / (handle.denormalize(ones) - handle.denormalize(0 * ones))
        self._shift = handle.normalize(0 * ones)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel space -> model input, the same map as ``handle.normalize``."""
        return torch.addcmul(self._shift, x, self._scale)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``x`` (sorted rows); returns ``{layer: features of that layer's rows}``."""
        h = self.handle
        owner = threading.get_ident()
        hooks = []
        with capture(h, self.names, stop_early=True) as acts:
            try:
                if self.shrink:
                    for name, start, stop in self.groups[:-1]:

                        def cut(module: Any, inputs: Any, out: torch.Tensor, n=stop - start):
                            if threading.get_ident() != owner:
                                return None
                            return out[n:]

                        hooks.append(h.module(name).register_forward_hook(cut))
                forward_to(h, self.normalize(x), acts, needs_logits=False)
            finally:
                for hook in hooks:
                    hook.remove()
            out = {}
            for name, start, stop in self.groups:
                a = acts[name]
                out[name] = a[: stop - start] if self.shrink else a[start:stop]
            return out

    def try_shrink(self, probe: torch.Tensor) -> None:
        """Turn shrinking on when it gives the same features as the full batch on ``probe``
        (it does not where a skip connection crosses a cut layer: then the batch stays whole)."""
        if len(self.groups) < 2:
            return
        with torch.no_grad():
            full = self.forward(probe)
            self.shrink = True
            try:
                cut = self.forward(probe)
                for name in self.names:
                    a, b = cut[name].float(), full[name].float()
                    if a.shape != b.shape or (a - b).norm() > 1e-3 * b.norm() + 1e-6:
                        self.shrink = False
            except Exception:  # noqa: BLE001 - any failure means: do not shrink
                self.shrink = False


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
) -> Iterator[Step]:
    """One reconstruction per entry of ``layers`` as one batch (row ``i`` matches ``layers[i]``)."""
    b = len(layers)
    _, c, hgt, wid = target.shape
    limits.check_batch(b, hgt, wid, name="number of layers")
    seed = limits.as_int(seed, "seed")
    groups = _Groups(handle, layers)
    phi0 = layer_features(handle, target, groups.names)
    norms = {n: _sq_norm(t).clamp_min(1e-12) for n, t in phi0.items()}
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
        parts = [_sq_norm(feats[n] - phi0[n]) / norms[n] for n in groups.names]
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

    with handle.pinned(ttl=1.0):  # the twin checked once per second of the run, not per step
        for step in optimize_steps(
            param,
            loss_fn,
            settings,
            optimizer="adam",
            lr_schedule=schedule,
            post_step=post_step if not fft else None,
            stop_event=stop_event,
        ):
            if not groups.identity and step.image is not None:
                step.image = step.image[groups.inverse]
                step.metrics["feature_error"] = step.metrics["feature_error"][groups.inverse]
            yield step


def invert_steps(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layer: str,
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
) -> Iterator[Step]:
    """Reconstruct ``image`` from the features of ``layer``; yield a ``Step`` after each update.

    Each step's ``loss`` is the total loss and ``metrics["feature_error"]`` the normalized feature
    error ``||phi(x)-phi0||^2 / ||phi0||^2`` of the image evaluated at that step (jittered while
    jitter is on), per image ``(B,)``. ``Step.image`` is the pixel-space reconstruction.

    Parameters
    ----------
    handle : ModelHandle
    image : PIL image or tensor
        The photo to reconstruct (a pixel-space tensor ``(C, H, W)`` / ``(1, C, H, W)`` is used
        as is, a PIL image resized and centre-cropped to ``size``).
    layer : str
        Dotted layer name (``KeyError`` lists the nearest names).
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
    named["jitter"] = jitter
    overrides.update({k: v for k, v in named.items() if v is not None})
    p, settings = _settings_for(preset, settings, steps, lr, overrides)
    names = _check_layers(handle, [layer])
    target = target_pixels(handle, image, size)
    yield from _run(handle, target, names, p, settings, seed, sd, stop_event, init)


def invert_layers_steps(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layers: Sequence[str],
    *,
    preset: str = "mahendran",
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    size: int | None = None,
    settings: InversionSettings | None = None,
    stop_event: threading.Event | None = None,
    sd: float | None = None,
    init: torch.Tensor | None = None,
    **overrides: Any,
) -> Iterator[Step]:
    """Like :func:`invert_steps`, with one reconstruction per entry of ``layers``, as one batch.

    ``Step.image`` is ``(len(layers), C, H, W)`` in the order of ``layers`` and
    ``metrics["feature_error"]`` has one value per layer. Every step runs one forward pass: the
    batch's rows leave it right after their own layer where the network allows (see
    :func:`invert_layers`).

    Examples
    --------
    >>> layers = ["_blocks.1", "_blocks.8"]
    >>> for s in invert_layers_steps(h, img, layers, steps=50):  # doctest: +SKIP
    ...     print(s.index, s.metrics["feature_error"].tolist())
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    p, settings = _settings_for(preset, settings, steps, lr, overrides)
    names = _check_layers(handle, layers)
    target = target_pixels(handle, image, size)
    yield from _run(handle, target, names, p, settings, seed, sd, stop_event, init)


def _collect(
    handle: ModelHandle,
    gen: Iterator[Step],
    target: torch.Tensor,
    layers: list[str],
    settings: InversionSettings,
    preset: str,
) -> InversionResult:
    history: list[float] = []
    feats: list[list[float]] = []
    last: Step | None = None
    for step in gen:
        history.append(float(step.loss or 0.0))
        feats.append([float(v) for v in step.metrics["feature_error"]])
        last = step
    if last is None or last.image is None:
        raise RuntimeError("the run made no step (steps=0 or stopped before the first step)")
    image = last.image.clone().clamp(0, 1)
    errors = []
    for i, name in enumerate(layers):
        phi0 = layer_features(handle, target, name)[name]
        errors.append(feature_error(handle, image[i : i + 1], name, phi0))
    return InversionResult(
        image=image.cpu(),
        target=target.detach().cpu(),
        layers=list(layers),
        feature_error=torch.cat(errors),
        pixel_correlation=pixel_correlation(image, target),
        pixel_error=pixel_error(image, target),
        history=history,
        feature_history=feats,
        settings=settings,
        preset=preset,
    )


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
    settings, preset = _prepare(kwargs)
    target = target_pixels(handle, image, kwargs.get("size"))
    kwargs.pop("size", None)
    gen = invert_steps(handle, target, layer, settings=settings, preset=preset, **kwargs)
    return _collect(handle, gen, target, [layer], settings, preset)


def _prepare(kwargs: dict[str, Any]) -> tuple[InversionSettings, str]:
    """Build the settings object up front so the result can report it."""
    preset = kwargs.pop("preset", "mahendran")
    names = {f.name for f in dataclasses.fields(InversionSettings)}
    over = {k: kwargs.pop(k) for k in list(kwargs) if k in names and kwargs[k] is not None}
    for k in list(kwargs):
        if k in names:
            kwargs.pop(k)
    _, settings = _settings_for(
        preset,
        kwargs.pop("settings", None),
        kwargs.pop("steps", None),
        kwargs.pop("lr", None),
        over,
    )
    return settings, preset


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
    names = _check_layers(handle, layers)
    settings, preset = _prepare(kwargs)
    target = target_pixels(handle, image, kwargs.pop("size", None))
    if batched:
        p = PRESETS[preset]
        gen = _run(
            handle,
            target,
            names,
            p,
            settings,
            kwargs.pop("seed", 0),
            kwargs.pop("sd", None),
            kwargs.pop("stop_event", None),
            kwargs.pop("init", None),
        )
        if kwargs:
            raise TypeError(f"invert_layers() got unknown argument(s) {', '.join(kwargs)}")
        return _collect(handle, gen, target, names, settings, preset)
    parts = [
        invert(
            handle,
            target,
            name,
            preset=preset,
            settings=dataclasses.replace(settings),
            **kwargs,
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
