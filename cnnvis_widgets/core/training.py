"""Watch a network learn: a training run as a steps generator, stop/resume, label randomization.

:func:`train_steps` trains a *copy* of a network (the user's module is never changed) with Adam
on cross-entropy and yields a :class:`~.blocks.optimize.Step` per batch (``loss`` the batch loss,
``metrics``: ``epoch``, ``accuracy`` of the batch, ``train_accuracy`` running over the epoch and,
on an epoch's last batch, ``test_accuracy``). It *returns* a :class:`TrainResult`
(``result = yield from train_steps(...)``, the run protocol of :mod:`.blocks.runs`); a set
``stop_event`` ends it between two batches, and ``train_steps(..., resume=result)`` continues
exactly where it stopped: the weights, the optimizer state and the position in the epoch's batch
order are in the result, so a stopped and resumed run gives the same weights, bit for bit, as one
that never stopped. A :class:`~.timeline.Timeline` passed as ``timeline`` gets a snapshot before
training and after every epoch (Zeiler & Fergus, Fig. 4: features across training).

``permute_labels=True`` is the data-randomization test of Adebayo et al. (2018): the training
labels are permuted once (seeded), so the network can only memorize (train accuracy high, test
accuracy at chance); :func:`compare_randomized` then puts the gradient maps of the normal and
the randomized-label network side by side, with their Spearman rank correlation per image.

The recipe (one epoch's batch order from a generator seeded by ``(seed, epoch)``, the learning
rate decayed by ``lr_decay`` per epoch) is the one :mod:`cnnvis_widgets.models.zf_mnist` is
trained with: from that model's random twin, the same settings give its checkpoints exactly.

Examples
--------
>>> from cnnvis_widgets import load_model                                  # doctest: +SKIP
>>> net = load_model("zf_mnist", weights=None)                             # doctest: +SKIP
>>> run = Run(train_steps(net, digits_data(), TrainSettings(epochs=2)))    # doctest: +SKIP
>>> for step in run: ...                                                   # doctest: +SKIP
>>> run.result.history[-1]["test_accuracy"]                                # doctest: +SKIP
0.96
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import limits
from ..models import ModelHandle
from ..models.zf_mnist import epoch_order
from .blocks.optimize import Step
from .blocks.runs import Run, finish
from .blocks.settings import Settings, knob

__all__ = [
    "TrainSettings",
    "TrainData",
    "TrainResult",
    "digits_data",
    "start_training",
    "train_steps",
    "train",
    "evaluate",
    "handle_of",
    "RandomizationComparison",
    "compare_randomized",
    "Run",
    "finish",
]


@dataclass
class TrainSettings(Settings):
    """How :func:`train_steps` trains (read at the start of each epoch: ``lr`` and ``epochs``
    may change mid-run).

    Attributes
    ----------
    epochs : int
        Passes over the training set.
    batch_size : int
        Images per step.
    lr : float
        Adam's learning rate of the first epoch.
    lr_decay : float
        Factor per epoch: epoch ``e`` uses ``lr * lr_decay ** (e - 1)``.
    seed : int
        Seeds the batch order (and the label permutation).
    permute_labels : bool
        Train on permuted labels (Adebayo et al. 2018's data randomization).
    """

    epochs: int = knob(4, 1, 50, "Passes over the training digits.", "Epochs", 1)
    batch_size: int = 50
    lr: float = knob(2e-3, 1e-5, 0.05, "Adam's learning rate (first epoch).", "Learning rate", 1e-4)
    lr_decay: float = knob(0.5, 0.05, 1.0, "Learning-rate factor per epoch.", "LR decay", 0.05)
    seed: int = 0
    permute_labels: bool = False

    def check(self, name: str, value: Any) -> Any:
        if name in ("epochs", "batch_size") and int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")
        if name in ("lr", "lr_decay") and not float(value) > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
        return value


@dataclass
class TrainData:
    """Training and test images (pixels in ``[0, 1]``, ``(N, C, H, W)``) with integer labels.

    ``key`` describes the content (for records and caches).
    """

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    key: str = ""

    def __post_init__(self) -> None:
        for a, b, what in ((self.x, self.y, "training"), (self.x_test, self.y_test, "test")):
            if a.dim() != 4 or b.dim() != 1 or len(a) != len(b):
                raise ValueError(
                    f"{what} data: images must be (N, C, H, W) and labels (N,), got "
                    f"{tuple(a.shape)} and {tuple(b.shape)}"
                )
        if not len(self.x):
            raise ValueError("the training set is empty")

    def subset(self, train_per_class: int, test_limit: int | None = None) -> TrainData:
        """The first ``train_per_class`` training images of each label (file order) and the
        first ``test_limit`` test images (all when None)."""
        n = limits.check_int(train_per_class, "train_per_class", minimum=1)
        keep = torch.cat([torch.nonzero(self.y == c).flatten()[:n] for c in self.y.unique()])
        keep = keep.sort().values
        m = len(self.x_test) if test_limit is None else max(1, int(test_limit))
        return TrainData(
            self.x[keep], self.y[keep], self.x_test[:m], self.y_test[:m],
            key=f"{self.key}|per_class={n},test={m}",
        )  # fmt: skip


def digits_data(
    test_per_class: int = 100, seed: int = 0, train_per_class: int | None = None
) -> TrainData:
    """The vendored MNIST digits as :class:`TrainData` (the split of ``zf_mnist``).

    Parameters
    ----------
    test_per_class : int
        Test digits per class (:func:`cnnvis_widgets.data.digits.train_test_split`).
    seed : int
        Seed of the split.
    train_per_class : int, optional
        Keep only the first this many training digits of each class (a quick exercise).

    Examples
    --------
    >>> d = digits_data(train_per_class=20)
    >>> tuple(d.x.shape), tuple(d.x_test.shape)
    ((200, 1, 28, 28), (1000, 1, 28, 28))
    """
    import numpy as np

    from ..data.digits import train_test_split

    train, test = train_test_split(test_per_class=test_per_class, seed=seed)
    if train_per_class is not None:
        n = limits.check_int(train_per_class, "train_per_class", minimum=1)
        keep = np.concatenate([np.flatnonzero(train.labels == c)[:n] for c in range(10)])
        train = train.subset(np.sort(keep))
    x, y = train.tensors()
    xt, yt = test.tensors()
    return TrainData(x, y, xt, yt, key=f"{train.key}|{test.key}")


@dataclass
class TrainResult:
    """What :func:`train_steps` returns (also when stopped: ``finished`` is then False).

    Attributes
    ----------
    model : nn.Module
        The trained copy (train mode is not kept: it is left in eval mode).
    optimizer : torch.optim.Optimizer
        Its Adam (the state a resume continues from).
    epoch : int
        Epochs completed.
    batch : int
        Batches done in the current (unfinished) epoch; 0 at an epoch boundary.
    step : int
        Steps (batches) done in all.
    history : list of dict
        Per epoch, epoch 0 (before training) first: ``epoch``, ``step``, ``train_loss``,
        ``train_accuracy``, ``test_accuracy``.
    losses : list of (int, float, float)
        ``(step, batch loss, batch accuracy)`` of every step, for a chart.
    finished : bool
        True when every epoch ran.
    labels : torch.Tensor
        The training labels actually used (permuted with ``permute_labels``).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    settings: TrainSettings
    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[tuple[int, float, float]] = field(default_factory=list)
    finished: bool = False
    labels: torch.Tensor | None = None
    # running sums of the unfinished epoch: loss * n, hits, n
    _sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


def _normalizer(
    handle_or_module: ModelHandle | nn.Module,
) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(handle_or_module, ModelHandle):
        return handle_or_module.normalize
    return lambda x: x


def _module(handle_or_module: ModelHandle | nn.Module) -> nn.Module:
    if isinstance(handle_or_module, ModelHandle):
        return handle_or_module.model
    if isinstance(handle_or_module, nn.Module):
        return handle_or_module
    raise TypeError(
        f"train_steps takes a ModelHandle or an nn.Module, got {type(handle_or_module).__name__}"
    )


def _device(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch: int = 500,
) -> float:
    """Top-1 accuracy of ``model`` on pixels ``x`` and labels ``y`` (eval mode for the pass; the
    mode is restored)."""
    norm = normalize or (lambda t: t)
    dev = _device(model)
    was = model.training
    model.eval()
    try:
        hits = 0
        for i in range(0, len(x), batch):
            out = model(norm(x[i : i + batch].to(dev)))
            hits += int((out.argmax(1).cpu() == y[i : i + batch]).sum())
    finally:
        model.train(was)
    return hits / max(1, len(x))


def _permuted(y: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) * 7919 + 1)
    return y[torch.randperm(len(y), generator=g)]


