"""Read (and write) probe sets in the Broden directory format of Network Dissection.

A user with the Broden data set (Bau et al. 2017) or a Broden-style subset points at the folder
and gets the real thing; :func:`export_broden` writes the generated probe set in the same format
(so other tools, e.g. the original NetDissect, can read it).

The format (``broden1_224/``)::

    index.csv       image,split,ih,iw,sh,sw,<one column per category>
                    a category cell holds ';'-separated entries: PNG mask files (relative to
                    images/) or integers (image-level labels, e.g. scene)
    category.csv    name,first,last,count,frequency
    label.csv       number,name,category,frequency,coverage,syns
                    category like "color(289);object(3)": the categories a label occurs in
    c_<cat>.csv     code,number,name,frequency,coverage (category-local codes)
    images/         the photos and the masks; mask pixel label = R + 256 * G

A label's category is its *primary* one, the category where it covers the most pixels (as in
NetDissect). Images are resized to ``size`` (bilinear), masks to ``mask_size`` (nearest).

Examples
--------
>>> probe = broden_probe("~/data/broden1_224", max_images=2000)    # doctest: +SKIP
>>> result = dissect(handle, "_blocks.8", probe)                    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import limits
from .concepts import Concept, ProbeBase, ProbeBatch

__all__ = ["BrodenProbe", "broden_probe", "export_broden", "decode_mask", "encode_mask"]

_META = ("image", "split", "ih", "iw", "sh", "sw")
_CATEGORY_FIELD = re.compile(r"^([^(]*)\(([^)]*)\)$")
_SCALED = re.compile(r"^(.+)@\d+px$")
#: The largest label number a Broden mask PNG can hold (``R + 256 * G``).
MAX_LABEL = 65535


def decode_mask(path: str | Path) -> np.ndarray:
    """A Broden mask PNG -> ``(H, W)`` int64 label numbers (``R + 256 * G``)."""
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return arr[:, :, 0] + 256 * arr[:, :, 1]


def encode_mask(labels: np.ndarray) -> Image.Image:
    """``(H, W)`` label numbers (< 65536) -> an RGB PNG image with ``R + 256 * G = label``."""
    lab = np.asarray(labels, dtype=np.int64)
    if lab.min(initial=0) < 0 or lab.max(initial=0) >= 65536:
        raise ValueError("Broden mask labels must be between 0 and 65535")
    rgb = np.zeros((*lab.shape, 3), dtype=np.uint8)
    rgb[:, :, 0] = lab % 256
    rgb[:, :, 1] = lab // 256
    return Image.fromarray(rgb, mode="RGB")


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: a Broden folder has index.csv, category.csv, label.csv, "
            "c_<category>.csv and images/"
        )
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


class BrodenProbe(ProbeBase):
    """A Broden-format folder as a probe set for :func:`cnnvis_widgets.core.dissection.dissect`.

    Parameters
    ----------
    root : str or Path
        The folder holding ``index.csv`` and ``images/``.
    size : int, optional
        Side the images are resized to (default: the ``ih`` of the first image).
    mask_size : int, optional
        Side the masks are resized to (default: the ``sh`` of the first image).
    categories : list of str, optional
        Keep only these categories (default: all of ``category.csv``).
    max_images : int, optional
        Use only the first images.
    split : str, optional
        Keep only rows of this split (``"train"``, ``"val"``).

    Attributes
    ----------
    labels : list of Concept
        Dense: ``labels[n]`` is label number ``n`` (with its primary category).
    categories : list of str
    """

    def __init__(
        self,
        root: str | Path,
        *,
        size: int | None = None,
        mask_size: int | None = None,
        categories: Sequence[str] | None = None,
        max_images: int | None = None,
        split: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"Broden folder not found: {self.root}")
        self._images_dir = (self.root / "images").resolve()
        rows = _read_csv(self.root / "index.csv")
        cat_rows = _read_csv(self.root / "category.csv")
        all_cats = [r["name"] for r in cat_rows]
        if categories is not None:
            unknown = [c for c in categories if c not in all_cats]
            if unknown:
                raise ValueError(
                    f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                    f"{self.root / 'category.csv'} has {', '.join(all_cats)}"
                )
            all_cats = [c for c in all_cats if c in categories]
        self.categories = all_cats
        if split is not None:
            rows = [r for r in rows if r.get("split") == split]
        if max_images is not None:
            max_images = limits.check_int(
                max_images, "max_images", minimum=1, limit="MAX_DATASET_IMAGES"
            )
        self._rows = [self._decode_row(r, line) for line, r in enumerate(rows, start=2)]
        self._rows = [r for r in self._rows if any(r["cats"][c] for c in self.categories)]
        if max_images is not None:
            self._rows = self._rows[:max_images]
        if not self._rows:
            raise ValueError(f"no image of {self.root / 'index.csv'} has annotations to use")
        self.labels = self._read_labels()
        first = self._rows[0]
        self.size = limits.check_side(size or first["ih"] or 224, "size")
        self.mask_size = limits.check_int(
            mask_size or first["sh"] or self.size, "mask_size", minimum=1, limit="MAX_IMAGE_SIDE"
        )
        self.mask_categories: list[int] = []
        self._content = self._content_hash()

    # ----------------------------------------------------------------------------- reading
    def _check_relative(self, name: str, line: int) -> str:
        """``name`` when it is a path inside ``images/`` (no absolute path, no ``..``)."""
        p = PurePath(name)
        if (
            not name
            or p.is_absolute()
            or p.drive
            or ".." in p.parts
            or name.startswith(("/", "\\"))
        ):
            raise ValueError(
                f"{self.root / 'index.csv'} line {line}: the path {name!r} leaves the dataset "
                f"folder; every path must be relative to {self.root / 'images'} and stay inside it"
            )
        return name

    def _inside(self, name: str) -> Path:
        """``images/name``, resolved, refusing anything outside ``images/`` (links too)."""
        path = (self._images_dir / name).resolve()
        if not path.is_relative_to(self._images_dir):
            raise ValueError(
                f"the path {name!r} of {self.root / 'index.csv'} resolves to {path}, outside the "
                f"dataset folder {self._images_dir}"
            )
        return path

    def _decode_row(self, row: dict[str, str], line: int = 0) -> dict[str, Any]:
        image = self._check_relative((row.get("image") or "").strip(), line)
        out: dict[str, Any] = {"image": image, "split": row.get("split", "")}
        for key in ("ih", "iw", "sh", "sw"):
            v = _num(row.get(key), 0)
            out[key] = int(v) if 0 <= v <= limits.MAX_IMAGE_SIDE else 0  # a hint only
        cats: dict[str, list[int | str]] = {}
        for cat in self.categories:
            items: list[int | str] = []
            for entry in (row.get(cat) or "").split(";"):
                entry = entry.strip()
                if not entry:
                    continue
                if entry.isdigit():
                    n = int(entry)
                    if n > MAX_LABEL:
                        raise ValueError(
                            f"{self.root / 'index.csv'} line {line}, column {cat!r}: label "
                            f"number {entry[:20]}{'...' if len(entry) > 20 else ''} is above "
                            f"{MAX_LABEL}, the largest a Broden label number can be"
                        )
                    items.append(n)
                else:
                    items.append(self._check_relative(entry, line))
            cats[cat] = items
        out["cats"] = cats
        return out

    def _content_hash(self) -> str:
        """SHA-256 of the table files (index, category, label, c_<category>.csv) that decide
        the images, masks and label names: a changed CSV is a different probe set."""
        h = hashlib.sha256()
        names = ["index.csv", "category.csv", "label.csv"]
        names += [f"c_{cat}.csv" for cat in self.categories]
        for name in names:
            path = self.root / name
            h.update(name.encode() + b"\0")
            h.update(path.read_bytes() if path.is_file() else b"(missing)")
            h.update(b"\0")
        return h.hexdigest()

    def _read_labels(self) -> list[Concept]:
        label_rows = _read_csv(self.root / "label.csv")
        names: dict[int, str] = {}
        cover: dict[int, dict[str, float]] = {}

        def number(r: dict[str, str], where: str) -> int:
            v = _num(r.get("number"), -1)
            if v > MAX_LABEL:
                raise ValueError(
                    f"{self.root / where}: label number {r.get('number', '')[:20]} is above "
                    f"{MAX_LABEL}, the largest a Broden label number can be"
                )
            return int(v)

        for r in label_rows:
            n = number(r, "label.csv")
            if n < 0:
                continue
            names[n] = r.get("name", "") or f"label {n}"
            for part in (r.get("category") or "").split(";"):
                m = _CATEGORY_FIELD.match(part.strip())
                if m and m.group(1) in self.categories:
                    cover.setdefault(n, {})[m.group(1)] = _num(m.group(2))
        # coverage within each category (c_<cat>.csv) decides the primary category
        for cat in self.categories:
            path = self.root / f"c_{cat}.csv"
            if not path.is_file():
                continue
            for r in _read_csv(path):
                n = number(r, f"c_{cat}.csv")
                if n > 0:
                    cover.setdefault(n, {})[cat] = _num(r.get("coverage"), 0.0) + 1e-12
        # labels used in the index but absent from label.csv still get a slot, up to the
        # largest number of the label table: one stray large number cannot allocate gigabytes
        table = max([0, *names, *cover])
        top = table
        for row in self._rows:
            for cat, items in row["cats"].items():
                for i in items:
                    if isinstance(i, int) and i > table:
                        raise ValueError(
                            f"{self.root / 'index.csv'}: image {row['image']!r} has label {i} "
                            f"in column {cat!r}, but the label table (label.csv, c_*.csv) "
                            f"goes up to {table}"
                        )
        labels = [Concept(0, "-", "")]
        order = {c: i for i, c in enumerate(self.categories)}
        known = set(names.values())
        for n in range(1, top + 1):
            covers = cover.get(n, {})
            # max coverage; ties go to the category listed first
            cat = max(covers, key=lambda c: (covers[c], -order[c])) if covers else ""
            name = names.get(n, f"label {n}")
            m = _SCALED.match(name)  # "striped@12px" belongs to "striped" (exported probe sets)
            parent = m.group(1) if m and m.group(1) in known else None
            labels.append(Concept(n, name, cat, parent))
        return labels

    # ----------------------------------------------------------------------------- protocol
    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return (
            f"BrodenProbe({str(self.root)!r}, {len(self)} images, size={self.size}, "
            f"mask_size={self.mask_size}, categories={self.categories}, "
            f"labels={len(self.labels) - 1})"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-able description (for records and cache keys)."""
        return {
            "kind": "broden",
            "root": str(self.root),
            "n_images": len(self),
            "size": self.size,
            "mask_size": self.mask_size,
            "categories": list(self.categories),
            "first": self._rows[0]["image"],
            "last": self._rows[-1]["image"],
            "tables_sha256": self._content,
        }

    def image_path(self, index: int) -> Path:
        """Path of image ``index`` (resolved; ``ValueError`` when it leads outside
        ``images/``)."""
        return self._inside(self._rows[limits.as_int(index, "index")]["image"])

    def _batch(self, idx: list[int], masks: bool, device: str | torch.device | None) -> ProbeBatch:
        """Read the images ``idx`` and (optionally) their masks and image-level labels."""
        n_labels = len(self.labels)
        images = []
        layers: list[list[np.ndarray]] = []
        scalars = np.zeros((len(idx), n_labels), dtype=bool)
        present = np.zeros((len(idx), len(self.categories)), dtype=bool)
        for j, i in enumerate(idx):
            row = self._rows[i]
            img = Image.open(self.image_path(i)).convert("RGB")
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.uint8))
            maps: list[np.ndarray] = []
            for c, cat in enumerate(self.categories):
                items = row["cats"][cat]
                present[j, c] = bool(items)
                for item in items:
                    if isinstance(item, int):
                        if 0 < item < n_labels:
                            scalars[j, item] = True
                    elif masks:
                        maps.append(self._mask(item))
            layers.append(maps)
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)
        mask_t = None
        if masks:
            k = max([1, *(len(m) for m in layers)])
            arr = np.zeros((len(idx), k, self.mask_size, self.mask_size), dtype=np.int64)
            for j, maps in enumerate(layers):
                for li, m in enumerate(maps):
                    arr[j, li] = m
            arr[arr >= n_labels] = 0  # labels unknown to label.csv are ignored
            mask_t = torch.from_numpy(arr)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return ProbeBatch(
            indices=torch.tensor(idx, dtype=torch.int64, device=dev),
            images=pixels.to(dev),
            masks=None if mask_t is None else mask_t.to(dev),
            mask_categories=[],
            scalars=torch.from_numpy(scalars).to(dev) if scalars.any() else None,
            present=torch.from_numpy(present).to(dev),
        )

    def _mask(self, name: str) -> np.ndarray:
        path = self._inside(name)
        if not path.is_file():
            raise FileNotFoundError(f"mask {path} listed in index.csv is missing")
        img = Image.open(path).convert("RGB")
        if img.size != (self.mask_size, self.mask_size):
            img = img.resize((self.mask_size, self.mask_size), Image.NEAREST)
        arr = np.asarray(img, dtype=np.int64)
        return arr[:, :, 0] + 256 * arr[:, :, 1]


