"""Image parameterizations: pixel, FFT with decorrelated colour, and MaCo's phase only.

A parameterization owns the optimized tensors and maps them to a pixel-space batch
``(B, C, H, W)``. It can also be *set* from a pixel image (the inverse map), which is how
pixel-space regularizers (blur, clipping, decay) act on any parameterization.

:class:`MacoParam` (Fel et al. 2023, magnitude-constrained optimization) fixes the Fourier
magnitude to the average spectrum of natural photos (:func:`natural_magnitude`) and optimizes
only the phase.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image

__all__ = [
    "ImageParam",
    "IMAGENET_COLOR_CORRELATION",
    "color_correlation_from_images",
    "pixel_image",
    "fft_image",
    "MacoParam",
    "maco_image",
    "natural_magnitude",
]

# Square root of the colour covariance of ImageNet photos (Lucid's `color_correlation_svd_sqrt`,
# the published statistic of the reference implementations).
IMAGENET_COLOR_CORRELATION = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)


def color_correlation_from_images(pixels: torch.Tensor) -> torch.Tensor:
    """The colour decorrelation matrix (square root of the colour covariance) of a dataset.

    ``pixels``: a batch ``(N, 3, H, W)`` in pixel space. Use the result as ``color_matrix=`` for
    inputs whose statistics differ from ImageNet's.
    """
    c = pixels.shape[1]
    flat = pixels.permute(1, 0, 2, 3).reshape(c, -1).double()
    flat = flat - flat.mean(dim=1, keepdim=True)
    cov = flat @ flat.T / max(1, flat.shape[1] - 1)
    u, s, _ = torch.linalg.svd(cov)
    return (u @ torch.diag(s.sqrt())).float()


def _freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class ImageParam:
    """Optimizable image batch.

    Parameters
    ----------
    shape : (B, C, H, W)
    fft : bool
        Parameterize in the Fourier basis, with the spectrum scaled by ``1 / f ** decay_power``
        (Olah et al. 2017), which favours natural-image statistics.
    decorrelate : bool
        Optimize in a decorrelated colour space (3-channel images only).
    sigmoid : bool
        Squash to [0, 1] with a sigmoid (otherwise the raw values are the pixels and a
        regularizer clamps them).
    sd : float
        Standard deviation of the random initialization.
    generator : torch.Generator, optional
        For repeatable initialization.
    color_matrix : tensor (3, 3), optional
        Colour correlation (default ImageNet's).
    mean : sequence of float
        The neutral pixel (the model's mean); pixel parameterizations start around it.

    Examples
    --------
    >>> p = ImageParam((1, 3, 32, 32), fft=True, decorrelate=True)
    >>> p.image().shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        fft: bool = True,
        decorrelate: bool = True,
        sigmoid: bool = True,
        sd: float = 0.01,
        decay_power: float = 1.0,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        color_matrix: torch.Tensor | None = None,
        mean: Sequence[float] | None = None,
    ) -> None:
        b, c, h, w = (int(s) for s in shape)
        self.shape = (b, c, h, w)
        self.fft = fft
        self.decorrelate = decorrelate and c == 3
        self.sigmoid = sigmoid
        self.device = torch.device(device)
        self._cm, self._cm_inv = _color_matrices(color_matrix, self.device)
        self._mean = torch.tensor(
            mean if mean is not None else (0.5,) * c, dtype=torch.float32, device=self.device
        ).view(1, c, 1, 1)
        if fft:
            scale = 1.0 / torch.clamp(_freqs(h, w), min=1.0 / max(h, w)) ** decay_power
            self._scale = (scale * (h * w) ** 0.5 / 4.0).to(self.device)[None, None, :, :, None]
            spec = torch.randn(b, c, h, w // 2 + 1, 2, generator=generator) * sd
            self.tensor = spec.to(self.device).requires_grad_(True)
        else:
            t = torch.randn(b, c, h, w, generator=generator) * sd
            self.tensor = t.to(self.device)
            if not sigmoid:
                self.tensor = self.tensor + self._mean
            self.tensor.requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        """The tensors an optimizer updates."""
        return [self.tensor]

    # --------------------------------------------------------------- forward map
    def _spatial(self) -> torch.Tensor:
        if not self.fft:
            return self.tensor
        _, _, h, w = self.shape
        spec = torch.view_as_complex((self.tensor * self._scale).contiguous())
        return torch.fft.irfft2(spec, s=(h, w), norm="ortho") / (h * w) ** 0.5

    def _color(self, t: torch.Tensor) -> torch.Tensor:
        if not self.decorrelate:
            return t
        return torch.einsum("bchw,dc->bdhw", t, self._cm)

    def image(self) -> torch.Tensor:
        """Pixel-space batch ``(B, C, H, W)`` (differentiable)."""
        t = self._color(self._spatial())
        if self.sigmoid:
            return torch.sigmoid(t)
        if self.decorrelate or self.fft:
            return t + self._mean
        return t

    # --------------------------------------------------------------- inverse map
    @torch.no_grad()
    def set_image(self, pixels: torch.Tensor) -> None:
        """Set the parameters so that :meth:`image` returns ``pixels`` (clamped to (0, 1) when the
        parameterization uses a sigmoid)."""
        pixels = pixels.to(self.device, torch.float32)
        if self.sigmoid:
            t = torch.logit(pixels.clamp(1e-4, 1 - 1e-4))
        elif self.decorrelate or self.fft:
            t = pixels - self._mean
        else:
            self.tensor.copy_(pixels)
            return
        if self.decorrelate:
            t = torch.einsum("bchw,dc->bdhw", t, self._cm_inv)
        if self.fft:
            _, _, h, w = self.shape
            spec = torch.fft.rfft2(t * (h * w) ** 0.5, norm="ortho")
            t = torch.view_as_real(spec) / self._scale
        self.tensor.copy_(t)


def pixel_image(shape: Sequence[int], **kwargs) -> ImageParam:
    """Raw pixels, clamped by the regularizers (Simonyan, Yosinski)."""
    return ImageParam(shape, fft=False, decorrelate=False, sigmoid=False, **kwargs)


def fft_image(shape: Sequence[int], **kwargs) -> ImageParam:
    """FFT + decorrelated colour + sigmoid (Olah et al. 2017 / Lucid)."""
    return ImageParam(shape, fft=True, decorrelate=True, sigmoid=True, **kwargs)


# ----------------------------------------------------------------------- MaCo (Fel et al. 2023)
def _unit_color_matrix(color_matrix: torch.Tensor | None) -> torch.Tensor:
    """The colour matrix as :class:`ImageParam` uses it (columns scaled to norm <= 1)."""
    cm = IMAGENET_COLOR_CORRELATION if color_matrix is None else color_matrix.float()
    return cm / cm.norm(dim=0).max()


def _color_matrices(
    color_matrix: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_unit_color_matrix` and its inverse on ``device`` (decorrelated colour <-> RGB)."""
    cm = _unit_color_matrix(color_matrix)
    return cm.to(device), torch.linalg.inv(cm).to(device)


def _square(img: Image.Image, side: int) -> torch.Tensor:
    """``img`` resized (short side) and centre-cropped to ``side``, pixel space ``(3, s, s)``."""
    from ...imaging import pil_to_tensor

    w, h = img.size
    k = side / min(w, h)
    img = img.convert("RGB").resize(
        (max(side, round(w * k)), max(side, round(h * k))), Image.Resampling.BICUBIC
    )
    w, h = img.size
    left, top = (w - side) // 2, (h - side) // 2
    return pil_to_tensor(img.crop((left, top, left + side, top + side)))[0]


_MAGNITUDES: dict[str, torch.Tensor] = {}
_MAGNITUDES_LOCK = threading.Lock()


def natural_magnitude(
    size: int | tuple[int, int],
    photos: str | Path | Iterable[Image.Image] | None = None,
    *,
    color_matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """The average Fourier magnitude of natural photos, ``(3, H, W // 2 + 1)`` (MaCo's prior).

    Each photo is resized and centre-cropped to ``size``, its mean is removed, its colours are
    decorrelated (the space :class:`MacoParam` works in) and the magnitude of its ``rfft2``
    (``norm="ortho"``) is averaged over the photos, per channel. Computed once per content: the
    key is a hash of the cropped photos' pixels, the size and the colour matrix (memory and the
    results cache), never a name.

    Parameters
    ----------
    size : int or (H, W)
        Side(s) of the images the magnitude is for.
    photos : folder, iterable of PIL images, optional
        The packaged sample photos (:func:`cnnvis_widgets.data.sample_images`) by default; a
        folder (every image file in it, :func:`cnnvis_widgets.data.image_folder`) or PIL images.
    color_matrix : tensor (3, 3), optional
        Colour correlation (default ImageNet's), as for :class:`ImageParam`.

    Examples
    --------
    >>> natural_magnitude(32).shape
    torch.Size([3, 32, 17])
    """
    from ... import cache, limits

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    limits.check_side(h), limits.check_side(w)
    if photos is None:
        from ...data import sample_images

        images: list[Image.Image] = list(sample_images().values())
    elif isinstance(photos, (str, Path)):
        from ...data import image_folder

        images = [img for _, img in image_folder(photos)]
    else:
        images = list(photos)
    if not images:
        raise ValueError("natural_magnitude needs at least one photo")
    side = max(h, w)
    crops = torch.stack([_square(img, side)[:, :h, :w] for img in images])
    cm = _unit_color_matrix(color_matrix)
    digest = hashlib.sha256(crops.numpy().tobytes())
    digest.update(cm.numpy().tobytes())
    key = cache.cache_key("maco_magnitude", photos=digest.hexdigest(), h=h, w=w)
    with _MAGNITUDES_LOCK:
        if key in _MAGNITUDES:
            return _MAGNITUDES[key].clone()

    def compute() -> dict[str, torch.Tensor]:
        t = crops - crops.mean(dim=(-2, -1), keepdim=True)
        t = torch.einsum("bchw,dc->bdhw", t, torch.linalg.inv(cm))
        return {"magnitude": torch.fft.rfft2(t, norm="ortho").abs().mean(0)}

    mag = cache.cached("maco_magnitude", key, compute)["magnitude"].float()
    with _MAGNITUDES_LOCK:
        _MAGNITUDES[key] = mag
    return mag.clone()


class MacoParam(ImageParam):
    """MaCo: the Fourier magnitude is fixed, only the phase is optimized (Fel et al. 2023).

    The image is ``sigmoid(logit(mean) + C x / (mean (1 - mean)))`` where ``x`` is
    ``irfft2(magnitude * exp(i * phase))`` per decorrelated colour channel and ``C`` recorrelates
    the colours (as :func:`fft_image`): near the neutral pixel the sigmoid is the identity, so a
    photo's statistics come through. ``magnitude`` (``(C, H, W // 2 + 1)``) defaults to
    :func:`natural_magnitude` of the packaged photos; :meth:`spectrum` is what ``irfft2`` gets,
    and whatever the steps do, its magnitude stays ``magnitude`` (only :attr:`phase` is in
    :meth:`parameters`). :meth:`set_image` keeps the magnitude and takes the phase of the pixels.
    The phase starts uniform in ``[-pi, pi)`` (``sd`` only says whether: 0 is zero phase).

    Examples
    --------
    >>> p = MacoParam((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    >>> p.image().shape, [tuple(t.shape) for t in p.parameters()]
    (torch.Size([1, 3, 32, 32]), [(1, 3, 32, 17)])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        magnitude: torch.Tensor | None = None,
        photos: str | Path | Iterable[Image.Image] | None = None,
        sd: float = 1.0,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        color_matrix: torch.Tensor | None = None,
        mean: Sequence[float] | None = None,
    ) -> None:
        b, c, h, w = (int(s) for s in shape)
        if c != 3:
            raise ValueError(f"MaCo works on colour images (3 channels), got {c}")
        self.shape = (b, c, h, w)
        self.fft, self.decorrelate, self.sigmoid = True, True, True
        self.device = torch.device(device)
        self._cm, self._cm_inv = _color_matrices(color_matrix, self.device)
        m = torch.tensor(mean if mean is not None else (0.5,) * c, dtype=torch.float32)
        m = m.clamp(0.05, 0.95).view(1, c, 1, 1).to(self.device)
        self._mean, self._slope = m, 1.0 / (m * (1 - m))
        if magnitude is None:
            magnitude = natural_magnitude((h, w), photos, color_matrix=color_matrix)
        want = (c, h, w // 2 + 1)
        if tuple(magnitude.shape) != want:
            raise ValueError(f"magnitude must have shape {want}, got {tuple(magnitude.shape)}")
        self.magnitude = magnitude.float().to(self.device)
        # the phase starts uniform in [-pi, pi) (any sd > 0: the builders' small sd of the other
        # parameterizations must not make a zero-phase blob); sd 0: zero phase
        u = torch.rand(b, c, h, w // 2 + 1, generator=generator) * 2 - 1
        scale = torch.pi if sd > 0 else 0.0
        self.phase = (u * scale).to(self.device).requires_grad_(True)
        self.tensor = self.phase

    def parameters(self) -> list[torch.Tensor]:
        """Only the phase: the magnitude is a constant."""
        return [self.phase]

    def spectrum(self) -> torch.Tensor:
        """``magnitude * exp(i * phase)``, complex ``(B, C, H, W // 2 + 1)`` (differentiable).

        The phase of the columns that ``rfft2`` holds once (0, and ``W / 2`` for an even
        ``W``) is made odd in the row index, so the spectrum is the ``rfft2`` of a real image
        and that image's magnitude is exactly ``magnitude`` (the self-conjugate bins get phase 0).
        """
        phase = self.phase
        _, _, h, w = self.shape
        edges = [0] + ([w // 2] if w % 2 == 0 and w > 1 else [])
        rows = (-torch.arange(h, device=phase.device)) % h
        e = phase[..., edges]
        odd = (e - e[..., rows, :]) / 2
        parts = [odd[..., :1], phase[..., 1 : w // 2 + (w % 2)]]
        if len(edges) > 1:
            parts.append(odd[..., 1:])
        return torch.polar(self.magnitude.expand_as(phase), torch.cat(parts, dim=-1))

    def field(self) -> torch.Tensor:
        """The real image before the colours are recorrelated, ``(B, C, H, W)``: its ``rfft2``
        (``norm="ortho"``) is :meth:`spectrum`, so its magnitude is :attr:`magnitude`."""
        _, _, h, w = self.shape
        return torch.fft.irfft2(self.spectrum(), s=(h, w), norm="ortho")

    def _spatial(self) -> torch.Tensor:
        return self.field()

    def image(self) -> torch.Tensor:
        t = torch.einsum("bchw,dc->bdhw", self._spatial(), self._cm)
        return torch.sigmoid(torch.logit(self._mean) + t * self._slope)

    @torch.no_grad()
    def set_image(self, pixels: torch.Tensor) -> None:
        """Set the phase to that of ``pixels`` (the magnitude stays the natural one, so the
        image becomes the closest picture with that magnitude, not ``pixels`` exactly)."""
        p = pixels.to(self.device, torch.float32).clamp(1e-4, 1 - 1e-4)
        t = (torch.logit(p) - torch.logit(self._mean)) / self._slope
        t = torch.einsum("bchw,dc->bdhw", t, self._cm_inv)
        self.phase.copy_(torch.angle(torch.fft.rfft2(t, norm="ortho")))


def maco_image(shape: Sequence[int], **kwargs) -> MacoParam:
    """MaCo's parameterization (:class:`MacoParam`): natural magnitude, optimized phase.

    Takes the builder arguments of :func:`fft_image` (``sd=``, ``generator=``, ``device=``,
    ``mean=``) plus ``magnitude=`` or ``photos=`` (a folder or PIL images; the packaged photos by
    default)."""
    return MacoParam(shape, **kwargs)
