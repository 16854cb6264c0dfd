"""`ModelHandle`: one object carrying a network, its input spec, class names and layer table.

Two spaces are used throughout the project and never mixed silently:

* *pixel space*: float RGB (or grey) in ``[0, 1]``, shape ``(B, C, H, W)``, what people see;
* *model-input space*: resized and normalized, ``(pixels - mean) / std``, what the network eats.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import operator
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn

from .convert import first_output

__all__ = ["LayerInfo", "ModelHandle", "check_input_size", "MIN_INPUT_SIZE", "MAX_INPUT_SIZE"]

_KIND_BY_TYPE: list[tuple[tuple[type, ...], str]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d), "conv"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d), "norm"),
    (
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.ELU,
            nn.GELU,
            nn.SiLU,
            nn.Sigmoid,
            nn.Tanh,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.PReLU,
        ),
        "act",
    ),
    (
        (
            nn.MaxPool2d,
            nn.AvgPool2d,
            nn.AdaptiveAvgPool2d,
            nn.AdaptiveMaxPool2d,
        ),
        "pool",
    ),
    ((nn.Linear,), "linear"),
    ((nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten, nn.ZeroPad2d, nn.ConstantPad2d), "aux"),
]


def _kind_of(module: nn.Module) -> str:
    for types, kind in _KIND_BY_TYPE:
        if isinstance(module, types):
            return kind
    if len(list(module.children())) > 0:
        return "block"
    return "other"


@dataclass(frozen=True)
class LayerInfo:
    """One named module of the network and the shape of its output.

    Attributes
    ----------
    name : str
        Dotted module name, as in ``model.named_modules()`` (``"_blocks.3._act1"``).
    kind : str
        ``"conv"``, ``"act"``, ``"pool"``, ``"norm"``, ``"block"``, ``"linear"``, ``"aux"`` or
        ``"other"``.
    type : str
        The module's class name.
    channels : int
        Output channels (features for a linear layer).
    height, width : int or None
        Output spatial size at the model's input size (None for non-spatial outputs).
    order : int
        Position in execution order of the discovery forward pass.
    """

    name: str
    kind: str
    type: str
    channels: int
    height: int | None
    width: int | None
    order: int

    @property
    def spatial(self) -> bool:
        """True when the output is a 4-D feature map ``(B, C, H, W)``."""
        return self.height is not None

    def to_dict(self) -> dict:
        """JSON-able description."""
        return asdict(self)

    def label(self) -> str:
        """Short human label, e.g. ``"_blocks.3 (block, 40 ch, 28x28)"``."""
        size = f", {self.height}x{self.width}" if self.spatial else ""
        return f"{self.name} ({self.kind}, {self.channels} ch{size})"


#: Input sizes a handle accepts (pixels per side): above 4096 one float32 RGB image alone is
#: 200 MB and a batch of feature maps no longer fits in a laptop's memory.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 1, 4096


def _index(what: str, value: object) -> int:
    """``value`` as an int (numpy integers are ints); ``TypeError`` for a bool or a non-integer."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {value!r}") from None


def _bounded_int(what: str, value: object, low: int, high: int) -> int:
    v = _index(what, value)
    if not low <= v <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {v}")
    return v


def check_input_size(size: object) -> tuple[int, int]:
    """``size`` (an int, or a pair ``(height, width)``) as a pair of ints in
    ``MIN_INPUT_SIZE..MAX_INPUT_SIZE``; ``TypeError``/``ValueError`` naming the range otherwise
    (numpy integers are integers; strings and floats are not)."""
    what = "input_size (pixels per side)"
    form = f"input_size must be an int or (height, width) in {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"
    if isinstance(size, (str, bytes)):
        raise TypeError(f"{form}, got {size!r}")
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"{form}, got {size!r}")
        pair = tuple(size)
    else:
        pair = (size, size)
    h, w = (
        _bounded_int(what, v, MIN_INPUT_SIZE, MAX_INPUT_SIZE)  # the message names the range
        for v in pair
    )
    return h, w


