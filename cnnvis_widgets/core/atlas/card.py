"""The unit card: everything about one unit side by side.

Its AM image and diversity variants, its top-9 dataset patches and their DeconvNet projections
(the top-k pass shared with the DeconvNet widget's cache), its dissection label, IoU and top
probe images, and the classes whose logits it feeds most
(:func:`~cnnvis_widgets.core.contributions.class_contributions`): what it *responds to*. Beside
it, what *removing* it does (:func:`~cnnvis_widgets.core.importance.ablate`: the accuracy drop
and the classes whose probability falls most when the unit is set to zero).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import torch

from ... import cache
from ...models.handle import ModelHandle
from .. import activation_max as am
from .. import objectives as O
from ..blocks.runs import Run
from ..contributions import class_contributions
from ..imaging import encode, make_grid
from ..optimize import Step
from .grid import _completed, cached_unit_image
from .settings import am_settings, settings_key

__all__ = ["UnitCard", "unit_card_steps", "unit_card", "card_images", "card_view"]


@dataclass
class UnitCard:
    """Everything about one unit (see :func:`unit_card`).

    Attributes
    ----------
    layer : str
    unit : int
    am_image : torch.Tensor
        ``(C, S, S)`` its activation-maximization image (from the layer grid when cached).
    variants : torch.Tensor
        ``(V, C, S, S)`` diverse AM images of the same unit (diversity term across the batch).
    entries : list
        Its top-9 dataset images (:class:`~cnnvis_widgets.core.topk.Entry`).
    patches : list of torch.Tensor
        The receptive-field patches of those images, best first.
    projections : list of torch.Tensor
        Their DeconvNet projections (pixel-coloured), cropped like the patches.
    projection_note : str
        Empty, or why there are no projections (e.g. an activation DeconvNet cannot pass).
    dissection : dict or None
        ``Dissection.unit(...)``: concept, category, IoU, top concepts.
    probe_examples : torch.Tensor or None
        Its top probe images with the thresholded map and concept outlines (3, H, W).
    classes : list of (int, str, float)
        The classes its activation feeds most (:func:`class_contributions` over the top-9
        images), largest first.
    removal : UnitWorth or None
        What removing it does over ``removal_count`` images (accuracy drop, classes hurt most).
    removal_note : str
        How the removal was measured (labels or agreement, images), or why it was not.
    """

    layer: str
    unit: int
    am_image: torch.Tensor
    variants: torch.Tensor
    entries: list[Any]
    patches: list[torch.Tensor]
    projections: list[torch.Tensor]
    projection_note: str = ""
    dissection: dict[str, Any] | None = None
    probe_examples: torch.Tensor | None = None
    classes: list[tuple[int, str, float]] = field(default_factory=list)
    removal: Any = None
    removal_note: str = ""

    def removal_text(self) -> str:
        """What removing the unit does, in words."""
        w = self.removal
        if w is None:
            return self.removal_note or "removal: not measured"
        hurt = ", ".join(f"{n} ({d:+.3f})" for n, d in w.hurts) or "none"
        return (
            f"removing it (set to zero): accuracy {w.accuracy:.1%}, a drop of "
            f"{w.accuracy_drop:+.1%}; {self.removal_note}\nclasses hurt most (probability "
            f"change on their own images): {hurt}"
        )

    def text(self) -> str:
        """A plain-text description."""
        lines = [f"{self.layer} unit {self.unit}"]
        if self.dissection:
            d = self.dissection
            lines.append(
                f"dissection: {d['concept']} ({d['category']}), IoU {d['iou']:.3f}"
                + (" - interpretable" if d["interpretable"] else " - below the threshold")
            )
            runners = ", ".join(f"{c} {v:.3f}" for c, v in d["top_concepts"][1:4])
            if runners:
                lines.append(f"  runners-up: {runners}")
        else:
            lines.append("dissection: not computed for this layer")
        if self.entries:
            lines.append(
                "top images: " + ", ".join(f"{e.name} ({e.value:.3g})" for e in self.entries[:9])
            )
        if self.projection_note:
            lines.append(f"projections: {self.projection_note}")
        if self.classes:
            lines.append("feeds most: " + ", ".join(f"{n} ({v:+.3g})" for _, n, v in self.classes))
        return "\n".join(lines)


def _square(p: torch.Tensor, size: int) -> torch.Tensor:
    from ..imaging import letterbox

    return letterbox(p.float().clamp(0, 1), size)


def unit_card_steps(
    handle: ModelHandle,
    layer: str,
    unit: int,
    *,
    preset: str = "lucid",
    steps: int | None = 128,
    size: int = 64,
    seed: int = 0,
    lr: float | None = None,
    variants: int = 4,
    diversity: float = 1.0,
    dataset: Any = None,
    n_images: int = 64,
    dissection: Any = None,
    probe: Any = None,
    top_classes: int = 5,
    removal: bool = True,
    removal_dataset: Any = None,
    use_cache: bool = True,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, UnitCard | None]:
    """Compute a :class:`UnitCard`; yields a Step per optimization step of the variants run
    (``image``: the variants), one per top-k batch and a last one (``metrics["stage"]``), and
    returns the card (None when ``stop_event`` ended it).

    ``dataset``: the top-9 dataset (default ``augmented_samples(n_images)``, the DeconvNet
    widget's default); its pass is shared through the results cache. ``dissection``: a
    :class:`~cnnvis_widgets.core.dissection.Dissection` covering ``layer`` (and ``probe``, its
    probe set, for the top probe images), or None. ``removal``: also measure what removing the
    unit does, over ``removal_dataset`` (default the top-9 dataset; labelled data such as
    :class:`~cnnvis_widgets.data.digits.Digits` gives accuracy, unlabelled agreement with the
    intact network).
    """
    from ...data.datasets import as_dataset, augmented_samples
    from .. import dissection as nd
    from .. import topk as T
    from ..projections import unit_projections

    handle.check_unit(layer, int(unit))
    u = int(unit)
    settings = am_settings(preset, steps, lr)
    # 1. AM image (atlas cache) and diversity variants (cached too)
    main = (
        cached_unit_image(handle, layer, u, preset=preset, settings=settings, size=size, seed=seed)
        if use_cache
        else None
    )
    vkey = cache.cache_key(
        "atlas-variants",
        model=handle.fingerprint(),
        layer=layer,
        unit=u,
        variants=int(variants),
        diversity=float(diversity),
        **settings_key(preset, settings, size, seed),
    )
    vpath = cache.entry_path("atlas-variants", vkey, ".pt") if use_cache else None
    var = cache.read_entry(vpath, lambda p: cache.load_tensors(p)["images"].float().div(255))
    index = 0
    if var is None:
        last: Step | None = None
        vs = dataclasses.replace(settings)
        vs.diversity = float(diversity)
        for st in am.maximize_steps(
            handle,
            O.channel(layer, [u] * max(1, variants)),
            preset=preset,
            size=size,
            batch=max(1, variants),
            seed=seed,
            settings=vs,
            stop_event=stop_event,
        ):
            last = st
            yield Step(index, st.loss_ref, st.image, {"stage": "variants"}, 0)
            index += 1
        if stop_event is not None and stop_event.is_set():
            return None
        assert last is not None and last.image is not None
        var = last.image.detach().clamp(0, 1).cpu()
        images = var.mul(255).round().to(torch.uint8)
        cache.write_entry(vpath, lambda p: cache.save_tensors(p, {"images": images}))
    if main is None:
        main = var[:1]
    # 2. top-9 patches (one pass ranks every unit; shared with the DeconvNet widget) + projections
    info = handle.layer(layer)
    entries: list[Any] = []
    patches: list[torch.Tensor] = []
    projections: list[torch.Tensor] = []
    note = ""
    imgs = None
    if info.spatial:
        ds = as_dataset(dataset) if dataset is not None else None
        if ds is None:
            ds = augmented_samples(n=n_images, size=max(handle.input_size), seed=0)
        run = Run(
            T.cached_top_k_steps(handle, layer, ds, 9, use_cache=use_cache, stop_event=stop_event)
        )
        for _ in run:
            yield Step(index, None, None, {"stage": "top-9"}, 0)
            index += 1
        top = run.result
        if top is None:
            return None
        try:
            up = unit_projections(handle, top, u, ds, "deconvnet")
        except ValueError as exc:
            up = unit_projections(handle, top, u, ds, "deconvnet", project=False)
            up.note = str(exc)
        entries, imgs, patches = up.entries, up.images, up.patches
        projections, note = up.projection_patches, up.note
    if stop_event is not None and stop_event.is_set():
        return None
    # 3. dissection
    dinfo = None
    examples = None
    if dissection is not None and layer in getattr(dissection, "layers", []):
        dinfo = dissection.unit(layer, u)
        if probe is not None:
            try:
                ex = nd.unit_examples(handle, dissection, probe, layer, u, k=4)
                examples = nd.render_examples(ex, ncol=4)
            except (RuntimeError, KeyError):
                examples = None
    # 4. classes
    classes: list[tuple[int, str, float]] = []
    if top_classes > 0:
        src = imgs if imgs is not None and len(imgs) else main
        contrib = class_contributions(handle, layer, u, src)
        k = min(int(top_classes), contrib.numel())
        vals, idx = contrib.topk(k)
        classes = [(int(i), handle.class_name(int(i)), float(v)) for v, i in zip(vals, idx)]
    # 5. what removing it does (forward only, the intact network in the same pass)
    worth, rnote = None, ""
    if removal:
        from .. import importance

        rdata = removal_dataset
        if rdata is None:
            rdata = (
                ds if info.spatial else augmented_samples(n=n_images, size=max(handle.input_size))
            )
        run_r = Run(importance.ablate_steps(handle, layer, [u], rdata))
        for _ in run_r:
            if stop_event is not None and stop_event.is_set():
                return None
            yield Step(index, None, None, {"stage": "removal"}, 0)
            index += 1
        res = run_r.result
        assert res is not None
        worth = res.worth(3)[0]
        measured = "labels" if res.labels_from == "dataset" else "agreement with the intact network"
        rnote = f"{res.count} images, {measured} (intact {res.baseline_accuracy:.1%})"
    card = UnitCard(
        layer,
        u,
        main[0],
        var,
        entries,
        patches,
        projections,
        note,
        dinfo,
        examples,
        classes,
        worth,
        rnote,
    )
    yield Step(index, None, None, {"stage": "done"}, index + 1)
    return card


def unit_card(handle: ModelHandle, layer: str, unit: int, **kwargs: Any) -> UnitCard:
    """Run :func:`unit_card_steps` to the end and return the :class:`UnitCard`.

    Examples
    --------
    >>> card = unit_card(h, "_blocks.4", 7, steps=64, size=64)   # doctest: +SKIP
    >>> print(card.text())                                      # doctest: +SKIP
    """
    return _completed(unit_card_steps(handle, layer, unit, **kwargs), "unit card")


def card_images(card: UnitCard, cell: int = 64) -> dict[str, torch.Tensor]:
    """Pixel images of a card for display: ``am`` (the image, then the variants), ``patches``
    and ``projections`` (3x3 grids), ``probe`` (top probe images, when dissected)."""
    out: dict[str, torch.Tensor] = {}
    am_pics = [_square(card.am_image, cell)] + [_square(v, cell) for v in card.variants]
    out["am"] = make_grid(torch.stack(am_pics), ncol=len(am_pics))
    blank = torch.full((3, cell, cell), 0.93)
    for name, pics in (("patches", card.patches), ("projections", card.projections)):
        cells = [_square(p, cell) for p in pics[:9]]
        cells += [blank] * (9 - len(cells))
        out[name] = make_grid(torch.stack(cells), ncol=3)
    if card.probe_examples is not None:
        out["probe"] = card.probe_examples
    return out


_PICTURES = ("am", "patches", "projections", "probe")


def card_view(card: UnitCard, cell: int = 64) -> dict[str, Any]:
    """What a view of the card shows: PNG bytes of :func:`card_images` (``am``, ``patches``,
    ``projections``, ``probe``: empty without a dissection), the ``text`` and the ``classes``
    rows ``[class name, contribution]``; beside them what removing the unit does:
    ``removal_text`` and ``removal`` rows ``[class name, probability lost]``."""
    pics = card_images(card, cell)
    view: dict[str, Any] = {k: encode(pics[k], "png") if k in pics else b"" for k in _PICTURES}
    view["text"] = card.text()
    view["classes"] = [[n, round(v, 4)] for _, n, v in card.classes]
    view["removal_text"] = card.removal_text()
    hurts = card.removal.hurts if card.removal is not None else []
    view["removal"] = [[n, round(-d, 4)] for n, d in hurts]
    return view
