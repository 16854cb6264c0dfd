"""The offline datasets: deterministic augmentations of the sample photos, folders of images."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets.data import sample_images
from cnnvis_widgets.data.datasets import (
    ImageDataset,
    as_dataset,
    augmented_samples,
    image_folder,
    sample_photos,
)


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in this test")


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_augmented_samples_are_deterministic_offline_and_varied(monkeypatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    photos = sorted(sample_images())
    ds = augmented_samples(n=40, size=64, seed=0)
    assert len(ds) == 40 and isinstance(ds, ImageDataset)
    items = list(ds)
    names = [n for n, _ in items]
    assert len(set(names)) == 40
    assert names[: len(photos)] == photos  # the photos themselves first
    assert all(img.mode == "RGB" and img.size == (64, 64) for _, img in items)
    # random access gives what iteration gave, and a second dataset gives the same pixels
    again = augmented_samples(n=40, size=64, seed=0)
    for i in (0, 13, 39):
        assert again[i][0] == names[i]
        assert np.array_equal(arr(again[i][1]), arr(items[i][1]))
    assert np.array_equal(arr(ds[-1][1]), arr(items[39][1]))
    # augmentations differ from their photo and from each other; another seed differs
    p = len(photos)
    aug = items[p][1]
    assert names[p].startswith(f"{photos[0]}~aug")
    assert np.abs(arr(aug) - arr(items[0][1])).mean() > 5
    assert np.abs(arr(items[p][1]) - arr(items[2 * p][1])).mean() > 5  # same photo, other aug
    other = augmented_samples(n=40, size=64, seed=1)
    assert np.abs(arr(other[p][1]) - arr(aug)).mean() > 1
    assert other.key != ds.key and again.key == ds.key
    # "hundreds of candidates": a large dataset is cheap to make (items are lazy)
    big = augmented_samples(n=500)
    assert len(big) == 500 and big[499][1].size == (224, 224)


def test_colour_jitter_and_flips_happen() -> None:
    ds = augmented_samples(n=200, size=32, seed=0)
    p = len(sample_images())
    means = np.array([arr(ds[i][1]).reshape(-1, 3).mean(0) for i in range(p, 200, p)])
    assert means.std(axis=0).max() > 2  # brightness/colour of one photo's augmentations vary


def test_dataset_errors() -> None:
    ds = augmented_samples(n=5, size=16)
    with pytest.raises(IndexError, match="out of range: the dataset has 5 images"):
        ds[5]
    with pytest.raises(ValueError, match="n must be at least 1"):
        augmented_samples(n=0)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        augmented_samples(size=4)
    assert [n for n, _ in ds[1:3]] == ds.names[1:3]


def test_image_folder_reads_sorted_images_only(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.JPG", "sub/c.bmp"):
        fmt = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP"}[name.rsplit(".", 1)[1].lower()]
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            tmp_path / name, format=fmt
        )
    Image.fromarray(np.zeros((9, 9), np.uint8), mode="L").save(tmp_path / "grey.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = image_folder(tmp_path)
    assert ds.names == ["a.JPG", "b.png", "grey.png", "sub/c.bmp"]
    assert all(img.mode == "RGB" for _, img in ds)
    assert ds[1][1].size == (30, 20)
    assert image_folder(tmp_path, size=16)[0][1].size == (16, 16)
    assert image_folder(tmp_path, recursive=False).names == ["a.JPG", "b.png", "grey.png"]
    assert as_dataset(str(tmp_path)).names == ds.names
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image file .*\.png"):
        image_folder(tmp_path / "empty")


def test_as_dataset_and_sample_photos() -> None:
    photos = sample_photos(size=48)
    assert photos.names == sorted(sample_images())
    assert photos[0][1].size == (48, 48)
    assert as_dataset("photos").names == photos.names
    assert len(as_dataset("augmented")) == 256
    assert as_dataset(photos) is photos
    assert as_dataset([Image.new("RGB", (4, 4))]) is None


def test_folder_skips_files_that_are_not_images_and_decodes_safely(tmp_path) -> None:
    import warnings

    import numpy as np
    from PIL import Image

    from cnnvis_widgets.data.datasets import image_folder

    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = image_folder(tmp_path)
    assert any("broken.jpg" in str(w.message) for w in caught)
    assert len(ds) == 2
    imgs = dict(ds)
    assert imgs["clear.png"].getpixel((0, 0)) == (255, 255, 255)  # on white, not black
    assert 150 < imgs["deep.png"].getpixel((0, 0))[0] < 160  # 16-bit scaled, not clipped


def test_dataset_sizes_are_bounded_and_numpy_integers_accepted(tmp_path) -> None:
    import numpy as np

    from cnnvis_widgets.data.datasets import augmented_samples, image_folder, sample_photos

    with pytest.raises(ValueError, match="MAX_IMAGE_SIDE"):
        augmented_samples(n=4, size=100_000)
    with pytest.raises(ValueError, match="MAX_DATASET_IMAGES"):
        augmented_samples(n=10**12, size=32)
    with pytest.raises(ValueError, match="MAX_IMAGE_SIDE"):
        sample_photos(size=100_000)
    with pytest.raises(ValueError, match="MAX_IMAGE_SIDE"):
        image_folder(tmp_path, size=100_000)
    with pytest.raises(TypeError, match="must be an integer"):
        augmented_samples(n=4.5, size=32)
    ds = augmented_samples(n=np.int64(3), size=np.int32(32), seed=np.int64(1))
    assert len(ds) == 3 and ds[2][1].size == (32, 32)
