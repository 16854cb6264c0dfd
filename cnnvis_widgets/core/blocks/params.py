"""Image parameterizations: pixel and FFT with decorrelated colour.

A parameterization owns the optimized tensors and maps them to a pixel-space batch
``(B, C, H, W)``. It can also be *set* from a pixel image (the inverse map), which is how
pixel-space regularizers (blur, clipping, decay) act on any parameterization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "ImageParam",
    "IMAGENET_COLOR_CORRELATION",
    "color_correlation_from_images",
    "pixel_image",
    "fft_image",
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
        cm = IMAGENET_COLOR_CORRELATION if color_matrix is None else color_matrix.float()
        cm = cm / cm.norm(dim=0).max()
        self._cm = cm.to(self.device)
        self._cm_inv = torch.linalg.inv(cm).to(self.device)
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
