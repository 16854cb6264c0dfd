"""Training a decoder: the network stays frozen, the decoder learns to invert one layer.

After Dosovitskiy & Brox 2016: pixel L2 loss (optionally plus a feature L2 loss), Adam, mixed
precision on CUDA (``torch.autocast``). :func:`train_decoder_steps` yields a ``Step`` per update
(loss, a sample reconstruction, throughput), writes checkpoints to the results cache
(:mod:`.checkpoints`) so that a new call resumes where one stopped, and returns the decoder.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ... import cache, limits
from ...models.handle import ModelHandle
from ..blocks.hooks import capture, forward_to
from ..blocks.optimize import NonFiniteLossError, Step, read_losses
from ..blocks.readback import LossLog
from ..blocks.runs import Run
from ..blocks.settings import Settings
from ..inversion import target_pixels
from .checkpoints import cache_entry, load_decoder, read_checkpoint, save_decoder
from .decoder import UpconvDecoder, autocast
from .reconstruct import decoded_features
from .training_data import TrainingImages, training_images

__all__ = ["DecoderSettings", "train_decoder_steps", "train_decoder"]


@dataclass
class DecoderSettings(Settings):
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
) -> Generator[Step, None, UpconvDecoder]:
    """Train (or resume training) the decoder of ``layer``; yield a ``Step`` after each update.

    Each ``Step`` has ``loss`` (the training loss of the batch), ``image`` (a pixel-space pair
    ``(2, C, S, S)``: the sample image and its reconstruction, refreshed every ``sample_every``
    steps) and ``metrics`` (``"images_per_s"``, ``"pixel_loss"`` (a scalar tensor on the
    device), ``"checkpoint"``: the path
    when a checkpoint was written at this step, ``"decoder"``: the decoder itself). The network
    stays frozen; only the decoder learns. Checkpoints go to :func:`decoder_path` (or ``path``)
    every ``checkpoint_every`` steps and when the run ends or is stopped, so a new call with
    ``resume=True`` continues where this one stopped. The generator returns the decoder
    (``decoder = yield from train_decoder_steps(...)``), also when stopped by ``stop_event``.

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
    named = dict(steps=steps, lr=lr, batch_size=batch_size, feature_weight=feature_weight)
    settings = (settings or DecoderSettings()).update(
        **{k: v for k, v in named.items() if v is not None}
    )
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
    entry = Path(path) if path is not None else cache_entry(handle, layer, decoder)
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
        data = read_checkpoint(path)
    elif resume and entry is not None:
        data = cache.read_entry(
            entry, read_checkpoint
        )  # a damaged checkpoint: start afresh (warned)
    if data is not None:
        if data["config"] == decoder.config:
            decoder.load_state_dict(data["state"])
            if "optimizer" in data:
                opt.load_state_dict(data["optimizer"])
            start = int(data.get("step", 0))
    data_src = TrainingImages(
        training_images(dataset, size) if not isinstance(dataset, torch.Tensor) else dataset,
        size,
        handle.in_channels,
        seed,
    )
    if sample is None:
        sample_px = data_src.get(0).float().div(255).unsqueeze(0).to(dev)
    else:
        sample_px = target_pixels(handle, sample, size)
    sample_phi = decoded_features(handle, layer, sample_px)
    use_scaler = dev.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    meta = {"model": handle.name, "layer": layer, "size": size, "dataset": data_src.key}
    preview: torch.Tensor | None = None
    step = start
    saved = start
    failed = False
    t_last = time.perf_counter()
    rate = 0.0
    log = LossLog()  # the losses stay on the device, read (and checked) every `log.every` steps
    lrs: list[float] = []

    def check() -> None:
        if log.pending == 0 and log.first_bad is not None:
            raise NonFiniteLossError(
                f"the decoder's loss became {log.values[log.first_bad]} at step "
                f"{start + log.first_bad}; lower the learning rate ({lrs[log.first_bad]:g})"
            )

    decoder.train()
    try:
        with handle.pinned(ttl=1.0):  # the twin checked once per second, not per step
            while step < int(settings.steps):
                check()  # a consumer may have read the losses
                if stop_event is not None and stop_event.is_set():
                    return decoder
                for group in opt.param_groups:
                    group["lr"] = float(settings.lr)
                bs = int(settings.batch_size)
                x = data_src.batch(bs).to(dev, non_blocking=True)
                phi = decoded_features(handle, layer, x)
                with autocast(dev):
                    out = decoder(phi)
                out = out.float()
                if out.shape[-2:] != x.shape[-2:]:
                    out = F.interpolate(out, size=x.shape[-2:], mode="bilinear")
                pixel_loss = F.mse_loss(out, x)
                loss = pixel_loss
                fw = float(settings.feature_weight)
                if fw > 0:
                    with autocast(dev):
                        loss = loss + fw * _feature_loss(handle, layer, out, phi)
                value = log.add(loss)
                lrs.append(float(settings.lr))
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
                    "pixel_loss": pixel_loss.detach(),  # on the device: float() reads it
                    "checkpoint": None,
                    "decoder": decoder,
                }
                if preview is None or (step - start) % max(1, sample_every) == 0:
                    rec = decoder.decode(sample_phi, size=sample_px.shape[-2:])
                    preview = torch.cat([sample_px, rec])
                step += 1
                writes = save and checkpoint_every > 0 and step % checkpoint_every == 0
                if writes or log.due():
                    log.read()  # a checkpoint is written only of checked steps
                    check()
                if writes:
                    if checkpoint(step):
                        metrics["checkpoint"] = str(path)
                    saved = step
                yield Step(step - 1, value, preview, metrics, int(settings.steps))
            log.read()
            check()
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
            log.read()
            if log.first_bad is None:  # closed before the check: still never a NaN checkpoint
                checkpoint(step)
    return decoder


def train_decoder(
    handle: ModelHandle, layer: str, dataset: Any = None, **kwargs: Any
) -> tuple[UpconvDecoder, list[float]]:
    """Run :func:`train_decoder_steps` to the end; returns ``(decoder, losses)``.

    Examples
    --------
    >>> dec, losses = train_decoder(h, "_blocks.3", steps=300)   # doctest: +SKIP
    """
    run = Run(train_decoder_steps(handle, layer, dataset, **kwargs))
    refs = [s.loss_ref for s in run]  # unread: one transfer every few steps, not per step
    losses = [float(v or 0.0) for v in read_losses(refs)]
    dec: UpconvDecoder | None = run.result
    if not losses:  # already trained up to `steps`: the checkpoint is the result
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
