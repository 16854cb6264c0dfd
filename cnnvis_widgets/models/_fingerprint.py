"""A content fingerprint of a network: what every results cache keys the model on.

Every byte of every parameter and buffer is hashed (BLAKE2b), together with the names, shapes and
dtypes, the module types and whatever the caller adds (the input spec). Hashing all bytes costs
about as much as reading them once through Python (some 80 ms for EfficientNet-Lite0 on one CPU
thread), so each tensor's digest is memoized, keyed by ``(id, _version, data_ptr, shape, dtype,
device)`` *and* a probe: the float64 L2 norm of every floating tensor (all of them in one
``torch._foreach_norm`` call, one transfer; integer tensors are summed). The version counter
catches ordinary in-place changes (optimizer steps, ``load_state_dict``, ``with torch.no_grad():
w.add_(...)``); the probe catches the writes that bypass it (fused optimizers such as
``Adam(fused=True)`` on the CPU, edits through ``.data``). A repeat call on unchanged weights
costs the probe (a few ms for EfficientNet-Lite0 on one CPU thread), not a rehash.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["tensor_digest", "named_tensors", "model_fingerprint_of"]

_lock = threading.Lock()
# id(tensor) -> (key, probe bytes, digest, weak reference: the same object, not a reused id)
_memo: dict[int, tuple[tuple[Any, ...], bytes, str, weakref.ref]] = {}


def tensor_digest(t: torch.Tensor) -> str:
    """BLAKE2b (16 bytes) of every byte of ``t`` (on the CPU), with its shape and dtype."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.detach().reshape(-1)
    if flat.numel():
        b = flat.contiguous().view(torch.uint8) if flat.dtype != torch.bool else flat.byte()
        h.update(b.cpu().numpy().tobytes())
    return h.hexdigest()


def _probe_rows(tensors: list[torch.Tensor]) -> list[bytes]:
    """A content probe per tensor: its L2 norm (floating tensors, one batched
    ``_foreach_norm`` per device and dtype) or its sum (others), as bytes."""
    rows: list[bytes] = [b""] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    others: list[int] = []
    for i, t in enumerate(tensors):
        if not t.numel():
            continue
        if t.is_floating_point():
            groups.setdefault((t.device, t.dtype), []).append(i)
        else:
            others.append(i)
    for idx in groups.values():
        norms = torch._foreach_norm([tensors[i] for i in idx], 2)
        raw = torch.stack(list(norms)).double().cpu().numpy()
        for j, i in enumerate(idx):
            rows[i] = raw[j].tobytes()
    if others:  # integer and complex tensors (step counters...): few, small; one transfer
        parts = [tensors[i].detach().reshape(-1).to("cpu", torch.complex128) for i in others]
        sums = torch.stack([c.sum() for c in parts])
        for i, v in zip(others, sums.tolist()):
            rows[i] = repr(v).encode()
    return rows


def named_tensors(model: nn.Module) -> tuple[list[tuple[str, torch.Tensor]], str]:
    """``model``'s parameters and buffers by name, and the text of its module types."""
    named: list[tuple[str, torch.Tensor]] = []
    for n, p in model.named_parameters(remove_duplicate=False):
        named.append((f"p:{n}", p))
    for n, b in model.named_buffers(remove_duplicate=False):
        if b is not None:
            named.append((f"b:{n}", b))
    types = "".join(
        f"{n}:{type(m).__module__}.{type(m).__qualname__}\n"
        for n, m in model.named_modules(remove_duplicate=False)
    )
    return named, types


def model_fingerprint_of(
    model: nn.Module,
    extra: Iterable[Any] = (),
    structure: tuple[list[tuple[str, torch.Tensor]], str] | None = None,
) -> str:
    """Hex digest of ``model``'s content (see the module docstring) and of ``extra``.

    ``structure`` is :func:`named_tensors` of ``model`` when the caller already has it."""
    named, types = structure if structure is not None else named_tensors(model)
    tensors = [t for _, t in named]
    with torch.no_grad():
        probes = _probe_rows(tensors)
    h = hashlib.blake2b(digest_size=16)
    for item in extra:
        h.update(repr(item).encode())
        h.update(b"\0")
    h.update(types.encode())
    with _lock:
        alive: set[int] = set()
        for (name, t), probe in zip(named, probes):
            key = (t._version, t.data_ptr(), tuple(t.shape), t.dtype, t.device)
            got = _memo.get(id(t))
            if got is not None and got[3]() is t and got[0] == key and got[1] == probe:
                digest = got[2]
            else:
                digest = tensor_digest(t)
                _memo[id(t)] = (key, probe, digest, weakref.ref(t))
            alive.add(id(t))
            h.update(f"{name}={digest}\n".encode())
        if len(_memo) > 4 * max(len(alive), 256):  # forget tensors of dropped models
            for k in [k for k, v in _memo.items() if v[3]() is None]:
                del _memo[k]
    return h.hexdigest()