def broden_probe(root: str | Path, **kwargs: Any) -> BrodenProbe:
    """Open a Broden-format folder as a probe set (see :class:`BrodenProbe`)."""
    return BrodenProbe(root, **kwargs)


def export_broden(
    probe: Any,
    folder: str | Path,
    indices: Iterable[int] | None = None,
    *,
    batch_size: int = 32,
    split: str = "train",
) -> Path:
    """Write (part of) a probe set in the Broden format, readable by :class:`BrodenProbe` and by
    the original NetDissect code. Images are PNG (lossless), masks PNG with ``R + 256 * G``.

    Each mask layer of the probe set becomes one PNG listed in its category's column.

    Examples
    --------
    >>> from cnnvis_widgets.data.concepts import probe_set     # doctest: +SKIP
    >>> export_broden(probe_set(100, size=224), "/tmp/probe")   # doctest: +SKIP
    """
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    idx = list(range(len(probe))) if indices is None else [int(i) for i in indices]
    cats = list(probe.categories)
    n_labels = len(probe.labels)
    freq = np.zeros((n_labels, len(cats)), dtype=np.int64)  # images with the label, per category
    cover = np.zeros((n_labels, len(cats)), dtype=np.float64)  # pixels / image area
    cat_freq = np.zeros(len(cats), dtype=np.int64)
    index_rows = []
    size, msize = probe.size, probe.mask_size
    for lo in range(0, len(idx), batch_size):
        batch = probe.batch(idx[lo : lo + batch_size], masks=True, device="cpu")
        imgs = (batch.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        for j in range(len(batch)):
            i = int(batch.indices[j])
            name = f"probe_{i:06d}"
            Image.fromarray(imgs[j].numpy(), mode="RGB").save(root / "images" / f"{name}.png")
            row: dict[str, Any] = {
                "image": f"{name}.png",
                "split": split,
                "ih": size,
                "iw": size,
                "sh": msize,
                "sw": msize,
            }
            entries: dict[str, list[str]] = {c: [] for c in cats}
            seen = np.zeros(len(cats), dtype=bool)
            if batch.masks is not None:
                for k in range(batch.masks.shape[1]):
                    m = batch.masks[j, k].numpy()
                    cat_index = probe.mask_categories[k] if k < len(probe.mask_categories) else None
                    if cat_index is None:
                        continue
                    fname = f"{name}_{k}.png"
                    encode_mask(m).save(root / "images" / fname)
                    entries[cats[cat_index]].append(fname)
                    seen[cat_index] = True
                    counts = np.bincount(m.reshape(-1), minlength=n_labels)
                    counts[0] = 0
                    present_labels = np.nonzero(counts)[0]
                    freq[present_labels, cat_index] += 1
                    cover[:, cat_index] += counts / float(msize * msize)
            if batch.scalars is not None:
                for lab in np.nonzero(batch.scalars[j].numpy())[0]:
                    c = cats.index(probe.labels[int(lab)].category)
                    entries[cats[c]].append(str(int(lab)))
                    seen[c] = True
                    freq[lab, c] += 1
                    cover[lab, c] += 1.0
            cat_freq += seen | batch.present[j].numpy().astype(bool)
            for c in cats:
                row[c] = ";".join(entries[c])
            index_rows.append(row)
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*_META, *cats])
        w.writeheader()
        w.writerows(index_rows)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for c in probe.labels[1:]:
            in_cats = [
                f"{cats[k]}({int(freq[c.index, k])})"
                for k in range(len(cats))
                if freq[c.index, k] > 0 or cats[k] == c.category
            ]
            w.writerow(
                [
                    c.index,
                    c.name,
                    ";".join(in_cats),
                    int(freq[c.index].sum()),
                    f"{cover[c.index].sum():.6f}",
                    "",
                ]
            )
    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "first", "last", "count", "frequency"])
        for k, cat in enumerate(cats):
            numbers = [c.index for c in probe.labels if c.category == cat]
            w.writerow(
                [cat, min(numbers, default=0), max(numbers, default=0), len(numbers), cat_freq[k]]
            )
    for k, cat in enumerate(cats):
        with open(root / f"c_{cat}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            w.writerow([0, 0, "-", 0, "0.0"])
            members = [c for c in probe.labels if c.category == cat]
            for code, c in enumerate(members, start=1):
                w.writerow(
                    [code, c.index, c.name, int(freq[c.index, k]), f"{cover[c.index, k]:.6f}"]
                )
    return root
