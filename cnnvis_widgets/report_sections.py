"""The sections of ``cnnvis report``: every method run on one model, from the core API.

Each section is ``fn(ctx, report)``; a method whose module is missing raises ImportError and the
report says so instead of failing. The report is built from :mod:`cnnvis_widgets.core` only: it
never imports the widget layer (anywidget, ipywidgets, traitlets), so it works without Jupyter
(a test builds every section with those packages blocked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .imaging import make_grid
from .models import ModelHandle

__all__ = ["Context", "SECTIONS"]


@dataclass
class Context:
    """What every section gets: the model, the step budget and a progress-bar factory."""

    handle: ModelHandle
    steps: int = 128
    progress: Callable[..., Any] = lambda items, total, label: items
    quick: bool = False

    @property
    def size(self) -> int:
        return 64 if self.quick else 128

    def middle_layer(self) -> str:
        from .models.layers import default_layer

        return default_layer(self.handle)

    def deconv_layer(self) -> str:
        from .models.layers import default_deconv_layer

        return default_deconv_layer(self.handle)

    def early_layer(self) -> str:
        layers = self.handle.conv_layers()
        return layers[max(0, len(layers) // 6)].name


def model_section(ctx: Context, report: Any) -> None:
    h = ctx.handle
    n_params = sum(p.numel() for p in h.model.parameters())
    report.add_text(
        f"Model {h.name} ({h.weights}), {n_params / 1e6:.2f} M parameters, input "
        f"{h.in_channels}x{h.input_size[0]}x{h.input_size[1]}, device {h.device}."
    )
    rows = [
        {
            "layer": li.name,
            "kind": li.kind,
            "channels": li.channels,
            "size": f"{li.height}x{li.width}",
        }
        for li in h.conv_layers()
        if li.kind in ("block", "conv") and li.name.count(".") <= 1
    ]
    report.add_table(rows, ["layer", "kind", "channels", "size"], "Conv-like layers")


def activation_max_section(ctx: Context, report: Any) -> None:
    from .core import activation_max as am
    from .core.blocks import objectives as O

    layer = ctx.middle_layer()
    n = min(8, ctx.handle.layer(layer).channels)
    steps = list(
        ctx.progress(
            am.maximize_steps(
                ctx.handle,
                O.channel(layer, list(range(n))),
                batch=n,
                steps=ctx.steps,
                size=ctx.size,
            ),
            ctx.steps,
            "activation maximization",
        )
    )
    report.add_text(
        "Activation maximization (Olah et al. 2017 recipe: FFT parameterization, decorrelated "
        f"colour, transformation robustness): the images that most excite units 0-{n - 1} of "
        f"{layer}, optimized together as one batch of {n} for {len(steps)} steps."
    )
    report.add_image(
        make_grid(steps[-1].image.clamp(0, 1).cpu(), ncol=n), f"{layer}, units 0-{n - 1}"
    )
    if ctx.handle.class_names:
        idx = 281 if ctx.handle.num_outputs > 281 else 0
        r = am.maximize(ctx.handle, O.class_logit(idx), steps=ctx.steps, size=ctx.size + 32)
        report.add_image(r.image, f"Class model of '{ctx.handle.class_name(idx)}' (logit {idx})")


def _photo(ctx: Context) -> tuple[str, torch.Tensor]:
    from .data import sample_image

    return "cat", ctx.handle.preprocess(sample_image("cat"))


def attribution_section(ctx: Context, report: Any) -> None:
    from .core import attribution as A
    from .imaging import heatmap, overlay

    h = ctx.handle
    name, x = _photo(ctx)
    with torch.no_grad():
        top = int(h.logits(x).argmax(1))
    pixels = h.denormalize(x).clamp(0, 1).cpu()
    maps = []
    labels = []
    for label, fn in ctx.progress(
        [
            ("saliency", lambda: A.saliency(h, x, top)),
            ("guided backprop", lambda: A.guided_backprop(h, x, top)),
            ("Grad-CAM", lambda: A.grad_cam(h, x, top)),
        ],
        3,
        "attribution",
    ):
        try:
            attr = fn().detach().cpu()
        except A.UnsupportedActivationError as exc:
            report.add_text(f"{label}: {exc}")
            continue
        signed = label != "Grad-CAM"
        heat = heatmap(attr, signed=False) if not signed else heatmap(attr)
        maps.append(overlay(pixels, heat, 0.6) if label == "Grad-CAM" else heat)
        labels.append(label)
    report.add_text(
        f"Which pixels drive the '{h.class_name(top)}' logit for the {name} photo: "
        + ", ".join(labels)
        + " (Simonyan et al. 2013; Springenberg et al. 2015; Selvaraju et al. 2017)."
    )
    report.add_image(
        make_grid(torch.cat([pixels] + maps), ncol=len(maps) + 1), "photo, " + ", ".join(labels)
    )


def _evidence_maps(
    ctx: Context, x: torch.Tensor, cls: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The maps the evidence section judges (every method of ``A.ALL_METHODS``: the gradient
    ones, occlusion with a quarter-side patch, integrated gradients) and the notes of the
    methods the model does not support."""
    from .core import attribution as A

    h, side = ctx.handle, min(x.shape[-2:])
    patch = max(1, side // 4)
    options: dict[str, dict] = {
        "occlusion": {"patch": patch, "stride": max(1, patch // 2)},
        "integrated_gradients": {"steps": 8 if ctx.quick else 32},
    }
    maps, notes = {}, []
    for name in ctx.progress(list(A.ALL_METHODS), len(A.ALL_METHODS), "maps"):
        try:
            maps[name] = A.attribute(h, x, cls, name, **options.get(name, {})).detach().cpu()
        except A.UnsupportedActivationError as exc:
            notes.append(f"{name}: {exc}")
    return maps, notes


def attribution_evidence_section(ctx: Context, report: Any) -> None:
    """Can the maps be trusted? Deletion/insertion curves (Petsiuk et al. 2018) and the
    cascading randomization test (Adebayo et al. 2018) of the attribution maps."""
    from .core.attribution.faithfulness import faithfulness_steps
    from .core.attribution.sanity import cascading_randomization, weight_blocks
    from .core.blocks.runs import Run
    from .figures import faithfulness_figure

    h = ctx.handle
    name, x = _photo(ctx)
    with torch.no_grad():
        cls = int(h.logits(x).argmax(1))
    maps, notes = _evidence_maps(ctx, x, cls)
    for note in notes:
        report.add_text(note)
    if not maps:
        return
    steps = 8 if ctx.quick else 20
    run = Run(faithfulness_steps(h, x, cls, maps, steps=steps))
    for _ in ctx.progress(run, 2 * (len(maps) + 2), "faithfulness curves"):
        pass
    curves = run.result
    assert curves is not None
    report.add_text(
        f"Do the pixels a map highlights matter (Petsiuk et al. 2018)? Deletion greys out the "
        f"{name} photo's pixels in the order of each map, most important first, and records the "
        f"probability of '{h.class_name(cls)}' ({steps} steps); insertion reveals them on a "
        "blurred copy. A faithful map makes deletion fall fast (small area under the curve) and "
        "insertion rise fast (large area); a random order and the centre-first order show what "
        "fast means for this photo. Greying out scattered single pixels (as the random order does) "
        "can hurt the network more than hiding a whole region, so compare region-like maps "
        "(occlusion) with the centre-first order and pixel-level maps with the random one."
    )
    report.add_figure(faithfulness_figure(curves), "Deletion and insertion curves")
    report.add_table(
        [
            {
                "order": row["order"],
                "deletion AUC": f"{row.get('deletion', float('nan')):.3f}",
                "insertion AUC": f"{row.get('insertion', float('nan')):.3f}",
            }
            for row in curves.table()
        ],
        ["order", "deletion AUC", "insertion AUC"],
        "Area under the curves (deletion: lower is better; insertion: higher is better)",
    )
    gradient_maps = [m for m in ("saliency", "guided_backprop") if m in maps]
    if not gradient_maps:
        return
    blocks = list(reversed(weight_blocks(h.model)))[: 2 if ctx.quick else 3]
    sanity = Run(cascading_randomization(h, x, cls, gradient_maps, blocks=blocks))
    for _ in ctx.progress(sanity, len(blocks) + 1, "sanity check"):
        pass
    result = sanity.result
    assert result is not None
    report.add_text(
        "Is the map about the model at all (Adebayo et al. 2018)? The weights of a copy of the "
        "network are re-initialised from the logits down, block by block, and each map is "
        "compared with the trained model's (Spearman rank correlation of the absolute maps). A "
        "map that stays the same while the model it should explain is random shows the image, "
        "not the model."
    )
    report.add_table(
        [
            {
                "stage": stage,
                **{m: f"{result.scores[m]['spearman_abs'][i]:.2f}" for m in gradient_maps},
            }
            for i, stage in enumerate(result.stages)
        ],
        ["stage", *gradient_maps],
        "Spearman (absolute maps) with the trained model's map, randomized down to each block",
    )
    report.add_table(
        [{"method": m, "verdict": result.verdict(m)} for m in gradient_maps],
        ["method", "verdict"],
        "Sanity check",
    )


def _padded(pictures: list[torch.Tensor], side: int, fill: float = 1.0) -> torch.Tensor:
    """Patches of different sizes (cut by the image border) padded to one square side."""
    return torch.stack(
        [
            torch.nn.functional.pad(
                p.float(), (0, side - p.shape[-1], 0, side - p.shape[-2]), value=fill
            )
            for p in pictures
        ]
    )


def topk_section(ctx: Context, report: Any) -> None:
    from .core.projections import unit_projections
    from .core.topk import top_k_patches
    from .data import augmented_samples

    h = ctx.handle
    layer = ctx.deconv_layer()
    data = augmented_samples(n=32 if ctx.quick else 128, size=h.input_size[0], seed=0)
    result = top_k_patches(h, layer, data, k=9, units=[0, 1, 2])
    report.add_text(
        f"DeconvNet (Zeiler & Fergus 2014): the 9 dataset patches that excite units 0-2 of "
        f"{layer} most, over {result.count} images (packaged photos with augmentations), each "
        "cropped to the unit's receptive field, and below them the DeconvNet projection of that "
        "activation back to the pixels (grey is zero), cropped alike."
    )
    for unit in ctx.progress(result.units, len(result.units), "DeconvNet"):
        up = unit_projections(h, result, unit, data, "deconvnet")
        side = max(max(p.shape[-2:]) for p in up.patches)
        rows = [_padded(up.patches, side)]
        if up.projection_patches:
            rows.append(_padded(up.projection_patches, side))
        caption = f"{layer}, unit {unit}: top-9 patches" + (
            ", their DeconvNet projections below" if up.projection_patches else ""
        )
        report.add_image(make_grid(torch.cat(rows), ncol=len(up.patches)), caption, width=720)
        if up.note:
            report.add_text(f"Unit {unit}: no projections: {up.note}")


def adversarial_section(ctx: Context, report: Any) -> None:
    from .core import adversarial as adv

    h = ctx.handle
    _, x = _photo(ctx)
    pixels = h.denormalize(x).clamp(0, 1)
    eps = 2 / 255
    adv_pixels = adv.pgd(h, pixels, eps, steps=5 if ctx.quick else 10)
    before = adv.top_k(h, pixels, 3)[0]
    after = adv.top_k(h, adv_pixels, 3)[0]
    report.add_text(
        f"An adversarial example (PGD, L-inf, eps {eps * 255:.0f}/255): the perturbation is "
        f"invisible, yet the top class goes from '{before[0]['name']}' "
        f"({before[0]['prob']:.2f}) to '{after[0]['name']}' ({after[0]['prob']:.2f})."
    )
    pert = adv.amplify(adv_pixels - pixels, eps)
    report.add_image(
        make_grid(torch.cat([pixels, pert, adv_pixels]).cpu(), ncol=3),
        "clean photo, perturbation (amplified), adversarial photo",
    )
    report.add_table(
        [
            {
                "rank": i + 1,
                "clean": f"{b['name']} {b['prob']:.3f}",
                "adversarial": f"{a['name']} {a['prob']:.3f}",
            }
            for i, (b, a) in enumerate(zip(before, after))
        ],
        ["rank", "clean", "adversarial"],
        "Top-3 predictions",
    )


def inversion_section(ctx: Context, report: Any) -> None:
    from .core import inversion as inv
    from .data import sample_image

    h = ctx.handle
    blocks = [li.name for li in h.conv_layers() if li.kind == "block" and li.name.count(".") <= 1]
    layers = (
        [blocks[i] for i in sorted({1, len(blocks) // 3, (2 * len(blocks)) // 3})]
        if len(blocks) >= 3
        else [ctx.early_layer(), ctx.middle_layer()]
    )
    size = ctx.size
    steps = list(
        ctx.progress(
            inv.invert_layers_steps(h, sample_image("cat"), layers, steps=ctx.steps, size=size),
            ctx.steps,
            "network inversion",
        )
    )
    target = (
        inv.target_pixels(h, sample_image("cat"), size) if hasattr(inv, "target_pixels") else None
    )
    last = steps[-1]
    errors = last.metrics.get("feature_error")
    report.add_text(
        "Network inversion (Mahendran & Vedaldi 2015): an image reconstructed from what each "
        "layer keeps of the photo, with natural-image priors (alpha-norm, total variation). "
        "Deeper layers keep less of the pixels and more of the meaning."
    )
    pics = last.image.clamp(0, 1).cpu()
    pics = torch.cat([target.cpu().float().clamp(0, 1), pics])
    report.add_image(make_grid(pics, ncol=pics.shape[0]), "photo, then " + ", ".join(layers))
    if errors is not None:
        report.add_table(
            [
                {"layer": name, "normalized feature error": f"{float(e):.3f}"}
                for name, e in zip(layers, torch.as_tensor(errors).flatten().tolist())
            ],
            ["layer", "normalized feature error"],
            "At the last step (with the priors; the widget reports it without jitter)",
        )


def dissection_section(ctx: Context, report: Any) -> None:
    from .core.dissection import dissect
    from .data.concepts import probe_set

    h = ctx.handle
    blocks = [li.name for li in h.conv_layers() if li.kind == "block" and li.name.count(".") <= 1]
    layers = (
        [blocks[len(blocks) // 4], blocks[len(blocks) // 2]]
        if len(blocks) >= 4
        else [ctx.middle_layer()]
    )
    n = 32 if ctx.quick else 96
    probe = probe_set(n, size=112 if ctx.quick else 224, seed=0)
    result = dissect(h, layers, probe)
    report.add_text(
        "Network dissection (Bau et al. 2017): each unit is labelled with the concept (colour, "
        "texture, shape) whose masks its top-0.005-quantile activation regions overlap best "
        f"(IoU), on {n} probe images generated by the project; a unit with IoU >= "
        f"{result.iou_threshold} counts as interpretable."
    )
    report.add_table(
        [
            {
                "layer": row["layer"],
                "units": row["units"],
                "interpretable": row["interpretable"],
                "unique detectors": ", ".join(f"{k} {v}" for k, v in row["unique"].items() if v),
            }
            for row in result.summary()
        ],
        ["layer", "units", "interpretable", "unique detectors"],
        "Interpretable units per layer",
    )
    best = sorted(result.units(layers[-1]), key=lambda r: -float(r["iou"]))[:8]
    report.add_table(
        [
            {
                "unit": r["unit"],
                "concept": r["concept"],
                "category": r["category"],
                "IoU": f"{float(r['iou']):.3f}",
            }
            for r in best
        ],
        ["unit", "concept", "category", "IoU"],
        f"Best-labelled units of {layers[-1]}",
    )


def _design_section(ctx: Context, report: Any) -> None:
    from .report_design import design_section

    design_section(ctx, report)


SECTIONS: list[tuple[str, Callable[[Context, Any], None]]] = [
    ("The model", model_section),
    ("Activation maximization", activation_max_section),
    ("Network inversion", inversion_section),
    ("DeconvNet: top-9 patches", topk_section),
    ("Attribution", attribution_section),
    ("Attribution evidence", attribution_evidence_section),
    ("Network dissection", dissection_section),
    ("Adversarial examples", adversarial_section),
    ("Design by looking: filters, unit importance, invariance", _design_section),
]
