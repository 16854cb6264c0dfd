"""``zf_mnist``: a small ZF-style CNN trained by the project itself on 4,000 MNIST digits, offline.

Zeiler & Fergus (2014) looked at a network's first-layer filters and features across training;
this network is small enough for a class to watch that in seconds. Its architecture follows
theirs in miniature: convolution -> ReLU -> (real) max-pooling, twice, then a linear classifier,

    conv1 5x5, 1 -> 16, pad 2   (28x28)     relu1   pool1 2x2 max   (14x14)
    conv2 3x3, 16 -> 32, pad 1  (14x14)     relu2   pool2 2x2 max   (7x7)
    fc    32*7*7 -> 10

so DeconvNet's switches matter here (unlike EfficientNet-Lite0, which has no max-pooling).

Training (:func:`checkpoints`) is deterministic: one CPU thread, the initialisation seeded by
``seed``, each epoch's batch order drawn from a generator seeded by ``(seed, epoch)``, Adam; the
train/test split is :func:`cnnvis_widgets.data.digits.train_test_split` (100 test digits per
class). It runs on first use (about 10-20 s on one core) and is cached with one checkpoint per
epoch (epoch 0 is the initialisation), keyed by content: the source of the architecture and of
the training code, the settings and the digest of the digits, never a name. An interrupted run
resumes from its last finished epoch (the optimizer state is in each checkpoint), bit for bit.

``load_model("zf_mnist")`` is the last epoch; ``weights="epoch:2"`` the checkpoint of epoch 2;
``weights=None`` the random twin (seeded by ``seed``; ``seed=0`` is epoch 0).

Examples
--------
>>> from cnnvis_widgets import load_model                      # doctest: +SKIP
>>> h = load_model("zf_mnist", device="cpu")                   # doctest: +SKIP
>>> [c["test_accuracy"] for c in history()]                    # doctest: +SKIP
[0.1, 0.96, 0.975, 0.978, 0.98]
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "CLASS_NAMES",
    "INPUT_SPEC",
    "ZFNet",
    "ZFTraining",
    "TRAINING",
    "build",
    "checkpoints",
    "history",
    "evaluate",
    "parse_epoch",
    "cache_key_parts",
]

#: what the network reads: 28x28 grey pixels, MNIST's mean and std (no resize, no crop)
INPUT_SPEC: dict[str, Any] = {
    "size": 28,
    "resize": 28,
    "mean": (0.1307,),
    "std": (0.3081,),
    "interpolation": "bilinear",
}
CLASS_NAMES = [str(i) for i in range(10)]


class ZFNet(nn.Module):
    """conv-ReLU-maxpool x 2, then linear: a Zeiler & Fergus-style CNN for 28x28 grey digits.

    Parameters
    ----------
    channels : (int, int)
        Filters of ``conv1`` and ``conv2``.
    classes : int

    Examples
    --------
    >>> net = ZFNet()
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> [n for n, _ in net.features.named_children()]
    ['conv1', 'relu1', 'pool1', 'conv2', 'relu2', 'pool2']
    """

    def __init__(self, channels: tuple[int, int] = (16, 32), classes: int = 10) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, c1, 5, padding=2),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(c1, c2, 3, padding=1),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
            )
        )
        self.fc = nn.Linear(c2 * 7 * 7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@dataclass(frozen=True)
class ZFTraining:
    """How the embedded network is trained (every field is part of the cache key)."""

    epochs: int = 4
    batch_size: int = 50
    lr: float = 2e-3
    lr_decay: float = 0.5
    seed: int = 0
    test_per_class: int = 100
    channels: tuple[int, int] = (16, 32)


#: the settings of ``load_model("zf_mnist")``
TRAINING = ZFTraining()

_lock = threading.Lock()


def build(seed: int = 0, channels: tuple[int, int] = (16, 32)) -> ZFNet:
    """A freshly initialised :class:`ZFNet` (PyTorch's default init under ``manual_seed(seed)``;
    the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return ZFNet(channels)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std``, the very arithmetic of :meth:`ModelHandle.normalize` (so a run of
    :func:`cnnvis_widgets.core.training.train_steps` on a handle repeats these bytes)."""
    mean = torch.tensor(INPUT_SPEC["mean"], dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(INPUT_SPEC["std"], dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _split(t: ZFTraining):
    from ..data.digits import train_test_split

    return train_test_split(test_per_class=t.test_per_class, seed=t.seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The batch order of ``epoch`` (1-based): a permutation of ``range(n)`` from a generator
    seeded by ``(seed, epoch)``, so any epoch can be replayed alone."""
    g = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(int(n), generator=g)


@torch.no_grad()
def evaluate(module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Top-1 accuracy of ``module`` on pixels ``x`` (``[0, 1]``, normalized here) and labels."""
    was = module.training
    module.eval()
    try:
        hits = 0
        for i in range(0, len(x), batch):
            hits += int((module(_normalize(x[i : i + batch])).argmax(1) == y[i : i + batch]).sum())
    finally:
        module.train(was)
    return hits / max(1, len(x))


def _train_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    t: ZFTraining,
    epoch: int,
) -> tuple[float, float]:
    """One epoch of Adam on cross-entropy (the learning rate decayed per epoch);
    ``(mean loss, train accuracy)`` over its batches."""
    net.train()
    for group in opt.param_groups:  # lr * decay**(epoch - 1): set here, so a resume matches
        group["lr"] = t.lr * t.lr_decay ** (epoch - 1)
    order = epoch_order(len(x), t.seed, epoch)
    total, hits, seen = 0.0, 0, 0
    for i in range(0, len(order), t.batch_size):
        idx = order[i : i + t.batch_size]
        xb, yb = _normalize(x[idx]), y[idx]
        opt.zero_grad(set_to_none=True)
        out = net(xb)
        loss = nn.functional.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
        hits += int((out.argmax(1) == yb).sum())
        seen += len(idx)
    return total / seen, hits / seen


def cache_key_parts(t: ZFTraining = TRAINING) -> dict[str, Any]:
    """Everything a trained checkpoint depends on: the source of the architecture and of the
    training code, the settings, the digits' digest and the torch version."""
    train, test = _split(t)
    code = "".join(
        inspect.getsource(f)
        for f in (ZFNet, build, _normalize, epoch_order, _train_epoch, _train, evaluate)
    )
    return {
        "code": code,
        "settings": asdict(t),
        "train": train.key,
        "test": test.key,
        "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in INPUT_SPEC.items()},
        "torch": torch.__version__.split("+")[0],
    }


def _entry(key: str, epoch: int):
    from ..cache import entry_path

    return entry_path("zf_mnist", f"{key}-epoch{epoch}", ".pt")


def _save(path: Any, ck: dict[str, Any]) -> None:
    from ..cache import save_tensors

    save_tensors(path, ck)


def _train(
    t: ZFTraining, key: str, progress: Callable[[int, dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Train (or resume) and cache every epoch's checkpoint; the checkpoints, epoch 0 first."""
    from ..cache import load_tensors, read_entry, write_entry

    train, test = _split(t)
    x, y = train.tensors()
    xt, yt = test.tensors()
    found: list[dict[str, Any]] = []
    for e in range(t.epochs + 1):
        ck = read_entry(_entry(key, e), load_tensors)
        if ck is None:
            break
        found.append(ck)
    if len(found) == t.epochs + 1:
        return found
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build(t.seed, t.channels)
        opt = torch.optim.Adam(net.parameters(), lr=t.lr)
        if found:
            net.load_state_dict(found[-1]["state_dict"])
            opt.load_state_dict(found[-1]["optimizer"])
        else:
            first = {
                "epoch": 0,
                "state_dict": {k: v.clone() for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict(),
                "train_loss": float("nan"),
                "train_accuracy": evaluate(net, x, y),
                "test_accuracy": evaluate(net, xt, yt),
            }
            write_entry(_entry(key, 0), functools.partial(_save, ck=first))
            found.append(first)
        for e in range(len(found), t.epochs + 1):
            loss, acc = _train_epoch(net, opt, x, y, t, e)
            ck = {
                "epoch": e,
                "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict(),
                "train_loss": loss,
                "train_accuracy": acc,
                "test_accuracy": evaluate(net, xt, yt),
            }
            write_entry(_entry(key, e), functools.partial(_save, ck=ck))
            found.append(ck)
            if progress is not None:
                progress(e, ck)
    finally:
        torch.set_num_threads(threads)
    return found


_memo: dict[str, list[dict[str, Any]]] = {}


def checkpoints(
    training: ZFTraining = TRAINING,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every epoch's checkpoint of the embedded network (trained on first use, then cached).

    Parameters
    ----------
    training : ZFTraining
        The settings (default :data:`TRAINING`, what ``load_model("zf_mnist")`` uses).
    progress : callable, optional
        ``progress(epoch, checkpoint)`` after each epoch that is trained now (not for cached ones).

    Returns
    -------
    list of dict
        Epoch 0 (the initialisation) to ``training.epochs``; each has ``epoch``, ``state_dict``
        (CPU tensors: do not modify them), ``optimizer``, ``train_loss`` (NaN for epoch 0),
        ``train_accuracy`` and ``test_accuracy``.
    """
    from ..cache import cache_key

    key = cache_key("zf_mnist", **cache_key_parts(training))
    with _lock:
        if key not in _memo:
            _memo[key] = _train(training, key, progress)
        return _memo[key]


def history(training: ZFTraining = TRAINING) -> list[dict[str, float]]:
    """Per epoch (0 first): ``epoch``, ``train_loss``, ``train_accuracy``, ``test_accuracy``."""
    keys = ("epoch", "train_loss", "train_accuracy", "test_accuracy")
    return [{k: c[k] for k in keys} for c in checkpoints(training)]


def parse_epoch(weights: str, epochs: int) -> int:
    """``"epoch:2"`` -> 2 (in ``0..epochs``); a clear error otherwise.

    Examples
    --------
    >>> parse_epoch("epoch:3", 4)
    3
    """
    text = weights.split(":", 1)[1].strip()
    try:
        e = int(text)
    except ValueError:
        raise ValueError(f"weights={weights!r}: write 'epoch:<n>' with n in 0..{epochs}") from None
    if not 0 <= e <= epochs:
        raise ValueError(f"weights={weights!r}: zf_mnist has checkpoints of epochs 0..{epochs}")
    return e


def load_weights(weights: str | None, seed: int) -> tuple[ZFNet, str]:
    """The module and weights label for ``load_model("zf_mnist", weights=...)``."""
    t = TRAINING
    if weights is None:
        return build(seed, t.channels), f"random(seed={seed})"
    if weights in ("default", "mnist") or weights.startswith("epoch:"):
        e = t.epochs if not weights.startswith("epoch:") else parse_epoch(weights, t.epochs)
        ck = checkpoints(t)[e]
        net = build(t.seed, t.channels)
        net.load_state_dict(ck["state_dict"])
        acc = ck["test_accuracy"]
        label = f"mnist_5k epoch {e}/{t.epochs} (test accuracy {acc:.3f})"
        return net, label
    net = build(seed, t.channels)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net, str(weights)


def named_model(weights: str | None, seed: int):
    """The :data:`cnnvis_widgets.models.NAMED_MODELS` builder of ``"zf_mnist"``."""
    net, label = load_weights(weights, seed)
    return net, dict(INPUT_SPEC), list(CLASS_NAMES), label
