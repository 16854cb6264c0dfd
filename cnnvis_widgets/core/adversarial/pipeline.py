"""One adversarial run as core steps: attack -> analyze -> maps -> unit pictures.

The Adversarial widget translates its settings into one :class:`AttackSettings` and one
:func:`run_steps` call, and the :class:`AdversarialRun` it fills in into traits:

- :func:`image_argument` and :func:`clean_pixels` turn the ``image=`` argument (a packaged
  photo's name, a file, a PIL image, a pixel tensor) into the clean batch the network sees;
- :func:`attack_steps` streams the attack (or replays a cached one) and returns the adversarial
  image with the losses;
- :func:`analyze_pair` runs :func:`~cnnvis_widgets.core.adversarial.analyze` and the attribution
  maps of both images for both classes;
- :func:`unit_pictures_steps` synthesizes what the most changed units look for (activation
  maximization, one batch, cached per unit);
- :func:`run_steps` chains the three and returns the run.

The drawing of a run lives in :mod:`.pictures`, the settings in :mod:`.settings`; both are
importable from here too (and from the old name ``cnnvis_widgets.core.adversarial_pipeline``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ... import data
from ...models import ModelHandle
from ...models.convert import pixel_tensor
from .. import activation_max as am
from .. import adversarial as A  # the package: its names can be monkeypatched
from .. import objectives as O
from ..blocks.optimize import Step
from ..blocks.runs import Run
from . import pictures, settings
from .pictures import *  # noqa: F403 - the drawing of a run, importable from here too
from .pictures import report_image
from .settings import *  # noqa: F403 - the settings of a run, importable from here too
from .settings import AttackSettings

__all__ = [
    "image_argument",
    "clean_pixels",
    "attack_steps",
    "analyze_pair",
    "unit_pictures_steps",
    "AdversarialRun",
    "run_steps",
    "AM_CACHE_MAX",
    *settings.__all__,
    *pictures.__all__,
]

#: most cached unit pictures before the cache is emptied (about 50 MB of 64 px pictures)
AM_CACHE_MAX = 1024
#: the choice value of an image given as an argument (a file, a PIL image or a tensor)
CUSTOM = "custom"


def image_argument(
    image: Any, names: list[str], in_channels: int = 3
) -> tuple[str, Image.Image | torch.Tensor | None, str]:
    """The ``image=`` argument of a run -> ``(choice, photo, label)``.

    A packaged photo's name (one of ``names``) gives ``(name, None, name)``: the photo is loaded
    when used. A file, a PIL image or a pixel tensor ``(C, H, W)`` / ``(1, C, H, W)`` in
    ``[0, 1]`` gives ``(CUSTOM, photo, label for the choice list)``. Anything else: ``KeyError``
    naming the packaged photos (``ValueError`` for a tensor outside ``[0, 1]``).

    Examples
    --------
    >>> image_argument("cat", ["cat", "coffee"])
    ('cat', None, 'cat')
    >>> image_argument(torch.zeros(3, 8, 8), [])[::2]
    ('custom', 'your image (tensor)')
    """
    if isinstance(image, str) and image in names:
        return image, None, image
    if isinstance(image, (str, Path)) and Path(image).is_file():
        return CUSTOM, data.load_image(image), f"your image: {Path(image).name}"
    if isinstance(image, Image.Image):
        return CUSTOM, data.load_image(image), "your image"
    if isinstance(image, torch.Tensor):
        px = pixel_tensor(image, in_channels)
        if float(px.min()) < 0 or float(px.max()) > 1:
            raise ValueError(
                "image tensor must be in pixel space [0, 1]; use handle.denormalize(x) for a "
                "model-input tensor"
            )
        return CUSTOM, px, "your image (tensor)"
    raise KeyError(
        f"image {image!r}: not a packaged photo nor an image file; packaged photos: "
        f"{', '.join(names)} (or pass a PIL image or a pixel tensor)"
    )


def clean_pixels(handle: ModelHandle, photo: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """The clean batch the network sees: pixel space ``(1, C, size, size)`` on the device.

    A PIL photo goes through ``handle.to_pixels``; a pixel tensor is resized bilinearly.

    Examples
    --------
    >>> clean_pixels(h, torch.rand(1, 3, 40, 40), 32).shape                 # doctest: +SKIP
    torch.Size([1, 3, 32, 32])
    """
    if isinstance(photo, torch.Tensor):
        px = F.interpolate(photo, size=(size, size), mode="bilinear", align_corners=False)
        return px.clamp(0, 1).to(handle.device)
    return handle.to_pixels(photo, size)


def attack_steps(
    handle: ModelHandle,
    clean: torch.Tensor,
    *,
    target: int | None,
    total: int,
    reuse: tuple[torch.Tensor, list[float]] | None = None,
    stop_event: threading.Event | None = None,
    **args: Any,
) -> Generator[Step, None, tuple[torch.Tensor, list[float]] | None]:
    """Stream an attack; return ``(adversarial, losses)``, or None when stopped or empty.

    Parameters
    ----------
    handle : ModelHandle
        The model attacked.
    clean : torch.Tensor
        Pixel-space clean batch ``(1, C, H, W)``.
    target : int or None
        Class to reach; None for an untargeted attack.
    total : int
        ``Step.total`` of the steps yielded (the whole run, when more phases follow).
    reuse : (torch.Tensor, list of float), optional
        A cached attack of the same settings: yielded as one step and returned (on the device).
    stop_event : threading.Event, optional
        Set to stop between steps.
    **args
        :func:`attack_args`.

    Examples
    --------
    Inside a run's generator (``yield from`` passes the steps on and returns the result):

    >>> args = attack_args("pgd-linf", 4 / 255)
    >>> adv, losses = yield from attack_steps(h, x, target=None, total=10, **args)  # doctest: +SKIP
    """
    n_attack = int(args["steps"])
    if reuse is not None:
        adv, losses = reuse[0].to(handle.device), reuse[1]
        yield Step(n_attack - 1, losses[-1] if losses else None, adv, {}, total)
        return adv, losses
    stop = stop_event or threading.Event()
    losses = []
    run = Run(A.pgd_steps(handle, clean, target=target, stop_event=stop, **args))
    for s in run:
        if s.loss is not None:
            losses.append(s.loss)
        yield Step(s.index, s.loss, s.image, s.metrics, total)
    if run.result is None or stop.is_set():
        return None
    return run.result, losses


def analyze_pair(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    *,
    target: int | None,
    eps: float | None,
    layer: str | None,
    units: int,
    attribution: str,
    cam_layer: str | None = None,
) -> tuple[A.PairAnalysis, str]:
    """:func:`~cnnvis_widgets.core.adversarial.analyze` plus the four attribution maps.

    Returns the analysis and an error text ("" when the maps were computed; the analysis is kept
    without maps when the attribution method fails, e.g. guided backprop on an unsupported model).

    Examples
    --------
    >>> r, err = analyze_pair(h, clean, adv, target=None, eps=4 / 255, layer="blocks.3",
    ...                       units=6, attribution="grad_cam")                # doctest: +SKIP
    """
    analysis = A.analyze(
        handle,
        clean,
        adversarial,
        target=target,
        eps=eps,
        layer=layer,
        units=units,
        attribution=None,
    )
    try:
        analysis.attribution = A.attribution_maps(
            handle,
            clean,
            adversarial,
            analysis.original_class,
            analysis.new_class,
            attribution,
            cam_layer or None,
        )
    except Exception as exc:  # noqa: BLE001 - e.g. guided backprop on an unsupported model
        return analysis, f"{type(exc).__name__}: {exc}"
    return analysis, ""


def unit_pictures_steps(
    handle: ModelHandle,
    layer: str,
    units: list[int],
    *,
    steps: int,
    size: int,
    seed: int,
    cache: dict[tuple, torch.Tensor],
    offset: int = 0,
    total: int | None = None,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, tuple[torch.Tensor, bool] | None]:
    """What each unit looks for: one activation-maximization batch of the units not cached.

    Yields ``Step(offset + i, ..., metrics={"phase": "units"})``; returns ``(pixels, reused)``
    (pictures ``(len(units), C, size, size)`` in the order of ``units``; ``reused`` when all came
    from ``cache``), or None when stopped. ``cache`` maps ``(layer, steps, size, seed, unit)`` to
    a picture; it is emptied past :data:`AM_CACHE_MAX` entries.

    Examples
    --------
    >>> px, reused = yield from unit_pictures_steps(h, "blocks.3", [4, 7], steps=48, size=64,
    ...                                              seed=0, cache={})     # doctest: +SKIP
    """
    key = (layer, int(steps), int(size), int(seed))
    total = offset + int(steps) if total is None else total
    if len(cache) > AM_CACHE_MAX:
        cache.clear()
    missing = [u for u in units if (*key, u) not in cache]
    reused = not missing
    if missing:
        stop = stop_event or threading.Event()
        last: Step | None = None
        for s in am.maximize_steps(
            handle,
            O.channel(layer, missing),
            batch=len(missing),
            steps=int(steps),
            size=int(size),
            seed=int(seed),
            stop_event=stop,
        ):
            last = s
            yield Step(offset + s.index, None, None, {"phase": "units"}, total)
        if last is None or last.image is None or stop.is_set():
            return None
        images = last.image.detach().clamp(0, 1).cpu()
        for u, img in zip(missing, images):
            cache[(*key, u)] = img
    else:
        yield Step(total - 1, None, None, {"phase": "units"}, total)
    return torch.stack([cache[(*key, u)] for u in units]), reused


@dataclass
class AdversarialRun:
    """One adversarial run, filled in as it goes (a run stopped early keeps what it reached).

    Attributes
    ----------
    settings : AttackSettings
        What the run computes with.
    image : str
        Name of the photo attacked (for the record).
    attack_reused : bool
        The attack came from the cache (same clean image and attack settings).
    analysis : PairAnalysis or None
        The analyses of the pair, once computed.
    attribution_error : str
        Why the attribution maps are missing ("" when they were computed).
    units_pixels : torch.Tensor or None
        What the most changed units look for, in table order (after the unit phase).
    units_reused : bool
        Every unit picture came from the cache.
    """

    settings: AttackSettings = field(default_factory=AttackSettings)
    image: str = ""
    attack_reused: bool = False
    analysis: A.PairAnalysis | None = None
    attribution_error: str = ""
    units_pixels: torch.Tensor | None = None
    units_reused: bool = False

    def record(self) -> dict[str, Any]:
        """The JSON-able result of the run (the settings of the attack, then its results).

        Examples
        --------
        >>> AdversarialRun(AttackSettings(method="pgd-l2", epsilon=1.0)).record()["norm"]
        'l2'
        """
        s = self.settings
        rec: dict[str, Any] = {
            "method": s.method,
            "epsilon": s.epsilon,
            "norm": s.norm,
            "target": s.target_class,
            "image": self.image,
            "attack_reused": self.attack_reused,
            "units_reused": self.units_reused,
        }
        if self.analysis is not None:
            rec.update(self.analysis.summary(0))
            rec["units_synthesized"] = self.units_pixels is not None
            if self.attribution_error:
                rec["attribution_error"] = self.attribution_error
        return rec

    def progress_text(self, step: Step, last_loss: float | None = None) -> str:
        """Where the run is: ``"attack step 3/10, loss 2.31"`` or ``"unit pictures, step 5/48"``.

        Examples
        --------
        >>> run = AdversarialRun(AttackSettings(steps=10, am_steps=48))  # 10 + 48 steps
        >>> run.progress_text(Step(12, None, None, {"phase": "units"}, 58))
        'unit pictures, step 3/48'
        >>> run.progress_text(Step(2, 2.5, None, {}, 58), 2.5)
        'attack step 3/10, loss 2.5'
        """
        n = self.settings.attack_steps  # the Steps slider, then the unit pictures
        if step.metrics.get("phase") == "units":
            return f"unit pictures, step {step.index - n + 1}/{step.total - n}"
        loss = "" if last_loss is None else f", loss {last_loss:.4g}"
        return f"attack step {min(step.index + 1, n)}/{n}{loss}"

    def done_text(self, elapsed: float) -> str:
        """What a finished run did: ``"done, 10 attack steps + 48 steps of unit pictures in
        3.2 s"`` (or ``attack reused``, ``unit pictures reused``).

        Examples
        --------
        >>> AdversarialRun(AttackSettings(method="fgsm"), attack_reused=True).done_text(0.5)
        'done, attack reused (1 steps) + 48 steps of unit pictures in 0.5 s'
        >>> AdversarialRun(AttackSettings(show_units=False)).done_text(2.0)
        'done, 10 attack steps in 2.0 s'
        """
        n, am_steps = self.settings.attack_steps, self.settings.unit_steps
        attack = f"attack reused ({n} steps)" if self.attack_reused else f"{n} attack steps"
        units = f" + {am_steps} steps of unit pictures" if am_steps else ""
        if am_steps and self.units_reused:
            units = ", unit pictures reused"
        return f"done, {attack}{units} in {elapsed:.1f} s"

    def report(self, title: str, class_name: Callable[[int], str]) -> Image.Image:
        """:func:`report_image` of the run (``title``: the heading before the attack's name)."""
        s, r = self.settings, self.analysis
        if r is None:
            raise RuntimeError("the run has no analysis yet")
        return report_image(
            r,
            title=f"{title}: {s.describe(class_name)}",
            eps=s.epsilon,
            norm=s.norm,
            class_name=class_name,
            units_pixels=self.units_pixels,
        )


def run_steps(
    handle: ModelHandle,
    clean: torch.Tensor,
    run: AdversarialRun,
    *,
    attack_cache: dict[tuple, tuple] | None = None,
    am_cache: dict[tuple, torch.Tensor] | None = None,
    on_analysis: Callable[[AdversarialRun], None] | None = None,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, AdversarialRun | None]:
    """The whole run: attack (streamed), analyses and maps, then the unit pictures.

    Steps ``0 .. attack_steps - 1`` are the attack's (``loss``: the attack objective), the
    following ``settings.unit_steps`` the unit pictures' (``metrics["phase"] == "units"``). Fills
    ``run`` in as it goes and returns it, or None when ``stop_event`` stopped the run.

    Parameters
    ----------
    handle : ModelHandle
        The model attacked.
    clean : torch.Tensor
        Pixel-space clean batch ``(1, C, H, W)`` (:func:`clean_pixels`).
    run : AdversarialRun
        The run to fill in; its ``settings`` say what to compute.
    attack_cache : dict, optional
        The last attack: reused when the clean image and the attack settings are the same
        (one entry kept).
    am_cache : dict, optional
        Unit pictures by ``(layer, steps, size, seed, unit)`` (see :func:`unit_pictures_steps`).
    on_analysis : callable, optional
        Called with ``run`` once the analyses are done, before the unit pictures (to show them
        early); not called when the run was stopped.
    stop_event : threading.Event, optional
        Set to stop between steps.

    Examples
    --------
    >>> run = AdversarialRun(AttackSettings(layer="conv2", n_units=3, am_steps=4, am_size=32))
    >>> done = yield from run_steps(h, clean, run, attack_cache={}, am_cache={})  # doctest: +SKIP
    """
    s = run.settings
    stop = stop_event or threading.Event()
    cache: dict[tuple, tuple] = {} if attack_cache is None else attack_cache
    args = s.args()
    n_attack = int(args["steps"])
    total = n_attack + s.unit_steps
    key = s.attack_key()
    hit = cache.get(key)
    reuse = hit[1:] if hit is not None and torch.equal(hit[0], clean.detach().cpu()) else None
    run.attack_reused = reuse is not None
    attack = yield from attack_steps(
        handle, clean, target=s.target_class, total=total, reuse=reuse, stop_event=stop, **args
    )
    if attack is None:
        return None
    adv, losses = attack
    if reuse is None:
        cache.clear()
        cache[key] = (clean.detach().cpu(), adv.cpu(), losses)
    analysis, run.attribution_error = analyze_pair(
        handle,
        clean,
        adv,
        target=s.target_class,
        eps=s.epsilon if s.norm == "linf" else None,
        layer=s.layer,
        units=s.n_units,
        attribution=s.attribution,
        cam_layer=s.cam_layer or None,
    )
    if stop.is_set():  # settings changed meanwhile: the next run publishes
        return None
    run.analysis = analysis
    if on_analysis is not None:
        on_analysis(run)
    if s.unit_steps <= 0 or not analysis.units or stop.is_set():
        return None if stop.is_set() else run
    pictures = yield from unit_pictures_steps(
        handle,
        str(s.layer),
        [r["unit"] for r in analysis.units[0]],
        steps=s.unit_steps,
        size=s.am_size,
        seed=s.seed,
        cache={} if am_cache is None else am_cache,
        offset=n_attack,
        total=total,
        stop_event=stop,
    )
    if pictures is None:
        return None
    run.units_pixels, run.units_reused = pictures
    return run
