"""What each unit is worth: the network's accuracy and class probabilities with units removed.

A unit (a channel of a convolutional layer, a feature of a linear one) is *ablated* by replacing
its output with zero (``how="zero"``) or with its mean over the dataset (``how="mean"``), and the
network is run on the dataset again (Morcos et al. 2018, "On the importance of single
directions"; Zeiler & Fergus 2014 used occlusion of the input in the same spirit). What changes is
the unit's worth: the drop in accuracy, and per class the drop of that class's probability on its
own images.

Removing many units, one at a time, shares the forward pass up to the ablated layer: a hook at
the layer expands the batch into one copy per removal (copy 0 untouched), so the layers below run
once per image and only the layers above run once per removal. Where the network's structure does
not allow that (a skip connection from below the layer, a ``view`` on the input's batch size, a
layer whose output is not a tensor), the check at the first batch of each size shows it and every
removal runs as a plain forward pass of its own; both paths give the same numbers (tested).

Runs use the handle's eval-mode twin (:attr:`ModelHandle.net`), forward only, under
``torch.no_grad``; every hook is removed in ``finally``: your model's mode, weights and hooks are
never changed.

Examples
--------
>>> import torch
>>> from cnnvis_widgets.models.handle import ModelHandle
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = torch.nn.Sequential(
...     torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
...     torch.nn.Flatten(), torch.nn.Linear(4, 3))
>>> h = ModelHandle(net, name="tiny", input_size=8, mean=(0.5,), std=(0.5,))
>>> pixels, labels = torch.rand(12, 1, 8, 8), torch.randint(0, 3, (12,))
>>> result = ablate(h, "1", [0, 1, [2, 3]], (pixels, labels))
>>> result.groups
[(0,), (1,), (2, 3)]
>>> result.accuracy.shape, result.class_prob_change.shape
(torch.Size([3]), torch.Size([3, 3]))
"""

from __future__ import annotations

import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import limits
from ..models.convert import first_output
from ..models.handle import ModelHandle
from .blocks.hooks import capture, forward_to
from .blocks.optimize import Step
from .blocks.runs import finish
from .labelled import dataset_batches

__all__ = [
    "Ablation",
    "UnitWorth",
    "Pruning",
    "ablate",
    "ablate_steps",
    "rank_units",
    "pruning_exercise",
    "dataset_batches",
    "ABLATIONS",
]

#: How a removed unit's output is replaced.
ABLATIONS = ("zero", "mean")

#: Most values of the ablated layer's output one expanded forward pass holds (images x copies
#: x values per image): passes larger than the caches run slower per image, not faster.
MAX_EXPANDED_VALUES = 1 << 22


