"""Learned inversion: up-convolutional decoders from one layer's features back to the image.

After Dosovitskiy & Brox, *Inverting visual representations with convolutional networks*
(CVPR 2016, "UpconvNet"): a decoder network is trained, with the analysed network frozen, to map
the features of a layer back to the image that produced them (pixel L2 loss, optionally plus a
feature L2 loss). Once trained, a reconstruction is one forward pass (:meth:`UpconvDecoder.
decode`), against a few hundred optimization steps for the regularized inversion of
:mod:`cnnvis_widgets.core.inversion`.

* :class:`UpconvDecoder` is sized from the layer: its channels set the width, its stride (input
  side over feature side) the number of 2x transposed-convolution stages; fully connected
  layers start from a 4x4 map.
* :func:`train_decoder_steps` yields progress (a :class:`~cnnvis_widgets.core.optimize.Step` per
  update: loss, a sample reconstruction, throughput) and writes checkpoints to the results cache
  (:mod:`cnnvis_widgets.cache`), keyed by model and layer; a new call resumes from the
  checkpoint. On a CUDA device it trains in mixed precision (``torch.autocast``).
* The default training set is offline: the packaged photos with heavy augmentation
  (:func:`cnnvis_widgets.data.datasets.augmented_samples`); any folder of images, an
  :class:`~cnnvis_widgets.data.datasets.ImageDataset`, a list of PIL images or a pixel tensor
  works too.

Examples
--------
>>> from cnnvis_widgets import load_model                              # doctest: +SKIP
>>> from cnnvis_widgets.core import upconv                             # doctest: +SKIP
>>> h = load_model()                                                   # doctest: +SKIP
>>> for step in upconv.train_decoder_steps(h, "_blocks.3", steps=500):  # doctest: +SKIP
...     pass
>>> dec = upconv.load_decoder(h, "_blocks.3")                          # doctest: +SKIP
>>> pixels = upconv.reconstruct(h, sample_image("cat"), "_blocks.3", dec)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from .. import cache, limits
from ..imaging import pil_to_tensor
from ..models.handle import ModelHandle
from .blocks.hooks import capture, forward_to
from .blocks.optimize import NonFiniteLossError, Step
from .inversion import layer_features, target_pixels

__all__ = [
    "UpconvDecoder",
    "DecoderSettings",
    "decoder_path",
    "save_decoder",
    "load_decoder",
    "train_decoder_steps",
    "train_decoder",
    "reconstruct",
    "training_images",
]


# ------------------------------------------------------------------------------- the network
class UpconvDecoder(nn.Module):
    """Decoder from a layer's features ``(B, C, h, w)`` (or ``(B, C)``) to pixels ``(B, 3, H, W)``.

    Architecture (Dosovitskiy & Brox 2016): two 3x3 convolutions at the feature resolution, then
    per 2x upsampling stage a 4x4 transposed convolution with stride 2 and a 3x3 convolution,
    leaky ReLU (0.2) after each, and a final 3x3 convolution with a sigmoid, so the output is in
    pixel space ``[0, 1]``. Widths halve at each stage, from ``width`` down to ``min_width``.

    Parameters
    ----------
    in_channels : int
        Channels of the layer.
    stride : float
        Input side over feature side (``224 / 28 = 8``); ``ceil(log2(stride))`` stages, and a
        final resize when the stride is not a power of two.
    out_channels : int
        Image channels (3 for RGB).
    width : int, optional
        Channels after the first convolution (default ``clamp(2 * in_channels, 64, 256)``).
    min_width : int
        Smallest stage width.
    spatial : bool
        False for a fully connected layer: a linear map to a 4x4 map starts the decoder.
    image_size : int
        Output side for a non-spatial layer (ignored otherwise).

    Examples
    --------
    >>> dec = UpconvDecoder(40, stride=8)
    >>> dec(torch.zeros(2, 40, 16, 16)).shape
    torch.Size([2, 3, 128, 128])
    """

    def __init__(
        self,
        in_channels: int,
        stride: float,
        *,
        out_channels: int = 3,
        width: int | None = None,
        min_width: int = 32,
        spatial: bool = True,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if spatial and stride <= 0:
            raise ValueError(f"stride must be > 0, got {stride}")
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "stride": float(stride) if spatial else float(image_size) / 4.0,
            "out_channels": int(out_channels),
            "width": int(width or min(256, max(64, 2 * int(in_channels)))),
            "min_width": int(min_width),
            "spatial": bool(spatial),
            # spatial decoders follow the feature map's size: no image size of their own
            "image_size": 0 if spatial else int(image_size),
        }
        c = self.config
        w = c["width"]
        self.n_up = max(0, math.ceil(math.log2(c["stride"]) - 1e-6)) if c["stride"] > 1 else 0
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.fc: nn.Module | None = None
        if not c["spatial"]:
            self.fc = nn.Sequential(nn.Linear(c["in_channels"], w * 16), act())
            head_in = w
        else:
            head_in = c["in_channels"]
        self.head = nn.Sequential(
            nn.Conv2d(head_in, w, 3, padding=1), act(), nn.Conv2d(w, w, 3, padding=1), act()
        )
        stages: list[nn.Module] = []
        cur = w
        for _ in range(self.n_up):
            nxt = max(c["min_width"], cur // 2)
            stages += [
                nn.ConvTranspose2d(cur, nxt, 4, stride=2, padding=1),
                act(),
                nn.Conv2d(nxt, nxt, 3, padding=1),
                act(),
            ]
            cur = nxt
        self.stages = nn.Sequential(*stages)
        self.tail = nn.Conv2d(cur, c["out_channels"], 3, padding=1)
        #: number of training updates behind the weights (set by training and loading)
        self.trained_steps = 0
        #: what it was trained on (model, layer, size, dataset key)
        self.meta: dict[str, Any] = {}

    @classmethod
    def for_layer(
        cls,
        handle: ModelHandle,
        layer: str,
        *,
        size: int | None = None,
        width: int | None = None,
        min_width: int = 32,
    ) -> UpconvDecoder:
        """A decoder sized for ``layer`` of ``handle`` (channels, stride), on the handle's device.

        ``size`` is the image side it will be trained at (default: the model's input size); it
        only matters for non-spatial layers (spatial decoders follow the feature map's size).
        """
        info = handle.layer(layer)
        size = int(size or handle.input_size[0])
        spatial = info.spatial and (info.height or 0) > 1
        stride = handle.input_size[0] / info.height if spatial and info.height else 1.0
        dec = cls(
            info.channels,
            stride,
            out_channels=handle.in_channels,
            width=width,
            min_width=min_width,
            spatial=spatial,
            image_size=size,
        )
        return dec.to(handle.device)

    def output_size(self, features: torch.Tensor) -> tuple[int, int]:
        """The image size this decoder produces for ``features``."""
        if not self.config["spatial"]:
            s = self.config["image_size"]
            return s, s
        st = self.config["stride"]
        return round(features.shape[-2] * st), round(features.shape[-1] * st)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> pixel-space image (differentiable)."""
        x = features
        if x.dim() < 2 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(
                f"features of shape {tuple(x.shape)} do not fit this decoder, built for "
                f"{self.config['in_channels']} channels"
            )
        if self.fc is not None:
            x = self.fc(x.flatten(1)).view(x.shape[0], self.config["width"], 4, 4)
        elif x.dim() != 4:
            raise ValueError(
                f"this decoder expects 4-D features (B, C, h, w), got shape {tuple(x.shape)}"
            )
        out_hw = self.output_size(features)
        y = self.tail(self.stages(self.head(x)))
        if tuple(y.shape[-2:]) != out_hw:
            y = F.interpolate(y, size=out_hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(y)

    @torch.no_grad()
    def decode(
        self, features: torch.Tensor, size: int | Sequence[int] | None = None
    ) -> torch.Tensor:
        """One forward pass: features -> pixel-space ``(B, C, H, W)`` float32 in ``[0, 1]``.

        ``size`` resizes the output (e.g. to the original image's size). Mixed precision on
        CUDA.
        """
        dev = next(self.parameters()).device
        features = features.to(dev)
        with _autocast(dev):
            y = self(features)
        y = y.float()
        if size is not None:
            hw = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
            if tuple(y.shape[-2:]) != hw:
                y = F.interpolate(y, size=hw, mode="bilinear", align_corners=False)
        return y.clamp(0, 1)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bfloat16 where supported, else float16); nothing elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


# ------------------------------------------------------------------------------- the cache
def decoder_path(
    handle: ModelHandle,
    layer: str,
    decoder: UpconvDecoder | None = None,
    *,
    size: int | None = None,
    width: int | None = None,
) -> Path:
    """Where the decoder of ``layer`` is cached: keyed by the model's content fingerprint
    (every weight and buffer, the input spec), the layer and the decoder's architecture
    (``size``, ``width``: as for :meth:`UpconvDecoder.for_layer`, when ``decoder`` is not
    given). ``OSError`` when the cache folder cannot be used."""
    handle.layer(layer)
    if decoder is None:
        decoder = UpconvDecoder.for_layer(handle, layer, size=size, width=width).cpu()
    config = decoder.config
    key = cache.cache_key(
        "upconv",
        model=handle.fingerprint(),
        layer=layer,
        config=config,
    )
    return cache.cache_path("upconv", key, ".pt")


def save_decoder(
    decoder: UpconvDecoder,
    path: str | Path,
    *,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the decoder (and the optimizer state, to resume training) atomically."""
    payload: dict[str, Any] = {
        "format": "cnnvis-upconv-1",
        "config": dict(decoder.config),
        "state": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
        "step": int(step),
        "meta": dict(meta or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    return cache.save_tensors(path, payload)


def _read(path: str | Path) -> dict[str, Any]:
    data = cache.load_tensors(path)  # weights_only=True: no code runs
    if not isinstance(data, dict) or data.get("format") != "cnnvis-upconv-1":
        raise ValueError(f"{path} is not a cnnvis decoder checkpoint")
    return data


def _build(config: dict[str, Any]) -> UpconvDecoder:
    c = dict(config)
    return UpconvDecoder(
        c["in_channels"],
        c["stride"],
        out_channels=c["out_channels"],
        width=c["width"],
        min_width=c["min_width"],
        spatial=c["spatial"],
        image_size=c["image_size"],
    )


def load_decoder(
    handle: ModelHandle,
    layer: str,
    *,
    path: str | Path | None = None,
    size: int | None = None,
    width: int | None = None,
) -> UpconvDecoder | None:
    """The trained decoder of ``layer`` from the cache (or ``path``), on the handle's device;
    None when none was trained yet. ``decoder.trained_steps`` says how long it trained.

    ``size`` and ``width`` select the architecture as in :meth:`UpconvDecoder.for_layer` (the
    size matters for fully connected layers only). Loaded with ``torch.load(weights_only=True)``.

    Examples
    --------
    >>> dec = load_decoder(h, "_blocks.3")            # doctest: +SKIP
    >>> dec is None or dec.trained_steps > 0          # doctest: +SKIP
    True
    """

    def build(p: Path) -> UpconvDecoder:
        data = _read(p)
        dec = _build(data["config"])
        dec.load_state_dict(data["state"])
        dec.trained_steps = int(data.get("step", 0))
        dec.meta = dict(data.get("meta", {}))
        return dec

    if path is not None:  # your own file: its errors are yours to see
        path = Path(path)
        return build(path).to(handle.device).eval() if path.is_file() else None
    # the cache: a damaged entry or an unusable folder is "not trained yet" (warned once)
    dec = cache.read_entry(_cache_entry(handle, layer, size=size, width=width), build)
    return None if dec is None else dec.to(handle.device).eval()


def _cache_entry(
    handle: ModelHandle,
    layer: str,
    decoder: UpconvDecoder | None = None,
    *,
    size: int | None = None,
    width: int | None = None,
) -> Path | None:
    try:
        return decoder_path(handle, layer, decoder, size=size, width=width)
    except OSError:
        return cache.entry_path("upconv", "unusable", ".pt")  # None, with the warning


# ------------------------------------------------------------------------------- data
@dataclass
class DecoderSettings:
    """Training settings, read at every step.

    Attributes
    ----------
    steps : int
        Total number of updates (a resumed run continues up to this number).
    lr : float
        Adam learning rate.
    batch_size : int
        Images per update.
    feature_weight : float
        Weight of the feature L2 loss ``||phi(decode(phi(x))) - phi(x)||^2 / ||phi(x)||^2``
        (0: pixel loss only, the paper's default).
    """

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 16
    feature_weight: float = 0.0

    def update(self, **kwargs: Any) -> DecoderSettings:
        """Set fields by name (``TypeError`` for unknown names); returns self."""
        names = {f.name for f in dataclasses.fields(self)}
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"unknown setting {k!r}; valid: {', '.join(sorted(names))}")
            setattr(self, k, limits.setting_value(getattr(self, k), v, k))
        return self


def _square_tensor(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)
    return (pil_to_tensor(img)[0] * 255).round().to(torch.uint8)


class _Images:
    """Random batches of pixel images ``(B, C, S, S)`` from a dataset, with flips and shifts.

    Items are decoded on first use and kept as uint8 (a few MB for hundreds of images).
    """

    def __init__(self, source: Any, size: int, channels: int, seed: int) -> None:
        self.size, self.channels = int(size), int(channels)
        self.g = torch.Generator().manual_seed(int(seed))
        self.tensor: torch.Tensor | None = None
        self.items: list[Any] = []
        self.key = ""
        if isinstance(source, torch.Tensor):
            t = source if source.dim() == 4 else source.unsqueeze(0)
            if t.shape[1] != channels:
                raise ValueError(
                    f"training images have {t.shape[1]} channels, the model takes {channels}"
                )
            t = t.float()
            if t.shape[-1] != size or t.shape[-2] != size:
                t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
            self.tensor = (t.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            self.key = f"tensor{tuple(t.shape)}"
            self.n = t.shape[0]
        else:
            self.items = list(training_images(source, size))
            self.key = getattr(source, "key", "") or f"{type(source).__name__}:{len(self.items)}"
            self.n = len(self.items)
        if self.n == 0:
            raise ValueError("the training set is empty")
        self.cache: dict[int, torch.Tensor] = {}
        self.perm: list[int] = []

    def get(self, i: int) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[i]
        if i not in self.cache:
            item = self.items[i]
            img = item[1] if isinstance(item, tuple) else item
            if not isinstance(img, Image.Image):
                raise TypeError(
                    f"training item {i} is a {type(img).__name__}; expected a PIL image or "
                    "(name, PIL image)"
                )
            self.cache[i] = _square_tensor(img, self.size, self.channels)
        return self.cache[i]

    def batch(self, n: int) -> torch.Tensor:
        idx = []
        for _ in range(n):
            if not self.perm:
                self.perm = torch.randperm(self.n, generator=self.g).tolist()
            idx.append(self.perm.pop())
        x = torch.stack([self.get(i) for i in idx]).float().div_(255)
        flip = torch.rand(n, generator=self.g) < 0.5
        if flip.any():
            x[flip] = x[flip].flip(-1)
        return x


def training_images(dataset: Any = None, size: int = 128) -> Sequence[Any]:
    """The training set as a sequence of PIL images or ``(name, image)`` pairs.

    ``None`` / ``"default"`` / ``"augmented"``: the packaged photos with heavy augmentation
    (:func:`~cnnvis_widgets.data.datasets.augmented_samples`, 512 images); a folder path, an
    ``ImageDataset`` or ``"photos"``: that dataset; a list of PIL images: as is.
    """
    from ..data import datasets as D

    if dataset is None:
        return D.augmented_samples(n=512, size=int(size), seed=0)
    ds = D.as_dataset(dataset)
    if ds is not None:
        return ds
    if isinstance(dataset, Image.Image):
        return [dataset]
    if isinstance(dataset, Sequence) and not isinstance(dataset, (str, bytes)):
        return dataset
    raise TypeError(
        f"cannot train on a {type(dataset).__name__}: pass None (the packaged photos, augmented), "
        "a folder of images, an ImageDataset, a list of PIL images or a pixel tensor (N, C, H, W)"
    )


# ------------------------------------------------------------------------------- training
def _features(handle: ModelHandle, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    with _autocast(handle.device):
        return layer_features(handle, pixels, layer)[layer].float()


def _feature_loss(
    handle: ModelHandle, layer: str, out: torch.Tensor, phi: torch.Tensor
) -> torch.Tensor:
    with capture(handle, [layer], stop_early=True) as acts:
        forward_to(handle, handle.normalize(out), acts, needs_logits=False)
        d = (acts[layer].float() - phi).pow(2).flatten(1).sum(1)
    return (d / phi.pow(2).flatten(1).sum(1).clamp_min(1e-12)).mean()


def train_decoder_steps(
    handle: ModelHandle,
    layer: str,
    dataset: Any = None,
    *,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    feature_weight: float | None = None,
    size: int = 128,
    width: int | None = None,
    seed: int = 0,
    settings: DecoderSettings | None = None,
    checkpoint_every: int = 100,
    sample_every: int = 10,
    sample: Image.Image | torch.Tensor | None = None,
    save: bool = True,
    resume: bool = True,
    path: str | Path | None = None,
    stop_event: threading.Event | None = None,
) -> Iterator[Step]:
    """Train (or resume training) the decoder of ``layer``; yield a ``Step`` after each update.

    Each ``Step`` has ``loss`` (the training loss of the batch), ``image`` (a pixel-space pair
    ``(2, C, S, S)``: the sample image and its reconstruction, refreshed every ``sample_every``
    steps) and ``metrics`` (``"images_per_s"``, ``"pixel_loss"``, ``"checkpoint"``: the path
    when a checkpoint was written at this step, ``"decoder"``: the decoder itself). The network
    stays frozen; only the decoder learns. Checkpoints go to :func:`decoder_path` (or ``path``)
    every ``checkpoint_every`` steps and when the run ends or is stopped, so a new call with
    ``resume=True`` continues where this one stopped.

    Parameters
    ----------
    handle : ModelHandle
    layer : str
    dataset : optional
        ``None`` (default: packaged photos, augmented), a folder path, an ``ImageDataset``, a
        list of PIL images or a pixel tensor ``(N, C, H, W)``.
    steps, lr, batch_size, feature_weight : optional
        Override :class:`DecoderSettings` (``settings`` is read at every step).
    size : int
        Side of the training images.
    width : int, optional
        Decoder width (see :class:`UpconvDecoder`).
    seed : int
        Seeds the decoder's initialization and the batches.
    sample : PIL image or tensor, optional
        The image whose reconstruction is shown (default: the first training image).
    save, resume : bool
        Write checkpoints / start from the existing one.
    path : optional
        Checkpoint file instead of the cache's.
    stop_event : threading.Event, optional
        Set it to stop between steps (a checkpoint is written).

    Raises
    ------
    KeyError
        Unknown layer (the message lists the nearest names).
    NonFiniteLossError
        The loss became NaN/inf (lower the learning rate); no checkpoint is written then.

    Examples
    --------
    >>> for s in train_decoder_steps(h, "_blocks.3", steps=200):  # doctest: +SKIP
    ...     print(s.index, s.loss)
    """
    handle.layer(layer)
    if settings is None:
        settings = DecoderSettings()
    named = dict(steps=steps, lr=lr, batch_size=batch_size, feature_weight=feature_weight)
    settings.update(**{k: v for k, v in named.items() if v is not None})
    size = limits.check_side(size)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    limits.check_batch(settings.batch_size, size, size, name="batch_size")
    limits.check_steps(settings.steps, minimum=0)
    seed = limits.as_int(seed, "seed")
    dev = handle.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        decoder = UpconvDecoder.for_layer(handle, layer, size=size, width=width)
    own_path = path is not None
    entry = Path(path) if path is not None else _cache_entry(handle, layer, decoder)
    save = save and entry is not None  # no usable cache folder: train without checkpoints
    path = entry if entry is not None else Path("unsaved")

    def checkpoint(at: int) -> bool:
        def write(p: Path) -> None:
            save_decoder(decoder, p, step=at, optimizer=opt, meta=meta)

        if own_path:
            write(path)
            return True
        return cache.write_entry(path, write)  # a read-only cache: warned once, training goes on

    opt = torch.optim.Adam(decoder.parameters(), lr=float(settings.lr))
    start = 0
    data = None
    if resume and own_path and path.is_file():
        data = _read(path)
    elif resume and entry is not None:
        data = cache.read_entry(entry, _read)  # a damaged checkpoint: start afresh (warned)
    if data is not None:
        if data["config"] == decoder.config:
            decoder.load_state_dict(data["state"])
            if "optimizer" in data:
                opt.load_state_dict(data["optimizer"])
            start = int(data.get("step", 0))
    data_src = _Images(
        training_images(dataset, size) if not isinstance(dataset, torch.Tensor) else dataset,
        size,
        handle.in_channels,
        seed,
    )
    if sample is None:
        sample_px = data_src.get(0).float().div(255).unsqueeze(0).to(dev)
    else:
        sample_px = target_pixels(handle, sample, size)
    sample_phi = _features(handle, layer, sample_px)
    use_scaler = dev.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    meta = {"model": handle.name, "layer": layer, "size": size, "dataset": data_src.key}
    preview: torch.Tensor | None = None
    step = start
    saved = start
    failed = False
    t_last = time.perf_counter()
    rate = 0.0
    decoder.train()
    try:
        with handle.pinned(ttl=1.0):  # the twin checked once per second, not per step
            while step < int(settings.steps):
                if stop_event is not None and stop_event.is_set():
                    return
                for group in opt.param_groups:
                    group["lr"] = float(settings.lr)
                bs = int(settings.batch_size)
                x = data_src.batch(bs).to(dev, non_blocking=True)
                phi = _features(handle, layer, x)
                with _autocast(dev):
                    out = decoder(phi)
                out = out.float()
                if out.shape[-2:] != x.shape[-2:]:
                    out = F.interpolate(out, size=x.shape[-2:], mode="bilinear")
                pixel_loss = F.mse_loss(out, x)
                loss = pixel_loss
                fw = float(settings.feature_weight)
                if fw > 0:
                    with _autocast(dev):
                        loss = loss + fw * _feature_loss(handle, layer, out, phi)
                value = float(loss.detach())
                if not math.isfinite(value):
                    failed = True
                    raise NonFiniteLossError(
                        f"the decoder's loss became {value} at step {step}; lower the learning "
                        f"rate ({float(settings.lr):g})"
                    )
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                now = time.perf_counter()
                inst = bs / max(now - t_last, 1e-9)
                rate = inst if rate == 0.0 else 0.9 * rate + 0.1 * inst
                t_last = now
                metrics: dict[str, Any] = {
                    "images_per_s": rate,
                    "pixel_loss": float(pixel_loss.detach()),
                    "checkpoint": None,
                    "decoder": decoder,
                }
                if preview is None or (step - start) % max(1, sample_every) == 0:
                    rec = decoder.decode(sample_phi, size=sample_px.shape[-2:])
                    preview = torch.cat([sample_px, rec])
                step += 1
                if save and checkpoint_every > 0 and step % checkpoint_every == 0:
                    if checkpoint(step):
                        metrics["checkpoint"] = str(path)
                    saved = step
                yield Step(step - 1, value, preview, metrics, int(settings.steps))
    except GeneratorExit:  # closed by the consumer (a stop): keep what was learned
        raise
    except BaseException:
        failed = True
        raise
    finally:
        decoder.eval()
        decoder.trained_steps = step
        decoder.meta = meta
        if save and not failed and step > saved:
            checkpoint(step)


def train_decoder(handle: ModelHandle, layer: str, dataset: Any = None, **kwargs: Any):
    """Run :func:`train_decoder_steps` to the end; returns ``(decoder, losses)``.

    Examples
    --------
    >>> dec, losses = train_decoder(h, "_blocks.3", steps=300)   # doctest: +SKIP
    """
    losses: list[float] = []
    dec: UpconvDecoder | None = None
    for s in train_decoder_steps(handle, layer, dataset, **kwargs):
        losses.append(float(s.loss or 0.0))
        dec = s.metrics["decoder"]
    if dec is None:  # already trained up to `steps`: the checkpoint is the result
        dec = load_decoder(
            handle,
            layer,
            path=kwargs.get("path"),
            size=kwargs.get("size", 128),
            width=kwargs.get("width"),
        )
    if dec is None:
        raise RuntimeError("no training step was made and no decoder is saved (steps=0?)")
    return dec.eval(), losses


def reconstruct(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layer: str,
    decoder: UpconvDecoder | None = None,
    *,
    size: int | None = None,
) -> torch.Tensor:
    """Features of ``image`` at ``layer``, decoded: pixel space ``(1, C, H, W)`` on the device.

    ``decoder`` defaults to the cached one (``FileNotFoundError`` when none was trained).

    Examples
    --------
    >>> pixels = reconstruct(h, sample_image("cat"), "_blocks.3", size=128)  # doctest: +SKIP
    """
    if decoder is None:
        decoder = load_decoder(handle, layer, size=size)
        if decoder is None:
            raise FileNotFoundError(
                f"no decoder trained for layer {layer!r} of {handle.name!r} yet: run "
                f"train_decoder_steps(handle, {layer!r}) (or press 'Train decoder' in the widget)"
            )
    pixels = target_pixels(handle, image, size)
    phi = _features(handle, layer, pixels)
    return decoder.decode(phi, size=pixels.shape[-2:])
