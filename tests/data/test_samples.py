"""Bundled sample photos: read from installed packages only, RGB, never downloaded."""

from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest
from PIL import Image

from cnnvis_widgets.data import samples
from cnnvis_widgets.data.samples import sample_image, sample_images


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in this test")


@pytest.fixture
def offline(monkeypatch):
    """Sockets cannot connect, and the caches start empty so every file is really read."""
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    samples._available.cache_clear()
    samples._load.cache_clear()
    yield
    samples._available.cache_clear()
    samples._load.cache_clear()


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def test_all_samples_load_offline_as_rgb(offline) -> None:
    images = sample_images()
    expected = {"cat", "astronaut", "coffee", "rocket", "motorcycle", "camera", "coins"}
    if _installed("sklearn"):
        expected |= {"china", "flower"}
    if _installed("matplotlib"):
        expected |= {"grace_hopper"}
    assert set(images) == expected
    for name, img in images.items():
        assert isinstance(img, Image.Image), name
        assert img.mode == "RGB", name
        assert min(img.size) >= 128 and max(img.size) <= 2048, (name, img.size)
        assert np.asarray(img).std() > 10, name  # a real photo, not a blank
    assert images["cat"].size == (451, 300)


def test_grayscale_source_becomes_rgb(offline) -> None:
    arr = np.asarray(sample_image("camera"))
    assert arr.shape == (512, 512, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_files_come_from_package_directories(offline) -> None:
    for name, path in samples._available().items():
        package = samples.SAMPLES[name][0]
        root = samples._package_dir(package)
        assert root is not None and path.is_relative_to(root), name


def test_unknown_name_lists_names() -> None:
    with pytest.raises(KeyError, match="cat") as info:
        sample_image("dog")
    assert "astronaut" in str(info.value)


def test_returns_copies() -> None:
    first = sample_image("cat")
    first.paste((0, 0, 0), (0, 0, first.width, first.height))
    assert np.asarray(sample_image("cat")).max() > 0
    images = sample_images()
    images.pop("cat")
    assert "cat" in sample_images()


def test_missing_optional_package_is_skipped(offline, monkeypatch) -> None:
    real = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name in ("sklearn", "matplotlib") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    images = sample_images()
    assert "cat" in images
    assert not {"china", "flower", "grace_hopper"} & set(images)
    with pytest.raises(KeyError, match="not installed"):
        sample_image("china")