def _float_tuple(what: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be a sequence of numbers (one per channel), got {values!r}")
    try:
        return tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a sequence of numbers, got {values!r}") from None


class ModelHandle:
    """A network together with everything needed to feed it and look inside it.

    Build one with :func:`cnnvis_widgets.load_model`; the constructor is for wrapping a module
    whose input spec you know.

    Parameters
    ----------
    model : nn.Module
        The network; it is moved to ``device`` and otherwise left as it is: runs execute its
        eval-mode twin :attr:`net` (see :mod:`cnnvis_widgets.models._twin`), so its mode,
        BatchNorm statistics, ``requires_grad`` flags and hooks never change.
    name : str
        Name for records and caches (``"efficientnet_lite0"``, ``"torchvision:vgg16"``...).
    device : str or torch.device
        Where the model and every tensor of a run live.
    input_size : int or (int, int)
        The size the network was trained on (square if an int).
    mean, std : sequence of float
        Per-channel normalization, ``x = (pixels - mean) / std``.
    resize : int, optional
        Short side to resize photos to before the centre crop (default ``input_size / 0.875``).
    interpolation : str
        ``"bicubic"`` or ``"bilinear"``, used by :meth:`preprocess`.
    class_names : list of str, optional
        One name per output logit.
    weights : str
        What the weights are (``"default"``, ``"random(seed=0)"``, a path...), for records.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> h = ModelHandle(net, name="tiny", input_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> h.layer("0").channels
    4
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        device: str | torch.device = "cpu",
        input_size: int | tuple[int, int] = 224,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        resize: int | None = None,
        interpolation: str = "bicubic",
        class_names: Sequence[str] | None = None,
        weights: str = "default",
        in_channels: int | None = None,
    ) -> None:
        dtypes = sorted(
            {str(t.dtype) for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}
        )
        if dtypes and dtypes != ["torch.float32"]:
            raise TypeError(
                f"model {name!r} has {', '.join(d.replace('torch.', '') for d in dtypes)} "
                "weights; cnnvis_widgets runs float32 images through float32 weights: pass "
                "model.float() (or a float32 copy: copy.deepcopy(model).float())"
            )
        self.device = torch.device(device)
        #: The user's module, as given (moved to ``device``; never run, never put in eval mode).
        self.model = model.to(self.device)
        self.name = name
        self.weights = weights
        self.input_size: tuple[int, int] = check_input_size(input_size)
        mean_t, std_t = _float_tuple("mean", mean), _float_tuple("std", std)
        self.in_channels = (
            len(mean_t)
            if in_channels is None
            else _bounded_int("in_channels", in_channels, 1, 1024)
        )
        if len(mean_t) != self.in_channels or len(std_t) != self.in_channels:
            raise ValueError(
                f"mean/std must have one value per input channel ({self.in_channels}), "
                f"got mean={mean_t} std={std_t}"
            )
        if not all(math.isfinite(m) for m in mean_t):
            raise ValueError(f"mean must be finite numbers, got {mean_t}")
        if not all(math.isfinite(v) and v > 0 for v in std_t):
            raise ValueError(
                f"std must be finite numbers > 0 (the input is divided by it), got {std_t}"
            )
        self.mean = mean_t
        self.std = std_t
        self.resize = int(resize) if resize else round(max(self.input_size) / 0.875)
        self.interpolation = interpolation
        self.class_names: list[str] | None = list(class_names) if class_names else None
        # guards the twin's rebuild (runs never change shared state, so they need no lock)
        self.lock = threading.RLock()
        self._twin: nn.Module | None = None
        self._twin_kind = "shallow"
        self._twin_sig: tuple = ()
        self._twin_types: list[tuple[str, type]] = []
        self._modules: dict[str, nn.Module] = {}
        # thread id -> stack of pins [twin, its modules, time checked, ttl] (see pinned())
        self._pins: dict[int, list[list[Any]]] = {}
        self._refresh_twin()
        self.layers: dict[str, LayerInfo] = self._discover_layers()
        self.num_outputs = self._num_outputs
        if self.class_names is not None and len(self.class_names) != self.num_outputs:
            self.class_names = None

    # ----------------------------------------------------------------------------- layers
    def _discover_layers(self) -> dict[str, LayerInfo]:
        found: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
        handles = []

        def make_hook(layer_name: str):
            def hook(module: nn.Module, inputs: object, output: object) -> None:
                if layer_name not in found and isinstance(output, torch.Tensor):
                    found[layer_name] = (module, tuple(output.shape))

            return hook

        net = self.net
        for name, module in self._modules.items():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        x = torch.zeros(1, self.in_channels, *self.input_size, device=self.device)
        try:
            with torch.no_grad():
                out = net(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise RuntimeError(
                f"model {self.name!r} failed on a dummy input of shape {tuple(x.shape)}: {exc}. "
                "Pass input_size=/mean=/std= to load_model if it expects another input."
            ) from exc
        finally:
            for hook in handles:
                hook.remove()
        out = first_output(out)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model {self.name!r} must return a tensor, got {type(out).__name__}")
        self._num_outputs = int(out.shape[1]) if out.dim() >= 2 else int(out.numel())
        layers: dict[str, LayerInfo] = {}
        for order, (name, (module, shape)) in enumerate(found.items()):
            if len(shape) == 4:
                ch, h, w = shape[1], shape[2], shape[3]
            elif len(shape) == 2:
                ch, h, w = shape[1], None, None
            else:
                continue
            layers[name] = LayerInfo(
                name=name,
                kind=_kind_of(module),
                type=type(module).__name__,
                channels=int(ch),
                height=None if h is None else int(h),
                width=None if w is None else int(w),
                order=order,
            )
        return layers

    def conv_layers(self) -> list[LayerInfo]:
        """Layers with spatial output that are worth visualizing (conv, activation, pool, block).

        Normalization, padding and dropout modules are left out: they repeat their neighbour.
        """
        return [
            li
            for li in self.layers.values()
            if li.spatial and li.kind in ("conv", "act", "pool", "block")
        ]

    def layer(self, name: str) -> LayerInfo:
        """The :class:`LayerInfo` of ``name``; ``KeyError`` listing the nearest valid names."""
        try:
            return self.layers[name]
        except KeyError:
            raise KeyError(self._unknown_layer_message(name)) from None

    def _unknown_layer_message(self, name: str) -> str:
        names = list(self.layers)
        near = difflib.get_close_matches(str(name), names, n=5, cutoff=0.3)
        if not near:
            near = [li.name for li in self.conv_layers()][:5] or names[:5]
        return (
            f"unknown layer {name!r} in model {self.name!r}; nearest valid names: "
            f"{', '.join(near)} ({len(names)} layers; see handle.layers)"
        )

    def module(self, name: str) -> nn.Module:
        """The twin's ``nn.Module`` called ``name`` (``KeyError`` with the nearest names).

        It is the module :attr:`net` runs: hooks registered on it see every run and never touch
        the user's module of that name."""
        self.layer(name)
        return self._current()[1][name]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits for a model-input batch ``x``: :attr:`net` run on it, through
        :func:`first_output` (gradients flow; wrap in ``torch.no_grad()`` when none are needed).
        """
        return first_output(self.net(x))

    # ----------------------------------------------------------------------------- the twin
    @property
    def net(self) -> nn.Module:
        """The module every run executes: the eval-mode twin of :attr:`model`.

        It shares the user's weights and buffers (an optimizer step or ``load_state_dict`` on
        :attr:`model` is seen at once) through aliases that do not require grad, and has its own
        mode (eval), its own hook dicts and its own submodule dicts; it is rebuilt when the
        user's tree changed (a submodule, parameter or hook replaced, added or removed; the
        model moved). See :mod:`cnnvis_widgets.models._twin` for the fallbacks.
        """
        return self._current()[0]

    def _current(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        """The twin and its modules by name: the innermost pin of this thread while it is
        trusted, else checked (and rebuilt when the user's tree changed)."""
        pins = self._pins.get(threading.get_ident())
        if pins:
            top = pins[-1]
            if top[3] is None or time.monotonic() - top[2] < top[3]:
                return top[0], top[1]
            net = self._refresh_twin()
            top[0], top[1], top[2] = net, self._modules, time.monotonic()
            return net, top[1]
        net = self._refresh_twin()
        return net, self._modules

    @contextlib.contextmanager
    def pinned(self, ttl: float | None = None) -> Iterator[nn.Module]:
        """Inside the block, :attr:`net` and :meth:`module` give one twin without checking the
        user's tree at every access (the check costs a walk over every module), in the thread
        that entered the block.

        ``ttl=None`` trusts the twin for the whole block (a capture: hooks and forward pass
        must see the same modules); a number re-checks at most every ``ttl`` seconds (a run:
        a change of your model during a long run is seen within ``ttl`` seconds, a change
        between two runs at once). The pin belongs to the thread that entered the block and is
        removed on exit, also when the block is closed from another thread (a generator
        finalized elsewhere)."""
        owner = threading.get_ident()
        net, modules = self._current()
        entry: list[Any] = [net, modules, time.monotonic(), ttl]
        self._pins.setdefault(owner, []).append(entry)
        try:
            yield net
        finally:
            stack = self._pins.get(owner, [])
            for k in range(len(stack) - 1, -1, -1):
                if stack[k] is entry:
                    del stack[k]
                    break
            if not stack:
                self._pins.pop(owner, None)

    def refresh(self) -> None:
        """Rebuild :attr:`net` now (after changing a plain attribute of one of your modules,
        which the automatic check does not see)."""
        with self.lock:
            self._twin_sig = ("stale",)
        self._refresh_twin()

    def _refresh_twin(self) -> nn.Module:
        from ._twin import build_twin, members, signature

        sig = signature(self.model, self._twin_kind)
        if self._twin_kind == "deepcopy":  # the copy does not share storage: follow the content
            sig = sig + (self._content_fingerprint(None),)
        twin = self._twin
        if twin is not None and sig == self._twin_sig:
            return twin
        with self.lock:
            if self._twin is not None and sig == self._twin_sig:
                return self._twin
            twin, kind = build_twin(
                self.model, getattr(self, "name", "model"), quiet=self._twin is not None
            )
            self._twin_kind = kind
            sig = signature(self.model, kind)
            if kind == "deepcopy":
                sig = sig + (self._content_fingerprint(None),)
            types = [(n, type(m)) for n, m in self.model.named_modules()]
            self._modules = dict(twin.named_modules())
            rediscover = self._twin is not None and types != self._twin_types
            self._twin, self._twin_sig, self._twin_types = twin, sig, types
            self._twin_members = members(self.model)  # ids in the signature stay unique
            if rediscover and hasattr(self, "layers"):  # a submodule was replaced
                self.layers = self._discover_layers()
                self.num_outputs = self._num_outputs
            return twin

    def fingerprint(self) -> str:
        """A content hash of the network: every byte of every parameter and buffer, their
        names, shapes and dtypes, the module types, and the input spec (size, channels, mean,
        std, resize, interpolation).

        Every results cache keys the model on it: two checkpoints of one architecture differ,
        and the same handle after a weight change (optimizer step, ``load_state_dict``, an
        in-place edit) gets a new one. Repeat calls on unchanged weights reuse memoized
        per-tensor digests (see :mod:`cnnvis_widgets.models._fingerprint`).
        """
        from ._fingerprint import named_tensors

        self._refresh_twin()
        sig = self._twin_sig
        cached = getattr(self, "_fp_structure", None)
        if cached is None or cached[0] is not sig:
            cached = (sig, named_tensors(self.model))
            self._fp_structure = cached
        return self._content_fingerprint(cached[1])

    def _content_fingerprint(self, structure: tuple | None) -> str:
        from ._fingerprint import model_fingerprint_of

        spec = (
            "cnnvis-model-1",
            tuple(self.input_size),
            self.in_channels,
            tuple(self.mean),
            tuple(self.std),
            getattr(self, "resize", None),
            getattr(self, "interpolation", None),
        )
        return model_fingerprint_of(self.model, spec, structure)

    def check_unit(self, layer: str, unit: int) -> None:
        """Raise ``IndexError`` naming the valid range when ``unit`` is not a channel of it
        (``TypeError`` when it is not an integer; numpy integers are integers)."""
        n = self.layer(layer).channels
        if not 0 <= _index("unit", unit) < n:
            raise IndexError(f"unit {unit} is out of range for layer {layer!r}: valid 0..{n - 1}")

    def check_class(self, index: int) -> None:
        """Raise ``IndexError`` when ``index`` is not a valid output logit (``TypeError`` when
        it is not an integer; numpy integers and integer tensors of one element are)."""
        if not 0 <= _index("class index", index) < self.num_outputs:
            raise IndexError(f"class {index} is out of range: valid 0..{self.num_outputs - 1}")

    def class_name(self, index: int) -> str:
        """Human name of output ``index`` (``"class 17"`` when the model has no names)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"

    # ----------------------------------------------------------------------------- spaces
    def _stats(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, device=ref.device, dtype=ref.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=ref.device, dtype=ref.dtype).view(1, -1, 1, 1)
        return mean, std

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel space ``[0, 1]`` -> model-input space."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model-input space -> pixel space (not clamped)."""
        mean, std = self._stats(x)
        return x * std + mean

    def to_pixels(self, image: Image.Image | torch.Tensor, size: int | None = None) -> torch.Tensor:
        """A photo -> pixel-space batch ``(1, C, H, W)`` on the device, resized and centre-cropped.

        ``size`` overrides the crop size (the resize keeps the model's crop ratio).
        Tensors are taken as pixel space already and only moved/batched.
        """
        if isinstance(image, torch.Tensor):
            t = image if image.dim() == 4 else image.unsqueeze(0)
            return t.to(self.device, torch.float32)
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        crop = self.input_size if size is None else (int(size), int(size))
        resize = (
            self.resize if size is None else round(int(size) * self.resize / max(self.input_size))
        )
        mode = "L" if self.in_channels == 1 else "RGB"
        image = image.convert(mode)
        interp = (
            InterpolationMode.BICUBIC
            if self.interpolation == "bicubic"
            else InterpolationMode.BILINEAR
        )
        image = TF.resize(image, resize, interpolation=interp)
        image = TF.center_crop(image, list(crop))
        t = TF.to_tensor(image).unsqueeze(0)
        return t.to(self.device)

    def preprocess(self, image: Image.Image, size: int | None = None) -> torch.Tensor:
        """A PIL photo -> model-input batch ``(1, C, H, W)`` on the device."""
        return self.normalize(self.to_pixels(image, size))

    def deprocess(self, x: torch.Tensor) -> Image.Image | list[Image.Image]:
        """Model-input tensor -> PIL image (a list of images for a batch of more than one)."""
        from ..imaging import to_pil

        pixels = self.denormalize(x.detach())
        if pixels.dim() == 4 and pixels.shape[0] > 1:
            return [to_pil(p) for p in pixels]
        return to_pil(pixels)

    # ----------------------------------------------------------------------------- runs
    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Deprecated no-op, kept so that old code runs: runs never change ``requires_grad``
        any more (they execute :attr:`net`, whose weights never require grad)."""
        yield

    def describe(self) -> dict:
        """JSON-able summary for records."""
        return {
            "name": self.name,
            "weights": self.weights,
            "device": str(self.device),
            "input_size": list(self.input_size),
            "in_channels": self.in_channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "num_outputs": self.num_outputs,
        }

    def __repr__(self) -> str:
        return (
            f"ModelHandle({self.name!r}, weights={self.weights!r}, device={str(self.device)!r}, "
            f"input={self.in_channels}x{self.input_size[0]}x{self.input_size[1]}, "
            f"{len(self.layers)} layers)"
        )