def _snapshot(timeline: Any, res: TrainResult, **metrics: float) -> None:
    if timeline is not None:
        timeline.snapshot(res.model, res.step, epoch=res.epoch, **metrics)


def start_training(
    handle_or_module: ModelHandle | nn.Module,
    data: TrainData,
    settings: TrainSettings | None = None,
    *,
    timeline: Any = None,
) -> TrainResult:
    """The state of a run before its first step (a copy of the network, its Adam, the labels,
    epoch 0's accuracies; ``timeline`` gets the first snapshot).

    ``train_steps(..., resume=state)`` trains it **in place**: after every yielded step the
    state is consistent (weights, optimizer, position), so a caller that closes the generator
    at any step (a widget's Stop) still holds a state that a later ``resume=`` continues.
    """
    s = settings if settings is not None else TrainSettings()
    norm = _normalizer(handle_or_module)
    net = copy.deepcopy(_module(handle_or_module))
    for p in net.parameters():
        p.requires_grad_(True)
    opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=s.lr)
    labels = _permuted(data.y, s.seed) if s.permute_labels else data.y
    res = TrainResult(net, opt, s, labels=labels)
    first = {
        "epoch": 0,
        "step": 0,
        "train_loss": float("nan"),
        "train_accuracy": evaluate(net, data.x, labels, norm),
        "test_accuracy": evaluate(net, data.x_test, data.y_test, norm),
    }
    res.history.append(first)
    _snapshot(timeline, res, test_accuracy=first["test_accuracy"])
    return res


