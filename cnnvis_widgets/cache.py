"""The results cache shared by every method and widget.

Files live under ``$CNNVIS_CACHE_DIR`` (default ``~/.cache/cnnvis_widgets``), in one folder per
kind of result, named by a stable hash of everything the result depends on (model name and
weights, layer, dataset, settings...). Writes are atomic (temporary file + ``os.replace``), so a
killed write never leaves a corrupt file that is loaded later; tensors are read back with
``torch.load(weights_only=True)``.

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
from pathlib import Path
from typing import Any

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
]


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
