"""A tiny built atlas directory written by hand per the format "cnnvis-atlas/1" (ATLAS-FORMAT.md),
for the tests of the static site (``from tests.site_helpers import write_tiny_atlas``).

Two layers: ``conv.1`` (3 of 4 units; dissection on, unit 0 labelled and ablated, unit 2 labelled
(no ``interpretable`` flag: the first form of the format), unit 1 dissected below the IoU
threshold, one class weight null; diversity, top-3 with projections, an inversion; unit 3 listed
with nothing computed, as a build limited to some units writes it) and ``head/2`` (2 of 2
units; nothing but AM images and top-2 patches without projections, no dissection, no ablation,
no inversion). Each PNG is 8x8 of one colour, distinct per file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import Image

#: the label of unit 0 of conv.1 (a test may pass a hostile one: ``"<script>..."``)
LABEL = "stripes"
#: unit 1 of conv.1: dissected, its best concept below the IoU threshold (0.04): no label
WEAK = {"label": "grass", "category": "texture", "iou": 0.01, "interpretable": False}


def _png(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((seed * 67) % 256, (seed * 131 + 40) % 256, (seed * 29 + 90) % 256)
    Image.new("RGB", (8, 8), colour).save(path)
    return path.name


def _folder(position: int, name: str) -> str:
    return f"layers/{position:03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"


def _unit(
    folder: Path,
    unit: int,
    seed: int,
    top: int,
    projections: bool,
    diversity: int = 0,
    dissection: dict | None = None,
    classes: list | None = None,
    ablation: dict | None = None,
) -> dict[str, Any]:
    _png(folder / f"am/{unit}.png", seed)
    for i in range(diversity):
        _png(folder / f"am/{unit}_d{i}.png", seed + 100 + i)
    patches = []
    for i in range(top):
        _png(folder / f"top/{unit}_{i}.png", seed + 200 + i)
        proj = None
        if projections:
            _png(folder / f"proj/{unit}_{i}.png", seed + 300 + i)
            proj = f"proj/{unit}_{i}.png"
        patches.append(
            {
                "image": f"top/{unit}_{i}.png",
                "projection": proj,
                "score": round(3.0 - 0.5 * i, 3),
                "source": f"photo_{unit}_{i}.jpg",
            }
        )
    return {
        "unit": unit,
        "am": f"am/{unit}.png",
        "diversity": [f"am/{unit}_d{i}.png" for i in range(diversity)],
        "max_activation": 1.5 + unit,
        "top": patches,
        "dissection": dissection,
        "classes": classes or [],
        "ablation": ablation,
    }


def write_tiny_atlas(root: Path, label: str = LABEL, layer_name: str = "conv.1") -> Path:
    """Write the tiny atlas into ``root`` (created) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    specs = [
        (layer_name, [4, 8, 8], True),
        ("head/2", [2, 4, 4], False),
    ]
    layers = []
    for position, (name, shape, rich) in enumerate(specs):
        rel = _folder(position, name)
        folder = root / rel
        if rich:
            units = [
                _unit(
                    folder,
                    0,
                    1,
                    top=3,
                    projections=True,
                    diversity=2,
                    dissection={
                        "label": label,
                        "category": "texture",
                        "iou": 0.21,
                        "interpretable": True,
                    },
                    classes=[["tabby cat", 0.8], ["zebra", 0.5]],
                    ablation={"accuracy_drop": 0.04, "classes": [["zebra", 0.12]]},
                ),
                _unit(
                    folder,
                    1,
                    2,
                    top=3,
                    projections=True,
                    dissection=WEAK,
                    classes=[["goldfish", 0.3], ["zebra", None]],
                ),
                _unit(
                    folder,
                    2,
                    3,
                    top=3,
                    projections=True,
                    dissection={"label": "sky", "category": "object", "iou": 0.09},
                    classes=[["tabby cat", 0.2]],
                ),
            ]
            units.append(
                {"unit": 3, "am": None, "diversity": [], "max_activation": None, "top": [],
                 "dissection": None, "classes": [], "ablation": None}
            )  # fmt: skip
            _png(folder / "inversion.png", 50)
            inversion = {"image": "inversion.png", "error": 0.42}
            interpretable = 2 / 3
            threshold: float | None = 0.04
        else:
            units = [_unit(folder, u, 10 + u, top=2, projections=False) for u in range(2)]
            inversion = None
            interpretable = None
            threshold = None
        layer = {
            "name": name,
            "channels": shape[0],
            "interpretable": interpretable,
            "iou_threshold": threshold,
            "inversion": inversion,
            "units": units,
        }
        (folder / "layer.json").write_text(json.dumps(layer, indent=1), encoding="utf-8")
        layers.append(
            {
                "name": name,
                "dir": rel,
                "channels": shape[0],
                "shape": shape,
                "complete": {
                    "am": True,
                    "top": True,
                    "dissection": rich,
                    "classes": rich,
                    "inversion": rich,
                },
            }
        )
    manifest = {
        "format": "cnnvis-atlas/1",
        "model": {
            "name": "tiny",
            "fingerprint": "abc123",
            "input_size": [16, 16],
            "num_classes": 5,
        },
        "settings": {"am": {"preset": "lucid", "steps": 8, "size": 8, "seed": 0}, "top_k": 3},
        "dataset": {"name": "tiny-photos", "images": 6, "fingerprint": "def456"},
        "layers": layers,
        "created": "2026-12-01T12:00:00Z",
        "version": "0.1.0",
    }
    (root / "atlas.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root