# ------------------------------------------------------------------------------- the result
@dataclass
class Ablation:
    """The network with units removed, measured on a dataset.

    Row ``g`` of every ``(G, ...)`` tensor is removal ``groups[g]`` (one unit, or several removed
    together).

    Attributes
    ----------
    layer, how : str
        The ablated layer and ``"zero"`` or ``"mean"``.
    groups : list of tuple of int
        The units removed in each row.
    count : int
        Images measured.
    labels_from : str
        ``"dataset"`` (the labels given) or ``"model"`` (none given: the intact network's own
        predictions, so accuracy means agreement with it).
    class_names : list of str
    baseline_accuracy : float
        The intact network's accuracy.
    accuracy : torch.Tensor
        ``(G,)`` accuracy with each removal (float64: exact fractions of the count).
    class_counts : torch.Tensor
        ``(K,)`` images per (label) class.
    baseline_class_prob, class_prob : torch.Tensor
        ``(K,)`` and ``(G, K)``: mean probability of class ``k`` on the images of class ``k``.
    prob_change : torch.Tensor
        ``(G, K)``: mean over all images of the change of class ``k``'s probability.
    path : str
        ``"shared"`` (one forward up to the layer, expanded above it) or ``"plain"``.
    """

    layer: str
    how: str
    groups: list[tuple[int, ...]]
    count: int
    labels_from: str
    class_names: list[str]
    baseline_accuracy: float
    accuracy: torch.Tensor
    class_counts: torch.Tensor
    baseline_class_prob: torch.Tensor
    class_prob: torch.Tensor
    prob_change: torch.Tensor
    path: str = "shared"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_drop(self) -> torch.Tensor:
        """``(G,)`` baseline accuracy minus accuracy with each removal."""
        return self.baseline_accuracy - self.accuracy

    @property
    def class_prob_change(self) -> torch.Tensor:
        """``(G, K)`` change of each class's probability on its own images (0 for classes
        without images)."""
        change = self.class_prob - self.baseline_class_prob
        return torch.where(self.class_counts > 0, change, torch.zeros_like(change))

    def hurts_most(self, row: int, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` classes whose own-image probability removal ``row`` lowers most, as
        ``(class name, change)`` pairs (changes < 0, most negative first)."""
        change = self.class_prob_change[row]
        order = torch.argsort(change)
        out = []
        for c in order.tolist()[:k]:
            if self.class_counts[c] > 0 and change[c] < 0:
                out.append((self.class_names[c], float(change[c])))
        return out

    def ranking(self) -> list[int]:
        """Row indices, most important first: by accuracy drop, ties broken by the mean drop
        of the true class's probability."""
        drop = self.accuracy_drop.tolist()
        counts = self.class_counts.float()
        mean_true = (self.class_prob_change * counts).sum(1) / counts.sum().clamp(min=1)
        prob = (-mean_true).tolist()
        return sorted(range(len(self.groups)), key=lambda g: (-drop[g], -prob[g], g))

    def worth(self, k: int = 3) -> list[UnitWorth]:
        """One :class:`UnitWorth` per row, most important first."""
        return [
            UnitWorth(
                units=self.groups[g],
                accuracy_drop=float(self.accuracy_drop[g]),
                accuracy=float(self.accuracy[g]),
                hurts=self.hurts_most(g, k),
            )
            for g in self.ranking()
        ]

    def rows(self, k: int = 3) -> list[dict[str, Any]]:
        """JSON-able table, most important first."""
        return [w.to_dict() for w in self.worth(k)]


@dataclass(frozen=True)
class UnitWorth:
    """What removing ``units`` does: the accuracy drop and the classes it hurts most."""

    units: tuple[int, ...]
    accuracy_drop: float
    accuracy: float
    hurts: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "units": list(self.units),
            "accuracy_drop": self.accuracy_drop,
            "accuracy": self.accuracy,
            "hurts": [[name, change] for name, change in self.hurts],
        }


# ------------------------------------------------------------------------------ the passes
def _groups(handle: ModelHandle, layer: str, units: Any) -> list[tuple[int, ...]]:
    channels = handle.layer(layer).channels
    if isinstance(units, str):
        if units != "all":
            raise ValueError(f"units must be 'all', a unit or a list of units, got {units!r}")
        return [(u,) for u in range(channels)]
    if not isinstance(units, Sequence):
        units = [units]
    out: list[tuple[int, ...]] = []
    for item in units:
        members = list(item) if isinstance(item, (list, tuple, set, range)) else [item]
        group = []
        for u in members:
            u = limits.as_int(u, "unit")
            handle.check_unit(layer, u)
            group.append(u)
        if not group:
            raise ValueError("a group of units to remove together is empty")
        out.append(tuple(sorted(set(group))))
    if not out:
        raise ValueError("no units to remove")
    return out


def _masks(groups: list[tuple[int, ...]], channels: int, device: torch.device) -> torch.Tensor:
    """``(G, C)`` float: 1 where the unit is removed."""
    m = torch.zeros(len(groups), channels, device=device)
    for g, units in enumerate(groups):
        m[g, list(units)] = 1.0
    return m


def _remove(out: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``out`` (B, C, ...) with the units of ``mask`` (C,) replaced by ``fill`` (C,)."""
    shape = (1, -1) + (1,) * (out.dim() - 2)
    m = mask.to(out.dtype).view(shape)
    return out * (1 - m) + fill.to(out.dtype).view(shape) * m


def _unit_means(
    handle: ModelHandle, layer: str, dataset: Any, batch: int
) -> Generator[Step, None, torch.Tensor]:
    """Per-unit mean of ``layer``'s output over the dataset (and positions)."""
    total, n = None, 0
    with torch.no_grad(), capture(handle, [layer], stop_early=True) as acts:
        for i, (x, _) in enumerate(dataset_batches(handle, dataset, batch)):
            forward_to(handle, x, acts, needs_logits=False)
            a = acts[layer].float()
            dims = [0] + list(range(2, a.dim()))
            s = a.sum(dim=dims)
            total = s if total is None else total + s
            n += a.numel() // a.shape[1]
            yield Step(i, None, None, {"phase": "means", "images": n})
    if total is None:
        raise ValueError("the dataset is empty")
    return total / n


class _Expand:
    """Forward hook: (B, ...) -> (B * (1 + G), ...); copy 0 intact, copy g+1 without group g."""

    def __init__(self, masks: torch.Tensor, fill: torch.Tensor) -> None:
        self.masks, self.fill = masks, fill

    def __call__(self, module: Any, inputs: Any, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise _NotShareable("the layer's output is not a (B, C, ...) tensor")
        g = self.masks.shape[0]
        shape = (g + 1, 1, -1) + (1,) * (out.dim() - 2)
        removed = torch.cat([torch.zeros_like(self.masks[:1]), self.masks]).to(out.dtype)
        expanded = out.unsqueeze(0) * (1 - removed).view(shape)  # one op: all copies at once
        if bool(self.fill.any()):
            expanded = expanded + (removed * self.fill.to(out.dtype)).view(shape)
        return expanded.reshape(-1, *out.shape[1:])


class _Mask:
    def __init__(self, mask: torch.Tensor, fill: torch.Tensor) -> None:
        self.mask, self.fill = mask, fill

    def __call__(self, module: Any, inputs: Any, out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise TypeError(f"ablation needs a (B, C, ...) tensor output, got {type(out).__name__}")
        return _remove(out, self.mask, self.fill)


class _NotShareable(Exception):
    pass


def _plain_probs(
    handle: ModelHandle, layer: str, x: torch.Tensor, mask: torch.Tensor | None, fill: torch.Tensor
) -> torch.Tensor:
    net = handle.net
    hook = None
    if mask is not None:
        hook = handle.module(layer).register_forward_hook(_Mask(mask, fill))
    try:
        return torch.softmax(first_output(net(x)).float(), -1)
    finally:
        if hook is not None:
            hook.remove()


def _shared_probs(
    handle: ModelHandle, layer: str, x: torch.Tensor, masks: torch.Tensor, fill: torch.Tensor
) -> torch.Tensor:
    """``(1 + G, B, K)`` probabilities: intact, then each removal, from one expanded pass."""
    hook = handle.module(layer).register_forward_hook(_Expand(masks, fill))
    try:
        logits = first_output(handle.net(x))
    finally:
        hook.remove()
    b = x.shape[0]
    if not isinstance(logits, torch.Tensor) or logits.shape[0] != b * (1 + masks.shape[0]):
        raise _NotShareable("the layers above did not keep the expanded batch")
    return torch.softmax(logits.float(), -1).view(1 + masks.shape[0], b, -1)


def _shared_batch(
    handle: ModelHandle,
    layer: str,
    x: torch.Tensor,
    masks: torch.Tensor,
    fill: torch.Tensor,
    per_image: int,
    checked: set[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(intact (B, K), removed (G, B, K))`` probabilities for one batch by expanded passes.

    The batch is cut into sub-batches small enough that every removal fits one pass within
    :data:`MAX_EXPANDED_VALUES` (the layers below then run once per image); only when one image's
    copies do not fit are the removals cut into chunks. The first pass at each sub-batch size is
    checked against plain passes (``_NotShareable`` when they differ).
    """
    g = masks.shape[0]
    sub = max(1, min(x.shape[0], MAX_EXPANDED_VALUES // ((g + 1) * per_image)))
    per_pass = max(1, MAX_EXPANDED_VALUES // (sub * per_image) - 1)
    bases, removed = [], []
    for s0 in range(0, x.shape[0], sub):
        xs = x[s0 : s0 + sub]
        parts = []
        for start in range(0, g, per_pass):
            out = _shared_probs(handle, layer, xs, masks[start : start + per_pass], fill)
            if xs.shape[0] not in checked:  # check the expansion once per size
                base = _plain_probs(handle, layer, xs, None, fill)
                one = _plain_probs(handle, layer, xs, masks[start], fill)
                ok = torch.allclose(out[0], base, atol=1e-5, rtol=1e-4)
                if not (ok and torch.allclose(out[1], one, atol=1e-5, rtol=1e-4)):
                    raise _NotShareable("copies of the expanded batch interact")
                checked.add(xs.shape[0])
            if start == 0:
                bases.append(out[0])
            parts.append(out[1:])
        removed.append(torch.cat(parts, 0))
    return torch.cat(bases, 0), torch.cat(removed, 1)


def ablate_steps(
    handle: ModelHandle,
    layer: str,
    units: Any,
    dataset: Any,
    how: str = "zero",
    *,
    batch: int = 64,
    share: bool = True,
) -> Generator[Step, None, Ablation]:
    """Steps of :func:`ablate` (one per batch); returns the :class:`Ablation`."""
    if how not in ABLATIONS:
        raise ValueError(f"how must be one of {ABLATIONS}, got {how!r}")
    h, w = handle.input_size
    batch = limits.check_batch(batch, h, w, name="batch")
    groups = _groups(handle, layer, units)
    info = handle.layer(layer)
    device = handle.device
    masks = _masks(groups, info.channels, device)
    if how == "mean":
        fill = (yield from _unit_means(handle, layer, dataset, batch)).to(device)
    else:
        fill = torch.zeros(info.channels, device=device)
    K = handle.num_outputs
    f64 = torch.float64  # sums over many images: exact counts, accuracies like 0.954
    correct_base, correct = torch.zeros((), dtype=f64), torch.zeros(len(groups), dtype=f64)
    counts = torch.zeros(K, dtype=f64)
    true_base, true = torch.zeros(K, dtype=f64), torch.zeros(len(groups), K, dtype=f64)
    change = torch.zeros(len(groups), K, dtype=f64)
    n, labels_from = 0, "dataset"
    path = "shared" if share and len(groups) > 1 else "plain"  # one removal: nothing to share
    checked: set[int] = set()  # batch sizes the shared path was checked at
    per_image = info.channels * (info.height or 1) * (info.width or 1)
    with torch.no_grad(), handle.pinned():
        for i, (x, y) in enumerate(dataset_batches(handle, dataset, batch)):
            got = None
            if path == "shared":
                try:
                    got = _shared_batch(handle, layer, x, masks, fill, per_image, checked)
                except (_NotShareable, RuntimeError):
                    path = "plain"
            if got is None:
                base = _plain_probs(handle, layer, x, None, fill)
                probs = torch.stack([_plain_probs(handle, layer, x, m, fill) for m in masks])
            else:
                base, probs = got
            if base.shape[-1] != K:
                raise ValueError(f"the network gave {base.shape[-1]} outputs, expected {K}")
            if y is None:
                y, labels_from = base.argmax(-1), "model"
            y = y.to(base.device)
            if int(y.min()) < 0 or int(y.max()) >= K:
                raise ValueError(f"labels must be class indices in 0..{K - 1}")
            onehot = torch.nn.functional.one_hot(y, K).float()
            correct_base += (base.argmax(-1) == y).sum().cpu()
            correct += (probs.argmax(-1) == y).sum(-1).cpu()
            counts += onehot.sum(0).cpu()
            true_base += (base * onehot).sum(0).cpu()
            true += (probs * onehot).sum(1).cpu()
            change += (probs - base).sum(1).cpu()
            n += x.shape[0]
            yield Step(i, None, None, {"phase": "ablate", "images": n, "path": path})
    if n == 0:
        raise ValueError("the dataset is empty")
    per_class = counts.clamp(min=1)
    return Ablation(
        layer=layer,
        how=how,
        groups=groups,
        count=n,
        labels_from=labels_from,
        class_names=[handle.class_name(k) for k in range(K)],
        baseline_accuracy=float(correct_base) / n,
        accuracy=correct / n,
        class_counts=counts.long(),
        baseline_class_prob=(true_base / per_class).float(),
        class_prob=(true / per_class).float(),
        prob_change=(change / n).float(),
        path=path,
    )


def ablate(
    handle: ModelHandle,
    layer: str,
    units: Any,
    dataset: Any,
    how: str = "zero",
    *,
    batch: int = 64,
    share: bool = True,
) -> Ablation:
    """The change in accuracy and in every class's probability when units are removed.

    Parameters
    ----------
    handle : ModelHandle
    layer : str
        The layer whose units are removed (its output's dim 1 holds the units).
    units : int, sequence or "all"
        What to remove, one row each: an int is one unit; a list/tuple inside the sequence is a
        set removed together (``[0, 1, [0, 1]]``: unit 0, unit 1, then both); ``"all"`` is every
        unit of the layer, one at a time.
    dataset : see :func:`dataset_batches`
        Without labels the intact network's own predictions are the labels.
    how : {"zero", "mean"}
        Replace a removed unit's output with 0, or with its mean over the dataset (and over
        positions), computed in a first pass.
    batch : int
        Images per forward pass.
    share : bool
        Share the forward up to ``layer`` between removals (default); False runs a plain
        forward pass per removal (the reference the shared path is tested against).

    Returns
    -------
    Ablation
    """
    return finish(ablate_steps(handle, layer, units, dataset, how, batch=batch, share=share))


def rank_units(
    handle: ModelHandle,
    layer: str,
    dataset: Any,
    how: str = "zero",
    *,
    k: int = 3,
    batch: int = 64,
) -> list[UnitWorth]:
    """Every unit of ``layer`` removed alone, most important first, with the ``k`` classes each
    hurts most."""
    return ablate(handle, layer, "all", dataset, how, batch=batch).worth(k)


@dataclass
class Pruning:
    """Accuracy with the ``k`` least important, ``k`` most important and ``k`` random units of a
    layer removed together, for each ``k`` of ``ks``.

    ``random`` is ``(repeats, len(ks))``; ``random_mean`` its mean over the draws."""

    layer: str
    how: str
    ks: list[int]
    baseline_accuracy: float
    least: list[float]
    most: list[float]
    random: list[list[float]]
    order: list[int]

    @property
    def random_mean(self) -> list[float]:
        """Mean accuracy over the random draws, per ``k``."""
        return [sum(col) / len(col) for col in zip(*self.random, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "layer": self.layer,
            "how": self.how,
            "ks": self.ks,
            "baseline_accuracy": self.baseline_accuracy,
            "least_important": self.least,
            "most_important": self.most,
            "random": self.random_mean,
        }


def pruning_exercise(
    handle: ModelHandle,
    layer: str,
    dataset: Any,
    ks: Sequence[int] = (1, 2, 4, 8),
    how: str = "zero",
    *,
    repeats: int = 3,
    seed: int = 0,
    ranking: Sequence[int] | None = None,
    batch: int = 64,
) -> Pruning:
    """Remove the ``k`` least important filters of ``layer`` and, for comparison, ``k`` random
    ones (``repeats`` seeded draws) and the ``k`` most important: the accuracy of each.

    ``ranking`` is the layer's units, most important first (default: :func:`rank_units` on the
    same dataset).
    """
    channels = handle.layer(layer).channels
    ks = [limits.check_int(k, "k", minimum=1) for k in ks]
    if max(ks) > channels:
        raise ValueError(f"k must be at most the layer's {channels} units, got {max(ks)}")
    repeats = limits.check_int(repeats, "repeats", minimum=1)
    if ranking is None:
        order = [w.units[0] for w in rank_units(handle, layer, dataset, how, batch=batch)]
    else:
        order = [limits.as_int(u, "unit") for u in ranking]
        if sorted(order) != list(range(channels)):
            raise ValueError(f"ranking must list every unit 0..{channels - 1} once")
    rng = random.Random(seed)
    groups: list[list[int]] = [order[-k:] for k in ks] + [order[:k] for k in ks]
    for _ in range(repeats):
        groups += [rng.sample(range(channels), k) for k in ks]
    res = ablate(handle, layer, groups, dataset, how, batch=batch)
    acc = res.accuracy.tolist()
    n = len(ks)
    return Pruning(
        layer=layer,
        how=how,
        ks=ks,
        baseline_accuracy=res.baseline_accuracy,
        least=acc[:n],
        most=acc[n : 2 * n],
        random=[acc[2 * n + r * n : 2 * n + (r + 1) * n] for r in range(repeats)],
        order=order,
    )
