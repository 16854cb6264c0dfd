"""One adversarial run as core steps: attack -> analyze -> maps -> unit pictures, and its picture.

The Adversarial widget translates its settings into these calls and their results into traits:

- :func:`attack_args` turns a method name (``"fgsm"``, ``"pgd-linf"``, ``"pgd-l2"``) and its
  settings into the keyword arguments of :func:`~cnnvis_widgets.core.adversarial.pgd_steps`;
- :func:`attack_steps` streams the attack (or replays a cached one) and returns the adversarial
  image with the losses;
- :func:`analyze_pair` runs :func:`~cnnvis_widgets.core.adversarial.analyze` and the attribution
  maps of both images for both classes;
- :func:`unit_pictures_steps` synthesizes what the most changed units look for (activation
  maximization, one batch, cached per unit);
- :func:`summary_lines`, :func:`attribution_tiles`, :func:`units_grid` and :func:`report_image`
  draw the result (text, map tiles, unit grid, one PIL picture of everything).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from ..models import ModelHandle
from . import activation_max as am
from . import adversarial as A
from . import objectives as O
from .imaging import colorize, make_grid, overlay, to_pil
from .optimize import Step

__all__ = [
    "METHODS",
    "norm_of",
    "eps_text",
    "attack_args",
    "describe",
    "attack_steps",
    "analyze_pair",
    "unit_pictures_steps",
    "summary_lines",
    "top1_label",
    "attribution_tiles",
    "units_grid",
    "units_row",
    "labelled_row",
    "stack_rows",
    "report_image",
]

#: the attacks offered by name
METHODS = ("fgsm", "pgd-linf", "pgd-l2")
#: unit pictures per row of :func:`units_grid`
UNIT_COLS = 3
#: most cached unit pictures before the cache is emptied (about 50 MB of 64 px pictures)
AM_CACHE_MAX = 1024


def norm_of(method: str) -> str:
    """The norm of an attack method: ``"l2"`` for ``"pgd-l2"``, else ``"linf"``.

    Examples
    --------
    >>> norm_of("pgd-l2"), norm_of("fgsm")
    ('l2', 'linf')
    """
    return "l2" if method == "pgd-l2" else "linf"


def eps_text(eps: float, norm: str) -> str:
    """Epsilon as a person reads it: grey levels for L-infinity, the plain number for L2.

    Examples
    --------
    >>> eps_text(4 / 255, "linf")
    '4/255 (0.01569)'
    >>> eps_text(1.0, "l2")
    '1'
    """
    if norm == "linf":
        return f"{eps * 255:.3g}/255 ({eps:.4g})"
    return f"{eps:.4g}"


def attack_args(
    method: str,
    eps: float,
    steps: int = 10,
    step_size: float = 0.0,
    random_start: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Keyword arguments of :func:`~cnnvis_widgets.core.adversarial.pgd_steps` for a method.

    FGSM is one step of size ``eps`` without a random start; a ``step_size`` of 0 lets PGD pick
    its default (``2.5 * eps / steps``).

    Examples
    --------
    >>> attack_args("fgsm", 0.03)
    {'eps': 0.03, 'steps': 1, 'step_size': 0.03, 'norm': 'linf', 'random_start': False}
    >>> attack_args("pgd-l2", 1.0, steps=5)["norm"]
    'l2'
    """
    eps = float(eps)
    if method == "fgsm":
        return dict(eps=eps, steps=1, step_size=eps, norm="linf", random_start=False)
    return dict(
        eps=eps,
        steps=int(steps),
        step_size=float(step_size) or None,
        norm=norm_of(method),
        random_start=bool(random_start),
        seed=int(seed),
    )


def describe(method: str, eps: float, target: int, class_name: Callable[[int], str]) -> str:
    """One line naming an attack: ``"pgd-linf eps 4/255 (0.01569), untargeted"``.

    Examples
    --------
    >>> describe("fgsm", 4 / 255, -1, str)
    'fgsm eps 4/255 (0.01569), untargeted'
    """
    tgt = "untargeted" if target < 0 else f"target {class_name(target)}"
    return f"{method} eps {eps_text(eps, norm_of(method))}, {tgt}"


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
    last: Step | None = None
    losses = []
    for s in A.pgd_steps(handle, clean, target=target, stop_event=stop, **args):
        last = s
        if s.loss is not None:
            losses.append(s.loss)
        yield Step(s.index, s.loss, s.image, s.metrics, total)
    if last is None or last.image is None or stop.is_set():
        return None
    return last.image.detach().clone(), losses


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