def train_steps(
    handle_or_module: ModelHandle | nn.Module,
    data: TrainData,
    settings: TrainSettings | None = None,
    *,
    stop_event: threading.Event | None = None,
    timeline: Any = None,
    resume: TrainResult | None = None,
) -> Generator[Step, None, TrainResult]:
    """Train a copy of the network on ``data``; yield a :class:`Step` per batch, return the
    :class:`TrainResult`.

    Parameters
    ----------
    handle_or_module : ModelHandle or nn.Module
        The network (a handle's images are normalized with its mean/std; a bare module gets the
        pixels as they are). It is copied: the original is never changed.
    data : TrainData
        E.g. :func:`digits_data`.
    settings : TrainSettings, optional
        Read at the start of each epoch (a changed ``lr`` or ``epochs`` takes effect then).
    stop_event : threading.Event, optional
        Set it to stop between two batches; the result then has ``finished=False``.
    timeline : Timeline, optional
        Gets ``snapshot(model, step, epoch=..., ...)`` before training and after each epoch.
    resume : TrainResult, optional
        A stopped (or finished) run to continue (its model, optimizer and position; pass a larger
        ``settings.epochs`` to train on), or a fresh :func:`start_training` state. It is trained
        in place.

    Returns
    -------
    TrainResult
    """
    s = settings if settings is not None else (resume.settings if resume else TrainSettings())
    norm = _normalizer(handle_or_module)
    if resume is None:
        res = start_training(handle_or_module, data, s, timeline=timeline)
    else:
        res = resume
        res.settings = s
        res.finished = False
    net, opt = res.model, res.optimizer
    labels = res.labels if res.labels is not None else data.y
    dev = _device(net)
    n = len(data.x)
    per_epoch = -(-n // s.batch_size)
    try:
        while res.epoch < s.epochs:
            e = res.epoch + 1
            for group in opt.param_groups:
                group["lr"] = s.lr * s.lr_decay ** (e - 1)
            order = epoch_order(n, s.seed, e)
            net.train()
            total = s.epochs * per_epoch
            for b in range(res.batch, per_epoch):
                if stop_event is not None and stop_event.is_set():
                    return res
                idx = order[b * s.batch_size : (b + 1) * s.batch_size]
                xb, yb = norm(data.x[idx].to(dev)), labels[idx].to(dev)
                opt.zero_grad(set_to_none=True)
                out = net(xb)
                loss = nn.functional.cross_entropy(out, yb)
                loss.backward()
                opt.step()
                lv, hits = float(loss.detach()), int((out.argmax(1) == yb).sum())
                res.batch, res.step = b + 1, res.step + 1
                sums = res._sums
                sums[0] += lv * len(idx)
                sums[1] += hits
                sums[2] += len(idx)
                res.losses.append((res.step, lv, hits / len(idx)))
                metrics: dict[str, Any] = {
                    "epoch": e,
                    "accuracy": hits / len(idx),
                    "train_accuracy": sums[1] / sums[2],
                }
                if b + 1 == per_epoch:
                    test_acc = evaluate(net, data.x_test, data.y_test, norm)
                    metrics["test_accuracy"] = test_acc
                    res.history.append(
                        {
                            "epoch": e,
                            "step": res.step,
                            "train_loss": sums[0] / sums[2],
                            "train_accuracy": sums[1] / sums[2],
                            "test_accuracy": test_acc,
                        }
                    )
                    res.epoch, res.batch, res._sums = e, 0, [0.0, 0.0, 0.0]
                    _snapshot(timeline, res, train_loss=res.history[-1]["train_loss"],
                              test_accuracy=test_acc)  # fmt: skip
                yield Step(res.step - 1, lv, None, metrics, total)
        res.finished = True
        return res
    finally:
        net.eval()


def train(
    handle_or_module: ModelHandle | nn.Module, data: TrainData, **settings: Any
) -> TrainResult:
    """:func:`train_steps` run to its end (``settings``: fields of :class:`TrainSettings`)."""
    return finish(train_steps(handle_or_module, data, TrainSettings().update(**settings)))


def handle_of(template: ModelHandle, module: nn.Module, weights: str = "trained") -> ModelHandle:
    """``module`` (a trained copy) as a :class:`ModelHandle` with ``template``'s input spec."""
    return ModelHandle(
        module,
        name=template.name,
        device=template.device,
        input_size=template.input_size,
        mean=template.mean,
        std=template.std,
        resize=template.resize,
        interpolation=template.interpolation,
        class_names=template.class_names,
        weights=weights,
    )


@dataclass
class RandomizationComparison:
    """What :func:`compare_randomized` returns.

    Attributes
    ----------
    images : torch.Tensor
        ``(n, C, H, W)`` the pixels compared.
    normal, randomized : torch.Tensor
        ``(n, C, H, W)`` the gradient maps (model-input space, CPU) of the two networks.
    correlations : list of float
        Spearman rank correlation of the two maps' absolute values, per image.
    signed : list of float
        The same of the signed maps.
    method : str
    """

    images: torch.Tensor
    normal: torch.Tensor
    randomized: torch.Tensor
    correlations: list[float]
    signed: list[float]
    method: str

    @property
    def mean(self) -> float:
        """Mean of :attr:`correlations`."""
        return sum(self.correlations) / max(1, len(self.correlations))


def compare_randomized(
    normal: ModelHandle,
    randomized: ModelHandle,
    pixels: torch.Tensor,
    targets: torch.Tensor | list[int] | None = None,
    method: str = "saliency",
) -> RandomizationComparison:
    """Attribution maps of the normal and the randomized-label network for the same images.

    Adebayo et al. (2018): a map that barely changes when the network was trained on permuted
    labels (it learned nothing about the digits) does not explain what the network learned.

    Parameters
    ----------
    normal, randomized : ModelHandle
        The two networks (same input spec).
    pixels : torch.Tensor
        ``(n, C, H, W)`` in ``[0, 1]``.
    targets : tensor or list of int, optional
        The class explained per image (default: each network's own predicted class).
    method : str
        A gradient method of :func:`cnnvis_widgets.core.attribution.attribute` (``"saliency"``,
        ``"guided_backprop"``, ``"deconvnet"``...).

    Returns
    -------
    RandomizationComparison
    """
    from .attribution import attribute
    from .attribution.sanity import spearman

    x = pixels.float()
    maps = []
    for h in (normal, randomized):
        xi = h.normalize(x.to(h.device))
        if targets is None:
            with torch.no_grad():
                t: Any = h.logits(xi).argmax(1).tolist()
        else:
            t = [int(v) for v in targets]
        maps.append(attribute(h, xi, t, method=method).detach().cpu())
    a, b = maps
    corr = [spearman(p.sum(0).abs(), q.sum(0).abs()) for p, q in zip(a, b)]
    signed = [spearman(p.sum(0), q.sum(0)) for p, q in zip(a, b)]
    return RandomizationComparison(x.cpu(), a, b, corr, signed, method)
