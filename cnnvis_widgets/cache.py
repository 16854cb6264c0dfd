"""The results cache shared by every method and widget.

Files live under ``$CNNVIS_CACHE_DIR`` (default ``~/.cache/cnnvis_widgets``), in one folder per
kind of result, named by a stable hash of the content everything the result depends on (the
model's :meth:`~cnnvis_widgets.models.ModelHandle.fingerprint`, layer, dataset content,
settings...). Writes are atomic (temporary file + ``os.replace``), so a killed write never leaves
a corrupt file that is loaded later; tensors are read back with ``torch.load(weights_only=True)``.

Caching is an optimization, never a requirement: :func:`cached` (or :func:`entry_path`,
:func:`read_entry` and :func:`write_entry` where the computation is a generator) treat an
unreadable entry (truncated, garbled, foreign) as a miss, recompute and overwrite it, and an
unusable cache folder (not writable, a file in its place) as "no cache"; each warns once
(:class:`CacheWarning`, naming the file or folder).

Examples
--------
>>> key = cache_key("topk", model="efficientnet_lite0", layer="_blocks.4", dataset="samples")
>>> path = cache_path("topk", key, ".pt")                         # doctest: +SKIP
>>> save_tensors(path, {"values": torch.zeros(3)})               # doctest: +SKIP
>>> load_tensors(path)["values"].shape                           # doctest: +SKIP
torch.Size([3])
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = [
    "cache_dir",
    "cache_key",
    "cache_path",
    "atomic_write_bytes",
    "save_tensors",
    "load_tensors",
    "save_json",
    "load_json",
    "CacheWarning",
    "entry_path",
    "read_entry",
    "write_entry",
    "cached",
]

T = TypeVar("T")


class CacheWarning(UserWarning):
    """A cache entry could not be read (recomputed) or the cache folder is not usable."""


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, CacheWarning, stacklevel=3)


def cache_dir() -> Path:
    """The cache root (``$CNNVIS_CACHE_DIR`` or ``~/.cache/cnnvis_widgets``), created on demand."""
    root = os.environ.get("CNNVIS_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "cnnvis_widgets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(kind: str, **parts: Any) -> str:
    """A stable short hash of ``parts`` (JSON-able values), prefixed by ``kind``."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:16]}"


def cache_path(kind: str, key: str, suffix: str) -> Path:
    """Where the result ``key`` of ``kind`` is stored (the folder is created)."""
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}{suffix}"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tensors(path: str | Path, tensors: dict[str, Any]) -> Path:
    """Save a dict of tensors (and plain values) atomically with ``torch.save``."""
    import io

    buf = io.BytesIO()
    torch.save(tensors, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load what :func:`save_tensors` wrote (``weights_only=True``: no code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def save_json(path: str | Path, obj: Any) -> Path:
    """Save JSON atomically."""
    return atomic_write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


def load_json(path: str | Path) -> Any:
    """Load JSON written by :func:`save_json`."""
    return json.loads(Path(path).read_text())


def entry_path(kind: str, key: str, suffix: str) -> Path | None:
    """:func:`cache_path`, or None (and a warning, once per folder) when the cache folder cannot
    be used: the caller then runs uncached."""
    try:
        return cache_path(kind, key, suffix)
    except OSError as exc:
        root = os.environ.get("CNNVIS_CACHE_DIR") or str(Path.home() / ".cache" / "cnnvis_widgets")
        _warn_once(
            f"dir:{root}:{kind}",
            f"the results cache folder {str(Path(root) / kind)!r} cannot be used "
            f"({type(exc).__name__}: {exc}); running without a cache (set CNNVIS_CACHE_DIR to a "
            "writable folder to keep results)",
        )
        return None


def read_entry(path: Path | None, load: Callable[[Path], T]) -> T | None:
    """``load(path)``; None when there is no entry (``path`` None or a missing file) or when it
    cannot be read: a damaged entry is a miss (warned once per file; the caller recomputes and
    overwrites it)."""
    if path is None:
        return None
    try:
        return load(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any damage (EOFError, KeyError, pickle...): a miss
        _warn_once(
            f"entry:{path}:{type(exc).__name__}",
            f"cache entry {str(path)!r} is unreadable ({type(exc).__name__}: {exc}); "
            "recomputing it and overwriting the entry",
        )
        return None


def write_entry(path: Path | None, save: Callable[[Path], Any]) -> bool:
    """``save(path)``; False (and a warning, once per folder) when it cannot be written."""
    if path is None:
        return False
    try:
        save(path)
        return True
    except OSError as exc:
        _warn_once(
            f"write:{path.parent}",
            f"cannot write to the results cache {str(path.parent)!r} ({type(exc).__name__}: "
            f"{exc}); results are not kept",
        )
        return False


def cached(
    kind: str,
    key: str,
    compute: Callable[[], T],
    *,
    suffix: str = ".pt",
    load: Callable[[Path], T] | None = None,
    save: Callable[[Path, T], Any] | None = None,
    use: bool = True,
) -> T:
    """The cached result ``key`` of ``kind``, or ``compute()`` (then stored).

    ``load(path)`` / ``save(path, value)`` default to :func:`load_tensors` /
    :func:`save_tensors`. A damaged entry or an unusable folder never fails the call (see the
    module docstring); ``use=False`` computes without touching the cache.

    Examples
    --------
    >>> v = cached("demo", cache_key("demo", n=3), lambda: {"x": torch.zeros(3)})  # doctest: +SKIP
    """
    if not use:
        return compute()
    path = entry_path(kind, key, suffix)
    loader: Callable[[Path], Any] = load if load is not None else load_tensors
    hit = read_entry(path, loader)
    if hit is not None:
        return hit
    value = compute()
    saver: Callable[[Path, Any], Any] = save if save is not None else save_tensors
    write_entry(path, lambda p: saver(p, value))
    return value