def _label(top: dict[str, Any]) -> str:
    return f"{top['name']} ({top['index']}), p={top['prob']:.3f}"


def summary_lines(
    r: A.PairAnalysis,
    *,
    method: str,
    eps: float,
    steps: int,
    target: int,
    class_name: Callable[[int], str],
    attribution_error: str = "",
) -> list[str]:
    """The text summary of an attack: settings, both top-1, the verdict, sizes, the maps.

    Examples
    --------
    >>> "\\n".join(summary_lines(r, method="fgsm", eps=4 / 255, steps=1, target=-1,
    ...                          class_name=h.class_name))                # doctest: +SKIP
    """
    norm = norm_of(method)
    ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
    orig, new = r.original_class[0], r.new_class[0]
    targeted = target >= 0
    verdict = (
        ("reached the target" if r.success[0] else "did not reach the target")
        if targeted
        else ("changed the top-1 class" if r.success[0] else "did not change the top-1 class")
    )
    lines = [
        f"{method}, epsilon {eps_text(eps, norm)}"
        + ("" if method == "fgsm" else f", {steps} steps")
        + (f", target {class_name(target)} ({target})" if targeted else ""),
        f"clean:       {_label(ct)}",
        f"adversarial: {_label(at)}",
        f"the attack {verdict}",
        f"perturbation: L-inf {r.linf[0] * 255:.3g}/255, L2 {r.l2[0]:.4g}",
        f"maps: {r.attribution.get('method', '')}"
        + (f" at {r.attribution['layer']}" if r.attribution.get("layer") else "")
        + f"; classes {class_name(orig)} ({orig}) and {class_name(new)} ({new})",
    ]
    if attribution_error:
        lines.append(f"no attribution maps: {attribution_error}")
    return lines


def top1_label(top: dict[str, Any]) -> str:
    """``"tabby (281), p=0.612"`` for one entry of a top-k list.

    Examples
    --------
    >>> top1_label({"name": "tabby", "index": 281, "prob": 0.6123})
    'tabby (281), p=0.612'
    """
    return _label(top)


def attribution_tiles(
    r: A.PairAnalysis, class_name: Callable[[int], str]
) -> tuple[list[torch.Tensor], list[str]]:
    """Heat-map overlays ``(3, H, W)`` of clean/adversarial x original/new class, with captions.

    Order: clean/original, clean/new, adversarial/original, adversarial/new.

    Examples
    --------
    >>> tiles, captions = attribution_tiles(r, h.class_name)               # doctest: +SKIP
    """
    orig, new = r.original_class[0], r.new_class[0]
    tiles, caps = [], []
    for img_key, img in (("clean", r.clean), ("adversarial", r.adversarial)):
        for cls_key, cls in (("original", orig), ("new", new)):
            m = r.attribution[f"{img_key}/{cls_key}"][0:1]
            heat = colorize(m, "inferno")
            tiles.append(overlay(img[0:1], heat, 0.6, weight=m)[0])
            caps.append(f"{img_key} image\n{cls_key}: {class_name(cls)}")
    return tiles, caps


