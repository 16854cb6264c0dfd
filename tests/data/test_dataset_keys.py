"""Folder datasets are keyed on the content of their files, not on time stamps and sizes."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from cnnvis_widgets.data.datasets import file_digest, image_folder


def _write(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path, format="BMP")


def test_swapped_files_change_the_key(tmp_path) -> None:
    a, b = tmp_path / "a.bmp", tmp_path / "b.bmp"
    _write(a, 0)
    _write(b, 1)
    assert a.stat().st_size == b.stat().st_size
    key = image_folder(tmp_path).key
    assert image_folder(tmp_path).key == key  # unchanged folder: same key
    stamps = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)  # the two pictures swapped, sizes and time stamps kept
    b.write_bytes(da)
    for p, ns in zip((a, b), stamps):
        os.utime(p, ns=ns)
    swapped = image_folder(tmp_path).key
    assert swapped != key
    _write(a, 2)  # one file edited
    assert image_folder(tmp_path).key not in (key, swapped)


def test_file_digest_is_the_content(tmp_path) -> None:
    p, q = tmp_path / "p.bin", tmp_path / "q.bin"
    p.write_bytes(b"x" * 3_000_000)
    q.write_bytes(b"x" * 3_000_000)
    assert file_digest(p) == file_digest(q) == file_digest(p)
    q.write_bytes(b"x" * 2_999_999 + b"y")
    assert file_digest(q) != file_digest(p)
