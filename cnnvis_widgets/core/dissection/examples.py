"""Looking at a unit: its top probe images redrawn with the thresholded activation map and the
concept's mask (:func:`unit_examples`), drawn as an outlined grid (:func:`render_examples`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...data.concepts import Probe
from ...models.handle import ModelHandle
from ..blocks.hooks import StopForward
from .probing import _consume_outputs, to_model_channels
from .results import Dissection


@dataclass
class UnitExamples:
    """A unit's top probe images with its activation maps and its concept's masks.

    Attributes
    ----------
    layer : str
    unit : int
    indices : list of int
        Probe indices of the images.
    images : torch.Tensor
        ``(k, 3, S, S)`` pixel space (CPU).
    maps : torch.Tensor
        ``(k, S, S)`` the unit's activation, upsampled bilinearly to the image size.
    active : torch.Tensor
        ``(k, S, S)`` bool: ``maps > threshold``.
    concept_mask : torch.Tensor or None
        ``(k, S, S)`` bool mask of the unit's concept (None for label 0).
    concept : str
    iou : float
    threshold : float
    """

    layer: str
    unit: int
    indices: list[int]
    images: torch.Tensor
    maps: torch.Tensor
    active: torch.Tensor
    concept_mask: torch.Tensor | None
    concept: str
    iou: float
    threshold: float


def unit_examples(
    handle: ModelHandle,
    result: Dissection,
    probe: Probe,
    layer: str,
    unit: int,
    k: int | None = None,
    concept: str | None = None,
) -> UnitExamples:
    """Redraw a unit's top probe images and compute its thresholded maps and concept masks.

    ``concept`` overrides the unit's best concept (e.g. to look at a runner-up).
    """
    handle.check_unit(layer, int(unit))
    ld = result[layer]
    row = [
        (int(i), float(v))
        for i, v in zip(ld.top_images[int(unit)], ld.top_values[int(unit)])
        if i >= 0
    ][: (k or ld.top_images.shape[1])]
    # images where the unit is active at all; all of them when it never is
    idx = [i for i, v in row if v > 0] or [i for i, _ in row]
    if not idx:
        raise RuntimeError(f"no top images recorded for {layer}:{unit}")
    batch = probe.batch(idx, masks=True, device=handle.device)
    got: dict[str, torch.Tensor] = {}

    def consume(name: str, out: torch.Tensor) -> None:
        got[name] = out.detach()[:, int(unit)].float().clone()

    x = handle.normalize(to_model_channels(handle, batch.images))
    with torch.inference_mode(), _consume_outputs(handle, [layer], consume):
        try:
            handle.net(x)
        except StopForward:
            pass
    s = batch.images.shape[-1]
    maps = F.interpolate(got[layer].unsqueeze(1), size=(s, s), mode="bilinear", align_corners=False)
    maps = maps[:, 0].cpu()
    threshold = float(ld.thresholds[int(unit)])
    if concept is None:
        label = int(ld.best_label[int(unit)])
    else:
        label = next((c.index for c in result.labels if c.name == concept), -1)
        if label < 0:
            raise KeyError(f"unknown concept {concept!r}")
    mask = None
    if label > 0:
        m = torch.zeros(len(idx), probe.mask_size, probe.mask_size, dtype=torch.bool)
        if batch.masks is not None:
            m |= (batch.masks.cpu() == label).any(dim=1)
        if batch.scalars is not None and label < batch.scalars.shape[1]:
            m |= batch.scalars.cpu()[:, label].view(-1, 1, 1)
        mask = F.interpolate(m.unsqueeze(1).float(), size=(s, s), mode="nearest")[:, 0] > 0.5
    return UnitExamples(
        layer=layer,
        unit=int(unit),
        indices=idx,
        images=batch.images.cpu().float(),
        maps=maps,
        active=maps > threshold,
        concept_mask=mask,
        concept=result.labels[label].name if label > 0 else "-",
        iou=float(ld.iou[int(unit), label]) if label > 0 else 0.0,
        threshold=threshold,
    )


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels (2 px wide) of bool masks ``(k, S, S)``."""
    m = mask.float().unsqueeze(1)
    dil = F.max_pool2d(m, 3, 1, 1)
    ero = -F.max_pool2d(-m, 3, 1, 1)
    return (dil - ero)[:, 0] > 0


def render_examples(
    ex: UnitExamples,
    ncol: int | None = None,
    *,
    dim: float = 0.4,
    unit_color: tuple[float, float, float] = (1.0, 0.85, 0.0),
    concept_color: tuple[float, float, float] = (0.0, 0.9, 1.0),
) -> torch.Tensor:
    """A grid (pixel space ``(3, H, W)``) of the unit's top images: outside the unit's
    thresholded map the image is dimmed, the map's outline is yellow and the concept mask's
    outline cyan."""
    from ..imaging import make_grid

    img = ex.images.clone()
    act = ex.active.unsqueeze(1)
    img = torch.where(act, img, img * dim)
    if ex.concept_mask is not None:
        edge = _outline(ex.concept_mask).unsqueeze(1)
        color = torch.tensor(concept_color).view(1, 3, 1, 1)
        img = torch.where(edge, color.expand_as(img), img)
    edge = _outline(ex.active).unsqueeze(1)
    color = torch.tensor(unit_color).view(1, 3, 1, 1)
    img = torch.where(edge, color.expand_as(img), img)
    return make_grid(img, ncol=ncol or min(len(ex.indices), 4))