def units_grid(pixels: torch.Tensor, cols: int = UNIT_COLS) -> torch.Tensor:
    """Unit pictures in order, ``cols`` per row, blank cells filling the last row.

    Examples
    --------
    >>> units_grid(torch.zeros(4, 3, 8, 8)).shape
    torch.Size([3, 22, 32])
    """
    px = pixels if pixels.shape[1] == 3 else pixels.repeat(1, 3, 1, 1)
    rows = max(1, -(-px.shape[0] // cols))
    cells = px.new_ones((rows * cols, *px.shape[1:]))
    cells[: px.shape[0]] = px
    return make_grid(cells, ncol=cols, pad=2)


def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def labelled_row(
    tiles: list[torch.Tensor], captions: list[str], tile: int, title: str = ""
) -> Image.Image:
    """Tiles ``(3, h, w)`` side by side, each scaled to ``tile`` px, with a caption under each.

    Captions keep two lines, each cut with "…" to the tile's width.

    Examples
    --------
    >>> labelled_row([torch.zeros(3, 8, 8)] * 2, ["a", "b"], 32, title="t").size
    (76, 84)
    """
    font = _font(12)
    pad, cap_h = 4, 30
    title_h = 18 if title else 0
    width = pad + len(tiles) * (tile + pad)
    canvas = Image.new("RGB", (width, title_h + tile + cap_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 2), title, fill=(20, 20, 20), font=font)
    for i, (img, cap) in enumerate(zip(tiles, captions)):
        pil = to_pil(img).convert("RGB")
        if pil.size != (tile, tile):
            pil = pil.resize((tile, tile), Image.Resampling.BILINEAR)
        x = pad + i * (tile + pad)
        canvas.paste(pil, (x, title_h))
        lines = cap.split("\n")[:2]
        for j, line in enumerate(lines):
            text = line
            while text and draw.textlength(text, font=font) > tile:
                text = text[:-2] + "…" if len(text) > 2 else ""
            draw.text((x, title_h + tile + 2 + 13 * j), text, fill=(40, 40, 40), font=font)
    return canvas


def stack_rows(rows: list[Image.Image]) -> Image.Image:
    """PIL images one under the other, left-aligned on white.

    Examples
    --------
    >>> stack_rows([Image.new("RGB", (4, 2)), Image.new("RGB", (6, 3))]).size
    (6, 5)
    """
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def units_row(r: A.PairAnalysis, units_pixels: torch.Tensor | None) -> Image.Image | None:
    """The unit pictures as a captioned row (None without pictures or units).

    Examples
    --------
    >>> units_row(r, px)                                                    # doctest: +SKIP
    """
    if units_pixels is None or not r.units:
        return None
    caps = [f"unit {u['unit']}\nchange {u['change']:.3g}" for u in r.units[0]]
    tiles = [p if p.shape[0] == 3 else p.repeat(3, 1, 1) for p in units_pixels]
    return labelled_row(tiles, caps, 96, title=f"most changed units of {r.layer}")


def report_image(
    r: A.PairAnalysis,
    *,
    title: str,
    eps: float,
    norm: str,
    class_name: Callable[[int], str],
    units_pixels: torch.Tensor | None = None,
) -> Image.Image:
    """One picture of the whole result: images, maps, units (static export, ``save()``).

    Parameters
    ----------
    r : PairAnalysis
        The analysis of the pair.
    title : str
        Heading of the first row.
    eps, norm : float, str
        The attack's budget (shown under the perturbation).
    class_name : callable
        Class index -> name, for the captions of the maps.
    units_pixels : torch.Tensor, optional
        :func:`unit_pictures_steps` pictures; a third row when given.

    Examples
    --------
    >>> report_image(r, title="cat: fgsm", eps=4 / 255, norm="linf",
    ...              class_name=h.class_name).save("attack.png")             # doctest: +SKIP
    """
    side = max(96, min(224, int(r.clean.shape[-1])))
    ct, at = r.clean_top[0][0], r.adversarial_top[0][0]
    top = labelled_row(
        [r.clean[0], r.amplified[0], r.adversarial[0]],
        [
            f"clean: {ct['name']}\np={ct['prob']:.3f}",
            f"perturbation x{0.5 / max(r.linf[0], 1e-12):.0f}\neps {eps_text(eps, norm)}",
            f"adversarial: {at['name']}\np={at['prob']:.3f}",
        ],
        side,
        title=title,
    )
    rows = [top]
    if r.attribution:
        tiles, caps = attribution_tiles(r, class_name)
        rows.append(labelled_row(tiles, caps, side, title=str(r.attribution["method"])))
    units = units_row(r, units_pixels)
    if units is not None:
        rows.append(units)
    return stack_rows(rows)
